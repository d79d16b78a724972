"""Docstring fragments shared by the feature classes, written once.

A class docstring names a fragment as ``%(name)s`` and the :func:`fill_doc`
decorator puts it in, as imbalanced-learn's ``Substitution`` does.
"""

__all__ = ["fill_doc"]

_FRAGMENTS = {
    # Attributes of the steps that append columns to id-carrying X.
    "fitted_input": """n_features_in_ : int
        Number of columns of ``X`` in ``fit``, the three id columns included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.""",
    # Parameters and attributes of the model-backed transformers.
    "runtime_parameters": """device : str, default="auto"
        ``"auto"`` (CUDA when available, then MPS, then the CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Compute dtype; ``"auto"`` is float32 on CPU and bfloat16 (or float16) on a
        GPU. Outputs are float32.
    cache : bool, path-like or FeatureCache, default=True
        ``True`` uses the default cache folder (see :func:`default_cache_dir`);
        ``False`` computes every time.""",
    "runtime_attributes": """device_ : str
        Where the model runs, such as ``"cuda"`` or ``"cpu"``.
    dtype_ : torch.dtype
        The compute dtype.
    cache_ : FeatureCache or None
        The cache used.
    identity_ : dict
        The cache identity of this model and these settings.""",
}


def fill_doc(cls):
    """Class decorator: put the shared fragments into ``cls``'s docstring."""
    if cls.__doc__:  # None under python -OO
        cls.__doc__ = cls.__doc__ % _FRAGMENTS
    return cls
