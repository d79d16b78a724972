"""Model runtime: where a model comes from, its identity, loading, batches, progress.

torch, transformers and huggingface_hub are imported inside the functions, so that
``import pllm_sk.features`` stays fast.
"""

import functools
import hashlib
import importlib
import json
import os
import sys
import threading
from contextlib import contextmanager
from numbers import Integral
from pathlib import Path

import numpy as np

from ._cache import FeatureCache, _atomic_write, default_cache_dir

__all__ = [
    "file_digest",
    "from_pretrained",
    "load_model",
    "loading_bars",
    "sha256_file",
    "tokenizer_digest",
    "length_batches",
    "ModelSource",
    "check_texts",
    "dataframe_columns",
    "declared_max_length",
    "pad_right",
    "progress",
    "resolve_cache",
]

# Files whose content changes a model's outputs, hashed into a local folder's identity.
_CONFIG_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# The record of file digests in the cache folder, so that a weights file is read
# whole once per version of it, not once per process (see file_digest).
_DIGEST_RECORD = "file-digests.json"
# (resolved path, size, mtime, ctime, inode) -> SHA-256, for this process.
_FILE_DIGESTS = {}
# The transformers module that converts GGUF tensors under a plain tqdm bar.
_GGUF_LOADER = "transformers.modeling_gguf_pytorch_utils"


class ModelSource:
    """Where a model comes from: a hub name, a local folder or loaded objects.

    Parameters
    ----------
    model : str, path-like or transformers model
    tokenizer : str, path-like, tokenizer or None
        ``None`` loads the tokenizer from the model's source; required with a
        loaded model.
    revision : str or None
        Hub revision of a named model.
    parameter : str
        Name of the estimator parameter, for error messages.
    verbose : int
        ``0`` silences the progress bars of transformers and the hub while
        loading (see :func:`loading_bars`).
    """

    def __init__(self, model, tokenizer, revision, parameter="model", *, verbose=1):
        self.model, self.tokenizer, self.revision = model, tokenizer, revision
        self.verbose = verbose
        if isinstance(model, (str, os.PathLike)):
            path = Path(model).expanduser()
            if path.is_dir():
                self.kind, self.reference = "path", str(path.resolve())
            elif isinstance(model, str) and model.count("/") == 1 and not path.exists():
                self.kind, self.reference = "hub", model
            else:
                raise ValueError(
                    f"{parameter}={model!r} is neither a local model folder nor a hub "
                    "name of the form 'owner/name'."
                )
        elif hasattr(model, "config") and callable(model):
            if tokenizer is None:
                raise ValueError(
                    f"A loaded {parameter} needs its tokenizer: pass tokenizer=..."
                )
            self.kind, self.reference = "object", None
        else:
            raise TypeError(
                f"{parameter} must be a hub name, a local folder or a loaded transformers "
                f"model; got {type(model).__name__}."
            )

    @property
    def label(self):
        """A readable name for the model: the hub name or the folder's last two parts."""
        if self.kind == "hub":
            return self.reference
        if self.kind == "path":
            return "/".join(Path(self.reference).parts[-2:])
        return str(getattr(self.model.config, "_name_or_path", "") or "loaded-model")

    def fingerprint(self):
        """What identifies the weights and tokenizer, for the cache identity."""
        if self.kind == "hub":
            fingerprint = {"hub": self.reference, "revision": self.revision}
        elif self.kind == "path":
            self._files = _folder_digest(Path(self.reference))
            fingerprint = {"files": self._files}
        else:
            fingerprint = {"weights": _parameter_digest(self.model)}
        if self.tokenizer is not None:
            fingerprint["tokenizer"] = tokenizer_digest(self.tokenizer)
        return fingerprint

    def read_json(self, filename):
        """A JSON file of the model's folder or hub repo, or None if it has none."""
        if self.kind == "object":
            return None
        if self.kind == "path":
            path = Path(self.reference) / filename
            return json.loads(path.read_text("utf-8")) if path.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        try:
            with loading_bars(self.verbose):
                path = hf_hub_download(self.reference, filename, revision=self.revision)
        except RemoteEntryNotFoundError:
            return None
        except OSError as exc:
            raise OSError(
                f"Could not read {filename!r} of the hub model {self.reference!r} ({exc}). "
                "Offline, pass a local folder or a loaded model instead."
            ) from None
        return json.loads(Path(path).read_text("utf-8"))

    def load_config(self):
        if self.kind == "object":
            return self.model.config
        from transformers import AutoConfig

        with loading_bars(self.verbose):
            return from_pretrained(AutoConfig, self.reference, self.revision)

    def load_tokenizer(self):
        if self.tokenizer is not None and not isinstance(
            self.tokenizer, (str, os.PathLike)
        ):
            return self.tokenizer
        from transformers import AutoTokenizer

        reference = self.reference if self.tokenizer is None else str(self.tokenizer)
        with loading_bars(self.verbose):
            return from_pretrained(AutoTokenizer, reference, self.revision)

    def load_model(self, auto_class, device, dtype):
        """The model on ``device`` in ``dtype``, in eval mode (loaded ones moved).

        A local folder whose files changed since :meth:`fingerprint` (the cache
        identity) raises a RuntimeError: its outputs would be cached under the
        identity of the files it had.
        """
        if self.kind == "object":
            return self.model.to(device=device, dtype=dtype).eval()
        version = None
        if self.kind == "path":
            version = _folder_digest(Path(self.reference))
            if getattr(self, "_files", version) != version:
                raise RuntimeError(
                    f"The files of the model folder {self.reference} changed after "
                    "the estimator was fitted; fit it again to use them (its cache "
                    "identity names the files it had)."
                )
        with loading_bars(self.verbose):
            return load_model(
                auto_class, self.reference, self.revision, str(device), dtype, version
            )


@contextmanager
def loading_bars(verbose):
    """Within the block, transformers' and the hub's progress bars only if ``verbose``.

    ``verbose=0`` turns both off (transformers' "Loading weights" bar and the plain
    tqdm bar of its GGUF conversion, the hub's download bars) and restores each
    one's previous state afterwards. The switch is process-wide: a thread loading
    at the same time is silenced too.
    """
    if verbose:
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as transformers_logging

    transformers_was_on = transformers_logging.is_progress_bar_enabled()
    hub_was_off = are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # the hub's too
    try:
        with _quiet_gguf_conversion():
            yield
    finally:
        if transformers_was_on:
            transformers_logging.enable_progress_bar()  # turns the hub's on
        if hub_was_off:
            disable_progress_bars()
        elif are_progress_bars_disabled():
            enable_progress_bars()


def from_pretrained(auto_class, reference, revision):
    try:
        return auto_class.from_pretrained(reference, revision=revision)
    except OSError as exc:
        raise OSError(
            f"Could not load {auto_class.__name__} from {reference!r}: {exc}\nOffline, "
            "pass a local model folder or a loaded model and tokenizer."
        ) from None


# The state of the patched GGUF bar: blocks open (nested or in threads), original.
_GGUF_PATCH = {"depth": 0, "tqdm": None}
_GGUF_LOCK = threading.Lock()


@contextmanager
def _quiet_gguf_conversion():
    """Within the block, transformers' GGUF conversion bar is disabled.

    transformers converts GGUF tensors under a plain ``tqdm`` that its progress
    switch does not reach: its module's ``tqdm`` name is bound to a disabled bar,
    and the original is put back when the last open block (nested, or in another
    thread) ends. The module imports torch, so it is patched only once torch is
    imported (loading a model class imports it, before any GGUF model loads).
    """
    module = sys.modules.get(_GGUF_LOADER)
    if module is None and "torch" in sys.modules:
        try:
            module = importlib.import_module(_GGUF_LOADER)
        except ImportError:  # a transformers without GGUF support
            module = None
    if module is None or not hasattr(module, "tqdm"):
        yield
        return
    with _GGUF_LOCK:
        if _GGUF_PATCH["depth"] == 0:
            _GGUF_PATCH["tqdm"] = module.tqdm
            module.tqdm = functools.partial(module.tqdm, disable=True)
        _GGUF_PATCH["depth"] += 1
    try:
        yield
    finally:
        with _GGUF_LOCK:
            _GGUF_PATCH["depth"] -= 1
            if _GGUF_PATCH["depth"] == 0:
                module.tqdm, _GGUF_PATCH["tqdm"] = _GGUF_PATCH["tqdm"], None


@functools.lru_cache(maxsize=2)
def load_model(auto_class, reference, revision, device, dtype, version=None):
    """``auto_class.from_pretrained(reference)`` on ``device`` in ``dtype``, in eval mode.

    Kept for the process, so that every clone of an estimator in a CV loop reuses
    it; keyed by all the arguments, so that a new ``version`` (the digest of a local
    folder's or file's content) loads the edited files again.
    """
    model = from_pretrained(auto_class, reference, revision)
    return model.to(device=device, dtype=dtype).eval()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path):
    """The SHA-256 of a file's content, read whole once per version of the file.

    A version is the file's resolved path, size, modification and change times
    and inode: a file written again, even with the same size, is read again.
    Digests are kept for the process and in the record ``file-digests.json`` of
    the cache folder (:func:`~pllm_sk.runtime.default_cache_dir`), so that other
    processes do not read gigabytes of weights again; a record that cannot be read
    or written is ignored.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    digest : str
        The hexadecimal SHA-256 of the file's bytes.
    """
    path = Path(path).resolve()
    version = _file_version(path)
    key = (str(path), *version)
    if key in _FILE_DIGESTS:
        return _FILE_DIGESTS[key]
    record = _read_digest_record()
    entry = record.get(str(path))
    if isinstance(entry, list) and entry[:-1] == list(version):
        digest = entry[-1]
    else:
        digest = sha256_file(path)
        if _file_version(path) != version:  # written while read: hashed again next time
            return digest
        record[str(path)] = [*version, digest]
        _write_digest_record(record)
    _FILE_DIGESTS[key] = digest
    return digest


def _file_version(path):
    stat = path.stat()
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


def _read_digest_record():
    try:
        record = json.loads((default_cache_dir() / _DIGEST_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_digest_record(record):
    """Write the record, keeping the entries of files that still have that version."""
    kept = {}
    for name, entry in record.items():
        try:
            current = list(_file_version(Path(name)))
        except OSError:  # removed since
            continue
        if isinstance(entry, list) and entry[:-1] == current:
            kept[name] = entry
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(folder / _DIGEST_RECORD, [json.dumps(kept).encode("utf-8")])
    except OSError:  # a read-only cache folder: kept for this process only
        pass


def _folder_digest(folder):
    """Digest of a model folder's content: config, tokenizer and weights files.

    Weights files count by their whole content (:func:`file_digest`) and their path
    inside the folder, so the same files in another folder or on another machine
    give the same digest.
    """
    digest = hashlib.sha256()
    for name in _CONFIG_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + sha256_file(path).encode())
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
            name = path.relative_to(folder).as_posix()
            digest.update(f"{name}\0{file_digest(path)}\0".encode())
    return digest.hexdigest()


def _parameter_digest(model):
    """Config and a sample of every parameter tensor of a loaded model."""
    import torch

    digest = hashlib.sha256(model.config.to_json_string().encode())
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            sample = tensor.detach().reshape(-1)[:4096].to("cpu", torch.float32)
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def tokenizer_digest(tokenizer):
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer).expanduser()
        return _folder_digest(path) if path.is_dir() else str(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Truncation and padding settings change with every call; they are not
        # part of what the tokenizer is.
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        content = json.dumps(state, sort_keys=True)
    else:
        content = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        [
            type(tokenizer).__name__,
            getattr(tokenizer, "chat_template", None),
            str(getattr(tokenizer, "special_tokens_map", {})),
        ]
    )
    return hashlib.sha256((content + extra).encode()).hexdigest()


def resolve_cache(cache):
    """The ``cache`` parameter as a :class:`FeatureCache`, or None for no cache.

    ``True`` is the default folder, ``False`` or None no cache, a path a folder, and
    a FeatureCache is used as it is.
    """
    if cache is True:
        return FeatureCache()
    if cache is None or cache is False:
        return None
    if isinstance(cache, FeatureCache):
        return cache
    return FeatureCache(cache)


def check_texts(texts, name="texts"):
    """A list of str from a 1-d sequence (or one-column 2-d), or a TypeError."""
    if isinstance(texts, str) or not hasattr(texts, "__len__"):
        raise TypeError(
            f"{name} must be a sequence of strings, such as a list; got "
            f"{type(texts).__name__}."
        )
    values = np.asarray(texts, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-d; got shape {values.shape}.")
    for position, text in enumerate(values):
        if not isinstance(text, str):
            raise TypeError(
                f"{name} must hold strings; got {type(text).__name__} at position "
                f"{position}."
            )
    return values.tolist()


def dataframe_columns(X, columns, *, needed_by, kind="column(s)"):
    """The named ``columns`` of DataFrame ``X`` as arrays, or a ValueError.

    The error names the missing columns, what needs them (``needed_by``) and
    all of ``columns``; ``kind`` says what they are ("id column(s)").
    """
    missing = [c for c in columns if c not in X.columns]
    if missing:
        named = " and ".join(repr(c) for c in columns)
        raise ValueError(
            f"X is missing the {kind} {missing}; {needed_by} needs the columns {named}."
        )
    return [X[c].to_numpy() for c in columns]


def declared_max_length(ceiling, *objects):
    """The smallest input length that ``objects`` declare, and at most ``ceiling``.

    ``objects`` are model configurations and tokenizers; their
    ``max_position_embeddings``, ``n_positions`` and ``model_max_length`` count
    when they are positive integers.
    """
    limits = [ceiling]
    for source in objects:
        for name in ("max_position_embeddings", "n_positions", "model_max_length"):
            value = getattr(source, name, None)
            if isinstance(value, Integral) and value > 0:
                limits.append(int(value))
    return min(limits)


def length_batches(lengths, batch_size):
    """Batches of positions of similar lengths, longest first (peak memory early)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [
        order[start : start + batch_size] for start in range(0, order.size, batch_size)
    ]


def pad_right(sequences, pad_id, device, token_type_ids=None):
    """Token id lists -> right-padded model inputs (a dict of tensors).

    Right padding keeps every real token at the position it has at batch size 1, so
    neither absolute position embeddings nor causal attention see the padding.
    ``token_type_ids`` (segment ids of sentence pairs) are padded with 0.
    """
    import torch

    width = max(len(sequence) for sequence in sequences)
    shape = (len(sequences), width)
    arrays = {
        "input_ids": np.full(shape, pad_id, dtype=np.int64),
        "attention_mask": np.zeros(shape, dtype=np.int64),
    }
    if token_type_ids is not None:
        arrays["token_type_ids"] = np.zeros(shape, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        arrays["input_ids"][row, : len(sequence)] = sequence
        arrays["attention_mask"][row, : len(sequence)] = 1
        if token_type_ids is not None:
            arrays["token_type_ids"][row, : len(sequence)] = token_type_ids[row]
    return {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}


def progress(iterable, *, total, verbose, desc):
    """A tqdm progress bar unless ``verbose`` is 0."""
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)
