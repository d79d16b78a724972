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
import threading
import uuid
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

__all__ = [
    "TEXT_ARRAYS",
    "DamagedCopyError",
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
# Corpora that this process shared or read from a copy, by fingerprint, most
# recent last: a reference to one of them resolves without reading the disk.
_REGISTRY_SIZE = 8
registry = OrderedDict()
# fingerprint -> times this process built a corpus from its data (pickled or read).
loads = Counter()
# Reentrant: a resolution holds it while it reads and registers the corpus.
lock = threading.RLock()


class DamagedCopyError(ValueError):
    """A saved copy of a corpus whose content does not match its fingerprint."""


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
    FileNotFoundError
        No copy in ``folder``.
    DamagedCopyError
        A file is unreadable, or the content does not match the fingerprint.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"No saved corpus in {folder} ({META} is missing). Save one there with "
            "Corpus.save(folder) or Corpus.share(folder); on a cluster, give a folder "
            "that every machine mounts at the same path."
        ) from None
    try:
        rewards = np.load(folder / "rewards.npy", mmap_mode=mmap_mode, allow_pickle=False)
        with np.load(folder / "texts.npz", allow_pickle=False) as arrays:
            encoded = {
                name: (arrays[f"{name}_lengths"], arrays[f"{name}_utf8"])
                for name in TEXT_ARRAYS
            }
        found = content_digest(meta["name"], meta["reward_models"], rewards, encoded)
        texts = {
            name: decode_texts(*encoded[name], meta["shapes"][name])
            for name in TEXT_ARRAYS
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(folder, meta.get("fingerprint"), f"unreadable: {exc}") from exc
    if found != meta.get("fingerprint"):
        raise _damaged(folder, meta.get("fingerprint"), f"its content hashes to {found}")
    return meta, rewards, texts


def _damaged(folder, fingerprint, detail):
    return DamagedCopyError(
        f"The saved corpus in {folder} does not match its fingerprint {fingerprint} "
        f"({detail}): the copy was changed or damaged after it was written. Write it "
        "again from the corpus in memory (corpus.save(folder), or corpus.share() in "
        "the process that holds the data), or delete the folder."
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
