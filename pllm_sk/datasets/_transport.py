"""A corpus on disk: the saved copy that :meth:`Corpus.save` writes and workers read.

A copy is a folder of three files: ``rewards.npy``, ``texts.npz`` (each text array
as its UTF-8 bytes and the length of each text) and ``corpus.json`` (names, shapes
and the content fingerprint), each written to a temporary name and renamed into
place, ``corpus.json`` last. Reading a copy hashes what was read and compares it
with the fingerprint, so a damaged copy is an error, never another corpus.
"""

import hashlib
import json
import os
import struct
import threading
import uuid
import zipfile
from collections import Counter, OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

__all__ = [
    "MMAP_MODES",
    "TEXT_ARRAYS",
    "DamagedCopyError",
    "check_mmap_mode",
    "content_digest",
    "copy_stats",
    "decode_texts",
    "encode_texts",
    "read_copy",
    "write_copy",
]

META = "corpus.json"
_FORMAT = 1
# The text arrays of a corpus, in the order they enter the fingerprint.
TEXT_ARRAYS = ("prompts", "responses", "response_models", "split", "subset")
_FILES = ("rewards.npy", "texts.npz", META)
# Values of ``Corpus.load(mmap_mode=...)``: those of numpy.load that open an existing
# file ("w+" would create an empty one in place of the saved rewards).
MMAP_MODES = (None, "r", "r+", "c")
# What reading a missing, truncated or rewritten file raises: numpy's header and
# size checks (ValueError, EOFError), zipfile's, json's (a ValueError), the OS's.
_UNREADABLE = (
    OSError, EOFError, ValueError, KeyError, TypeError, struct.error, zipfile.BadZipFile
)
_WRITE_AGAIN = (
    "Write it again from the corpus in memory (corpus.save(folder), or "
    "corpus.share() in the process that holds the data), or delete the folder."
)
# Corpora that this process shared or read from a copy, by fingerprint, most
# recent last: a reference to one of them resolves without reading the disk.
_REGISTRY_SIZE = 8
registry = OrderedDict()
# fingerprint -> times this process built a corpus from its data (pickled or read).
loads = Counter()
# Reentrant: a resolution holds it while it reads and registers the corpus.
lock = threading.RLock()


class DamagedCopyError(ValueError):
    """A saved copy of a corpus with an unreadable file or another content.

    Raised when a file of the copy is missing, truncated or not in its format, or
    when what the files hold does not hash to the fingerprint written with them.
    """


def encode_texts(values):
    """The texts of an array as (length of each in characters, all of them in UTF-8)."""
    texts = [str(text) for text in values.ravel().tolist()]
    lengths = np.fromiter(map(len, texts), dtype="<i8", count=len(texts))
    return lengths, "".join(texts).encode("utf-8", "surrogatepass")


def decode_texts(lengths, blob, shape):
    """The inverse of :func:`encode_texts`: an object array of ``shape``."""
    joined = bytes(blob).decode("utf-8", "surrogatepass")
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    texts = np.empty(len(ends), dtype=object)
    texts[:] = [joined[start:end] for start, end in zip(starts, ends)]
    return texts.reshape(shape)


def content_digest(name, reward_models, rewards, encoded):
    """BLAKE2b-128, as hex, of a corpus given its encoded text arrays.

    ``encoded`` maps each name of :data:`TEXT_ARRAYS` to its ``(lengths, utf8)``.
    """
    digest = hashlib.blake2b(digest_size=16)
    header = [name, list(reward_models), list(rewards.shape)]
    digest.update(json.dumps(header).encode("utf-8"))
    digest.update(np.ascontiguousarray(rewards, dtype="<f4").tobytes())
    for text_array in TEXT_ARRAYS:
        lengths, blob = encoded[text_array]
        digest.update(np.ascontiguousarray(lengths, dtype="<i8").tobytes())
        digest.update(bytes(blob))
    return digest.hexdigest()


def write_copy(folder, fingerprint, name, reward_models, rewards, texts):
    """Write a copy of a corpus into ``folder`` (created; files replaced whole).

    ``texts`` maps each name of :data:`TEXT_ARRAYS` to its object array.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays, shapes = {}, {}
    for text_array in TEXT_ARRAYS:
        lengths, blob = encode_texts(texts[text_array])
        arrays[f"{text_array}_lengths"] = lengths
        arrays[f"{text_array}_utf8"] = np.frombuffer(blob, dtype=np.uint8)
        shapes[text_array] = list(texts[text_array].shape)
    meta = dict(
        format=_FORMAT,
        fingerprint=fingerprint,
        name=name,
        reward_models=list(reward_models),
        shapes=shapes,
    )
    _write_whole(folder / "rewards.npy", lambda h: np.save(h, np.asarray(rewards)))
    _write_whole(folder / "texts.npz", lambda h: np.savez(h, **arrays))
    # Written last: a reader that finds it finds the other files of this write.
    _write_whole(folder / META, lambda h: h.write(json.dumps(meta).encode("utf-8")))


def _write_whole(path, write):
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def check_mmap_mode(mmap_mode):
    """Raise ``ValueError`` unless ``mmap_mode`` is one that reads an existing copy."""
    if mmap_mode is None or (isinstance(mmap_mode, str) and mmap_mode in MMAP_MODES):
        return
    raise ValueError(
        f"The 'mmap_mode' parameter of Corpus.load must be None, 'r', 'r+' or 'c'; "
        f"got {mmap_mode!r}. Use 'r' to map the saved rewards read-only (a mode that "
        "creates the file, such as 'w+', would erase them)."
    )


def read_copy(folder, mmap_mode=None):
    """The checked content of the copy in ``folder``.

    Returns
    -------
    meta : dict
        ``fingerprint``, ``name``, ``reward_models`` and ``shapes``.
    rewards : ndarray of float32, shape (n_prompts, n_responses, n_reward_models)
        Memory-mapped with ``mmap_mode``.
    texts : dict of str to object ndarray
        The arrays of :data:`TEXT_ARRAYS`.

    Raises
    ------
    ValueError
        ``mmap_mode`` is not one of :data:`MMAP_MODES`; raised before any file is
        opened.
    FileNotFoundError
        No copy in ``folder``.
    DamagedCopyError
        A file is unreadable (missing, truncated, not in its format), or the content
        does not match the fingerprint.
    """
    check_mmap_mode(mmap_mode)
    folder = Path(folder)
    meta = _read_meta(folder)
    with _reading(folder, "rewards.npy") as path:
        rewards = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        if rewards.ndim != 3 or rewards.dtype.kind != "f":
            raise ValueError(
                f"it holds a {rewards.dtype} array of shape {rewards.shape}, not "
                "float rewards of shape (n_prompts, n_responses, n_reward_models)"
            )
    with _reading(folder, "texts.npz") as path:
        encoded = _read_encoded_texts(path)
    found = content_digest(meta["name"], meta["reward_models"], rewards, encoded)
    if found != meta["fingerprint"]:
        raise _damaged(folder, meta["fingerprint"], f"its content hashes to {found}")
    with _reading(folder, META):
        n_prompts, n_responses = rewards.shape[:2]
        expected = {name: [n_prompts] for name in TEXT_ARRAYS}
        expected.update(responses=[n_prompts, n_responses],
                        response_models=[n_prompts, n_responses])
        if meta["shapes"] != expected:
            raise ValueError(
                f"its text shapes {meta['shapes']} do not fit rewards of shape "
                f"{rewards.shape}"
            )
        texts = {
            name: decode_texts(*encoded[name], meta["shapes"][name])
            for name in TEXT_ARRAYS
        }
    return meta, rewards, texts


def _read_meta(folder):
    path = folder / META
    try:
        content = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(
            f"No saved corpus in {folder} ({META} is missing). Save one there with "
            "Corpus.save(folder) or Corpus.share(folder); on a cluster, give a folder "
            "that every machine mounts at the same path."
        ) from None
    with _reading(folder, META):
        meta = json.loads(content.decode("utf-8"))
        kinds = dict(fingerprint=str, name=str, reward_models=list, shapes=dict)
        if not isinstance(meta, dict) or not all(
            isinstance(meta.get(key), kind) for key, kind in kinds.items()
        ):
            raise ValueError(
                f"it does not describe a saved corpus (it needs {sorted(kinds)})"
            )
    return meta


def _read_encoded_texts(path):
    # Opened here: numpy.load leaves its own handle open when the zip is unreadable.
    with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as arrays:
        encoded = {
            name: (arrays[f"{name}_lengths"], arrays[f"{name}_utf8"])
            for name in TEXT_ARRAYS
        }
    for name, (lengths, blob) in encoded.items():
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu" or blob.dtype != np.uint8:
            raise ValueError(f"its arrays of {name} are not text lengths and UTF-8 bytes")
    return encoded


@contextmanager
def _reading(folder, name):
    """Yield the path of file ``name`` of the copy; its read errors raise DamagedCopyError."""
    try:
        yield folder / name
    except _UNREADABLE as exc:
        raise DamagedCopyError(
            f"The saved corpus in {folder} is damaged: its file {name} is unreadable "
            f"({type(exc).__name__}: {exc}). It was changed, truncated or removed after "
            f"it was written. {_WRITE_AGAIN}"
        ) from exc


def _damaged(folder, fingerprint, detail):
    return DamagedCopyError(
        f"The saved corpus in {folder} does not match its fingerprint {fingerprint} "
        f"({detail}): the copy was changed or damaged after it was written. "
        f"{_WRITE_AGAIN}"
    )


def copy_stats(folder):
    """(inode, size, modification time) of each file of a copy; None where absent."""
    stats = []
    for name in _FILES:
        try:
            stat = os.stat(Path(folder) / name)
        except FileNotFoundError:
            return None
        stats.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(stats)


def remember(fingerprint, corpus):
    """Keep ``corpus`` for this process's references to ``fingerprint``."""
    with lock:
        registry[fingerprint] = corpus
        registry.move_to_end(fingerprint)
        while len(registry) > _REGISTRY_SIZE:
            registry.popitem(last=False)
