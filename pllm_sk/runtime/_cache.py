"""An on-disk cache of feature vectors keyed by model identity and text content.

Layout: ``<root>/<namespace>/`` per model identity, holding ``identity.json`` and
immutable *shards*. A shard is one file: a 64-byte header (magic, row count, vector
dimension and dtype, CRC-32 of the payload, CRC-32 of the header), then the sorted
128-bit text keys and the float32 vectors. A shard is written to a temporary name,
flushed to disk and renamed into place (``os.replace``), so readers see whole shards
or none; every writer writes its own shards, so concurrent writers never share a
file. A shard whose header, size or checksum is wrong is removed with a warning and
its entries are computed again. Compaction merges a namespace's shards into one new
shard before deleting the old ones, so at every moment the shards on disk cover
every entry written. The folder ``<root>/corpora/`` is not a namespace: it holds
the saved copies of shared corpora (see :meth:`~pllm_sk.datasets.Corpus.share`).
"""

import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
import uuid
import warnings
import zlib
from pathlib import Path

import numpy as np

__all__ = ["CACHE_DIR_ENV", "SHARED_FOLDER", "FeatureCache", "default_cache_dir"]

CACHE_DIR_ENV = "PLLM_SK_CACHE_DIR"
# The cache folder's subfolder of shared corpora's saved copies (not feature vectors).
SHARED_FOLDER = "corpora"

_MAGIC = b"PLLMSKC1"
# magic, n_rows, dim, dtype; then the payload CRC. The header CRC covers these bytes.
_HEADER = struct.Struct("<8sQI8sI")
_HEADER_SIZE = 64
_KEY_BYTES = 16
_DTYPE = np.dtype("<f4")
_SHARD_SUFFIX = ".shard"
_PART_SUFFIX = ".part"
# get_or_compute compacts a namespace that has more shards than this afterwards.
_MAX_SHARDS = 8
# Temporary files older than this (seconds) are debris of a crashed writer.
_STALE_PART_AGE = 24 * 3600


def default_cache_dir():
    """The cache root: ``$PLLM_SK_CACHE_DIR``, else the platform's user cache folder.

    Linux and other POSIX systems: ``$XDG_CACHE_HOME/pllm_sk`` (``~/.cache/pllm_sk``);
    macOS: ``~/Library/Caches/pllm_sk``; Windows: ``%LOCALAPPDATA%\\pllm_sk\\Cache``.

    Returns
    -------
    path : pathlib.Path
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local"
        return Path(base) / "pllm_sk" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "pllm_sk"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "pllm_sk"


class FeatureCache:
    """On-disk store of vectors keyed by model identity and text content.

    An *identity* is a JSON-serialisable dict naming the model and every setting
    that changes its outputs (for example the model name or weights fingerprint,
    pooling, maximum length and dtype); each identity has its own namespace folder.
    Within it, a vector is keyed by a 128-bit BLAKE2b hash of its text. Vectors are
    stored as float32.

    - Lookups are vectorised: one sort and one ``searchsorted`` over all cached keys,
      then one gather per shard; a warm lookup of 1,000,000 vectors takes about a
      second (``benchmarks/features.py`` measures it).
    - :meth:`get_or_compute` computes only the missing texts, in chunks, and writes
      each chunk as soon as it is computed, so an interrupted run keeps its work.
    - Writes are atomic; a truncated or corrupted shard is detected by its size and
      CRC-32 checksums, removed with a ``RuntimeWarning`` and recomputed, never
      returned; processes filling the same cache at once leave it valid (each
      writes its own shards; duplicates are merged by compaction).

    Each shard is verified once per ``FeatureCache`` object (the check reads the
    whole shard); a new object verifies again, as a new process does.

    Parameters
    ----------
    path : str or path-like, default=None
        Root folder of the cache. ``None`` uses :func:`default_cache_dir`:
        ``$PLLM_SK_CACHE_DIR`` when set, else the platform's user cache folder
        (``~/.cache/pllm_sk`` on Linux).

    See Also
    --------
    TextEmbedder : Sentence embeddings, cached here.
    RewardModelScorer : Reward-model scores, cached here.

    Examples
    --------
    >>> import numpy as np
    >>> import tempfile
    >>> from pllm_sk.features import FeatureCache
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> identity = {"model": "length", "version": 1}
    >>> def compute(texts):
    ...     return np.array([[len(t)] for t in texts], dtype=np.float32)
    >>> cache.get_or_compute(identity, ["a", "abc", "a"], compute).ravel()
    array([1., 3., 1.], dtype=float32)
    >>> cache.info()[0]["n_entries"]
    2
    """

    def __init__(self, path=None):
        self.path = path

    def __repr__(self):
        return f"FeatureCache(path={str(self.root)!r})"

    def __getstate__(self):
        # Verified shards are memory maps of this process; another one re-verifies.
        return {"path": self.path}

    def __setstate__(self, state):
        self.path = state["path"]

    @property
    def root(self):
        """The resolved root folder (``path`` or :func:`default_cache_dir`)."""
        return default_cache_dir() if self.path is None else Path(self.path)

    # ------------------------------------------------------------------ keys

    @staticmethod
    def text_keys(texts):
        """128-bit keys of texts: the BLAKE2b-128 digest of their UTF-8 bytes.

        Parameters
        ----------
        texts : iterable of str

        Returns
        -------
        keys : ndarray of uint64, shape (n_texts, 2)
        """
        digests = b"".join(
            hashlib.blake2b(text.encode("utf-8"), digest_size=_KEY_BYTES).digest()
            for text in texts
        )
        return np.frombuffer(digests, dtype="<u8").reshape(-1, 2).astype(np.uint64)

    def namespace(self, identity):
        """Folder name of an identity: a readable slug and a hash of the identity."""
        canonical = _canonical(identity)
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
        label = str(identity.get("model", "features"))
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[-48:] or "features"
        return f"{slug}-{digest}"

    # ---------------------------------------------------------- public API

    def lookup(self, identity, keys):
        """Cached vectors of ``keys`` under ``identity``.

        Parameters
        ----------
        identity : dict
        keys : ndarray of uint64, shape (n, 2)
            From :meth:`text_keys`.

        Returns
        -------
        vectors : ndarray of float32, shape (n, dim), or None
            Rows of missing keys are NaN; ``None`` when nothing is cached yet.
        found : ndarray of bool, shape (n,)
        """
        keys = _check_keys(keys)
        index = self._index(self._folder(identity))
        found = np.zeros(keys.shape[0], dtype=bool)
        if index is None:
            return None, found
        sorted_hi, sorted_lo, shard_of, row_of, shards = index
        dim = shards[0].dim
        # Filled (not np.empty): touching the pages in order first is much faster
        # than faulting them in at the random positions of the scatter below.
        vectors = np.full((keys.shape[0], dim), np.nan, dtype=_DTYPE)
        if keys.shape[0] == 0:
            return vectors, found
        # Sorted needles make searchsorted walk the index once (5x faster at 1M).
        query_order = np.argsort(keys[:, 0], kind="stable")
        position = np.searchsorted(sorted_hi, keys[query_order, 0])
        position = np.minimum(position, sorted_hi.size - 1)
        hit = (sorted_hi[position] == keys[query_order, 0]) & (
            sorted_lo[position] == keys[query_order, 1]
        )
        queries, position = query_order[hit], position[hit]
        found[queries] = True
        # Read each shard front to back: order the hits by (shard, row).
        by_place = np.argsort(
            shard_of[position].astype(np.int64) << 40 | row_of[position], kind="stable"
        )
        queries, position = queries[by_place], position[by_place]
        shard_hit = shard_of[position]
        bounds = np.searchsorted(shard_hit, np.arange(len(shards) + 1))
        for number, shard in enumerate(shards):
            start, stop = bounds[number], bounds[number + 1]
            if stop > start:
                vectors[queries[start:stop]] = shard.vectors[
                    row_of[position[start:stop]]
                ]
        return vectors, found

    def store(self, identity, keys, vectors):
        """Write vectors for ``keys`` as one new shard (atomically).

        Parameters
        ----------
        identity : dict
        keys : ndarray of uint64, shape (n, 2)
        vectors : array-like of shape (n, dim)
            Stored as float32.

        Raises
        ------
        OSError
            The folder cannot be written (read-only, full); the message names it
            and how to choose another.
        """
        keys = _check_keys(keys)
        vectors = np.asarray(vectors, dtype=_DTYPE)
        if vectors.ndim != 2 or vectors.shape[0] != keys.shape[0]:
            raise ValueError(
                f"vectors must have shape ({keys.shape[0]}, dim) to match the keys; "
                f"got {vectors.shape}."
            )
        if not np.isfinite(vectors).all():
            raise ValueError("vectors must be finite; refusing to cache NaN or inf.")
        if keys.shape[0] == 0:
            return
        folder = self._folder(identity)
        order = np.argsort(keys[:, 0], kind="stable")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            identity_file = folder / "identity.json"
            if not identity_file.exists():
                _atomic_write(identity_file, [_canonical(identity).encode("utf-8")])
            _write_shard(folder, keys[order], vectors[order])
        except OSError as exc:
            # OSError(errno, text) is the subclass of the errno (PermissionError).
            raise OSError(
                exc.errno,
                f"Cannot write to the feature cache {self.root} ({exc}). Pass "
                "cache= a writable folder (or cache=False), or set the environment "
                f"variable {CACHE_DIR_ENV} to one.",
            ) from exc

    def get_or_compute(self, identity, texts, compute, *, chunk_size=4096):
        """Vectors of ``texts``: cached ones looked up, missing ones computed and stored.

        Parameters
        ----------
        identity : dict
            The model identity (see the class docstring).
        texts : sequence of str
        compute : callable
            ``compute(list_of_texts) -> array of shape (len(list_of_texts), dim)``;
            called only for distinct texts that are not cached, ``chunk_size`` at
            most per call.
        chunk_size : int, default=4096
            Texts per ``compute`` call; each chunk is stored as soon as it is done.

        Returns
        -------
        vectors : ndarray of float32, shape (n_texts, dim)
            In the order of ``texts``; a cached vector is returned exactly as it
            was computed.

        Warns
        -----
        RuntimeWarning
            Once per cache object, when the folder cannot be written (read-only,
            full): the computed vectors are returned without being stored.
        """
        texts = list(texts)
        unique_keys, first, inverse = _distinct_keys(texts)
        vectors, found = self.lookup(identity, unique_keys)
        missing = np.flatnonzero(~found)
        writable = True
        for start in range(0, missing.size, chunk_size):
            chunk = missing[start : start + chunk_size]
            computed = np.asarray(
                compute([texts[first[i]] for i in chunk]), dtype=_DTYPE
            )
            if computed.ndim != 2 or computed.shape[0] != chunk.size:
                raise ValueError(
                    f"compute returned shape {computed.shape} for {chunk.size} texts; "
                    "expected (n_texts, dim)."
                )
            if vectors is None:
                vectors = np.full(
                    (unique_keys.shape[0], computed.shape[1]), np.nan, _DTYPE
                )
            elif computed.shape[1] != vectors.shape[1]:
                raise ValueError(
                    f"compute returned vectors of dimension {computed.shape[1]}, but the "
                    f"cache holds dimension {vectors.shape[1]} for this identity."
                )
            if writable:
                writable = self._try_store(identity, unique_keys[chunk], computed)
            vectors[chunk] = computed
        if (
            writable
            and missing.size
            and self._n_shards(self._folder(identity)) > _MAX_SHARDS
        ):
            self.compact(identity)
        if vectors is None:  # no texts at all
            return np.zeros((0, 0), dtype=_DTYPE)
        return vectors[inverse]

    def missing(self, identity, texts):
        """The distinct texts of ``texts`` not cached under ``identity``.

        In the order in which :meth:`get_or_compute` would compute them, so that
        computing them in chunks of ``chunk_size`` elsewhere (on other workers)
        gives the same chunks as a serial :meth:`get_or_compute`.

        Parameters
        ----------
        identity : dict
        texts : sequence of str

        Returns
        -------
        missing : list of str
        """
        texts = list(texts)
        unique_keys, first, _ = _distinct_keys(texts)
        _, found = self.lookup(identity, unique_keys)
        return [texts[i] for i in first[~found]]

    def compact(self, identity):
        """Merge the shards of ``identity`` into one, dropping duplicate keys."""
        folder = self._folder(identity)
        index = self._index(folder)
        if index is None or len(index[4]) <= 1:
            return
        sorted_hi, sorted_lo, shard_of, row_of, shards = index
        keep = np.ones(sorted_hi.size, dtype=bool)
        keep[1:] = sorted_hi[1:] != sorted_hi[:-1]
        keys = np.column_stack([sorted_hi[keep], sorted_lo[keep]])
        vectors = np.empty((keys.shape[0], shards[0].dim), dtype=_DTYPE)
        for number, shard in enumerate(shards):
            mine = shard_of[keep] == number
            vectors[mine] = shard.vectors[row_of[keep][mine]]
        _write_shard(folder, keys, vectors)
        for shard in shards:
            _remove(shard.path)
        self._memo().pop(folder, None)

    def info(self):
        """One dict per namespace: name, model, entries, shards and bytes on disk.

        Returns
        -------
        namespaces : list of dict
            Keys ``namespace``, ``model``, ``n_entries``, ``n_shards``, ``nbytes``.
        """
        if not self.root.is_dir():
            return []
        rows = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if folder.name == SHARED_FOLDER:  # shared corpora, not vectors
                continue
            try:
                identity = json.loads((folder / "identity.json").read_text("utf-8"))
            except (OSError, ValueError):
                identity = {}
            n_entries, n_shards = 0, 0
            for path in folder.glob("*" + _SHARD_SUFFIX):
                try:
                    header = _read_header(path)
                except FileNotFoundError:  # compacted away meanwhile
                    continue
                if header is not None:
                    n_entries += header[0]
                    n_shards += 1
            rows.append(
                dict(
                    namespace=folder.name,
                    model=identity.get("model"),
                    n_entries=n_entries,
                    n_shards=n_shards,
                    nbytes=sum(
                        p.stat().st_size for p in folder.iterdir() if p.is_file()
                    ),
                )
            )
        return rows

    def nbytes(self):
        """Total size of the cache on disk, in bytes."""
        return sum(row["nbytes"] for row in self.info())

    def clear(self, identity=None):
        """Delete the cached vectors of ``identity``, or the whole cache (``None``)."""
        target = self.root if identity is None else self._folder(identity)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        self._memo().clear()

    # ------------------------------------------------------------- internals

    def _folder(self, identity):
        if not isinstance(identity, dict) or not identity:
            raise TypeError(
                f"identity must be a non-empty dict naming the model and its settings; "
                f"got {identity!r}."
            )
        return self.root / self.namespace(identity)

    def _try_store(self, identity, keys, vectors):
        """:meth:`store`, or a RuntimeWarning (once per object) if it cannot write."""
        try:
            self.store(identity, keys, vectors)
        except OSError as exc:
            if not self.__dict__.get("_warned_unwritable"):
                self.__dict__["_warned_unwritable"] = True
                warnings.warn(
                    f"{exc.strerror} The vectors are computed but not cached.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return False
        return True

    def _memo(self):
        # folder -> (listing signature, index); verified shards live in the index.
        if "_indexes" not in self.__dict__:
            self.__dict__["_indexes"] = {}
        return self.__dict__["_indexes"]

    def _n_shards(self, folder):
        return sum(1 for _ in folder.glob("*" + _SHARD_SUFFIX))

    def _index(self, folder):
        """Merged sorted index of a namespace, rebuilt when its shards change."""
        for _ in range(5):
            signature = _listing(folder)
            memo = self._memo().get(folder)
            if memo is not None and memo[0] == signature:
                return memo[1]
            previous = memo[1] if memo is not None else None
            known = {} if previous is None else {s.path: s for s in previous[4]}
            shards, vanished = [], False
            for path, size, mtime in signature:
                shard = known.get(path)
                if shard is not None and (shard.size, shard.mtime) == (size, mtime):
                    shards.append(shard)
                    continue
                try:
                    shard = _Shard.open(path)
                except FileNotFoundError:
                    vanished = True  # merged away by a compaction; list again
                    break
                except _CorruptShard as exc:
                    warnings.warn(
                        f"Feature cache shard {path} is corrupt ({exc}); removed, its "
                        "entries will be recomputed.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
                    _remove(path)
                    vanished = True
                    break
                shards.append(shard)
            if vanished:
                continue
            dims = {shard.dim for shard in shards}
            if len(dims) > 1:
                raise RuntimeError(
                    f"Feature cache namespace {folder} mixes vector dimensions {sorted(dims)}; "
                    "clear it with FeatureCache.clear(identity)."
                )
            index = _merge(shards) if shards else None
            self._memo()[folder] = (signature, index)
            return index
        raise RuntimeError(
            f"Feature cache namespace {folder} kept changing while read."
        )


class _CorruptShard(Exception):
    pass


class _Shard:
    """A verified shard: its keys and vectors as read-only memory maps."""

    def __init__(self, path, size, mtime, keys, vectors):
        self.path, self.size, self.mtime = path, size, mtime
        self.keys, self.vectors = keys, vectors
        self.dim = vectors.shape[1]

    @classmethod
    def open(cls, path):
        stat = path.stat()
        header = _read_header(path)
        if header is None:
            raise _CorruptShard("bad header")
        n_rows, dim, payload_crc = header
        expected = _HEADER_SIZE + n_rows * (_KEY_BYTES + dim * _DTYPE.itemsize)
        if stat.st_size != expected:
            raise _CorruptShard(
                f"{stat.st_size} bytes instead of {expected}: truncated"
            )
        if n_rows == 0:
            raise _CorruptShard("no rows")
        payload = np.memmap(path, dtype=np.uint8, mode="r", offset=_HEADER_SIZE)
        if zlib.crc32(payload) != payload_crc:
            raise _CorruptShard("checksum mismatch")
        key_bytes = n_rows * _KEY_BYTES
        keys = payload[:key_bytes].view("<u8").reshape(n_rows, 2)
        vectors = payload[key_bytes:].view(_DTYPE).reshape(n_rows, dim)
        return cls(path, stat.st_size, stat.st_mtime_ns, keys, vectors)


def _merge(shards):
    """(sorted hi, lo, shard number, row) over all shards' keys."""
    hi = np.concatenate([shard.keys[:, 0] for shard in shards])
    lo = np.concatenate([shard.keys[:, 1] for shard in shards])
    shard_of = np.concatenate(
        [
            np.full(shard.keys.shape[0], n, dtype=np.int32)
            for n, shard in enumerate(shards)
        ]
    )
    row_of = np.concatenate([np.arange(shard.keys.shape[0]) for shard in shards])
    order = np.argsort(hi, kind="stable")
    return hi[order], lo[order], shard_of[order], row_of[order], shards


def _listing(folder):
    """(path, size, mtime) of the namespace's shards, sorted; drops stale temp files."""
    if not folder.is_dir():
        return ()
    entries = []
    now = time.time()
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.suffix == _SHARD_SUFFIX:
            entries.append((path, stat.st_size, stat.st_mtime_ns))
        elif path.suffix == _PART_SUFFIX and now - stat.st_mtime > _STALE_PART_AGE:
            _remove(path)
    return tuple(sorted(entries))


def _read_header(path):
    """(n_rows, dim, payload crc) from a shard's header, or None if it is invalid.

    A shard that another process's compaction removed raises FileNotFoundError:
    it vanished, which is not corruption.
    """
    with open(path, "rb") as handle:
        raw = handle.read(_HEADER_SIZE)
    if len(raw) < _HEADER_SIZE:
        return None
    fields = raw[: _HEADER.size]
    (header_crc,) = struct.unpack_from("<I", raw, _HEADER.size)
    if zlib.crc32(fields) != header_crc:
        return None
    magic, n_rows, dim, dtype, payload_crc = _HEADER.unpack(fields)
    if magic != _MAGIC or dtype.rstrip(b"\0") != _DTYPE.str.encode() or dim == 0:
        return None
    return n_rows, dim, payload_crc


def _write_shard(folder, keys, vectors):
    keys = np.ascontiguousarray(keys, dtype="<u8")
    vectors = np.ascontiguousarray(vectors, dtype=_DTYPE)
    payload_crc = zlib.crc32(vectors, zlib.crc32(keys))
    fields = _HEADER.pack(
        _MAGIC, keys.shape[0], vectors.shape[1], _DTYPE.str.encode(), payload_crc
    )
    header = fields + struct.pack("<I", zlib.crc32(fields))
    header += b"\0" * (_HEADER_SIZE - len(header))
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{_SHARD_SUFFIX}"
    _atomic_write(folder / name, [header, keys, vectors])


def _atomic_write(path, chunks):
    """Write to a temporary file in the same folder, sync, then rename into place."""
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex}{_PART_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            for chunk in chunks:
                handle.write(
                    chunk if isinstance(chunk, bytes) else memoryview(chunk).cast("B")
                )
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        _remove(temporary)


def _remove(path):
    try:
        os.remove(path)
    except OSError:  # already gone, or held open on Windows: harmless either way
        pass


def _distinct_keys(texts):
    """Keys of the distinct texts (sorted), first position of each, inverse map."""
    keys = FeatureCache.text_keys(texts)
    _, first, inverse = np.unique(keys[:, 0], return_index=True, return_inverse=True)
    unique_keys = keys[first]
    if not np.array_equal(unique_keys[inverse, 1], keys[:, 1]):
        raise RuntimeError(
            "Two different texts share the first 64 bits of their 128-bit key; "
            "pass them to get_or_compute in separate calls."
        )
    return unique_keys, first, inverse


def _check_keys(keys):
    keys = np.asarray(keys)
    if keys.ndim != 2 or keys.shape[1] != 2 or keys.dtype != np.uint64:
        raise ValueError(
            "keys must be a uint64 array of shape (n, 2) from FeatureCache.text_keys; "
            f"got dtype {keys.dtype} and shape {keys.shape}."
        )
    return keys


def _canonical(identity):
    try:
        return json.dumps(identity, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"identity must be JSON-serialisable: {exc}") from None
