"""Torch devices and dtypes: what ``device="auto"`` and ``dtype="auto"`` mean, once.

Every torch-backed estimator and feature step resolves its ``device`` and ``dtype``
parameters here, in ``fit`` or at first use, and records the result as a string in
``device_``. torch is imported inside the functions, so importing this module is
cheap.
"""

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device):
    """``"auto"`` -> CUDA when available, else MPS, else CPU; others are checked.

    Returns
    -------
    device : torch.device
    """
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or "
            "'cuda:N'."
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} asks for a GPU, but CUDA is not available here; use "
                "device='auto' (GPU when present, else CPU) or device='cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device={device!r}: MPS is not available here.")
    elif resolved.type != "cpu":
        raise ValueError(
            f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'."
        )
    return resolved


def resolve_dtype(dtype, device):
    """``"auto"``: bfloat16 on a GPU that has it, else float16 on GPU, float32 elsewhere.

    Returns
    -------
    dtype : torch.dtype
    """
    import torch

    device = torch.device(device)
    names = {
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in names.values():
        return dtype
    if isinstance(dtype, str) and dtype in names:
        return names[dtype]
    raise ValueError(f"dtype must be 'auto' or one of {sorted(names)}; got {dtype!r}.")
