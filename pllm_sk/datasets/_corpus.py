"""The :class:`Corpus`: prompts, candidate responses and their reward-model scores.

A corpus travels to the workers of a parallel engine by reference (see
:meth:`Corpus.__reduce_ex__`): the data is written once to a folder beside the
feature cache and each worker process reads it once.
"""

import hashlib
import json
import numbers
import os
import shutil
import threading
import uuid
import warnings
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from ..runtime import (
    REFERENCE_ENV,
    SHARED_FOLDER,
    default_cache_dir,
    shipping_engine,
    workers_share_disk,
)

__all__ = ["Corpus"]

# Shared copies live in <feature cache root>/corpora/<fingerprint>/.
_META = "corpus.json"
# Corpora resolved from a reference and kept by a process, most recent last.
_REGISTRY_SIZE = 8
_registry = OrderedDict()
# fingerprint -> times this process built a corpus from its data (pickled or shared).
_loads = Counter()
# Fingerprints whose shared copy could not be written (warned once per process).
_unwritable = set()
# Reentrant: a resolution holds it while it loads and registers the corpus.
_lock = threading.RLock()


class Corpus:
    """Prompts, K candidate responses each, and B reward-model scores per response.

    A prompt is identified by its row index (``prompt_id``), a response by its slot
    within the prompt (``response_id`` in ``[0, K)``). Everything else in the library
    refers to texts and scores through these two integer ids.

    The constructor validates its arguments (see :meth:`validate`), so a corpus built
    from your own arrays is checked the same way as the PersonalLLM one.

    Parameters
    ----------
    prompts : array-like of str, shape (n_prompts,)
        Prompt texts.
    responses : array-like of str, shape (n_prompts, n_responses)
        Candidate response texts, one row per prompt.
    rewards : array-like of float, shape (n_prompts, n_responses, n_reward_models)
        Normalised reward-model scores; stored as float32. Must be finite.
    reward_models : sequence of str, length n_reward_models
        Reward-model names, in the order of the last axis of ``rewards`` (and of user
        weight vectors). Must be unique.
    response_models : array-like of str, shape (n_prompts, n_responses), default=None
        Name of the model that wrote each response. ``None`` names the slots
        ``"response_1"`` .. ``"response_K"``.
    split : array-like of str, shape (n_prompts,), default=None
        ``"train"`` or ``"test"`` per prompt. ``None`` puts every prompt in ``"train"``.
    subset : array-like of str, shape (n_prompts,), default=None
        Source of each prompt. ``None`` labels every prompt ``"unknown"``.
    name : str, default="custom"
        A short label printed by benchmarks.

    Attributes
    ----------
    n_prompts, n_responses, n_reward_models : int
        The three dimensions of ``rewards``.
    fingerprint : str
        A 128-bit digest of the content (texts, rewards, names, splits), computed
        on first use. A corpus is treated as immutable: change its arrays in place
        and the fingerprint, cached, no longer describes it.

    Notes
    -----
    A corpus pickles with its data (``pickle``, ``joblib.dump``, a saved
    pipeline load anywhere), except when a parallel engine ships it to its
    workers: inside the task serializers of joblib's loky backend, of Dask
    (``joblib.parallel_backend("dask")``) and of Ray
    (``joblib.parallel_backend("ray")``) it travels as a reference, its
    fingerprint and a folder. The folder,
    ``<feature cache root>/corpora/<fingerprint>/`` (see
    :func:`~pllm_sk.features.default_cache_dir`), is written once, by the first
    such pickle; each worker process reads it once (the rewards memory-mapped)
    and keeps the corpus for its later tasks. The reference is used when the
    workers can read that folder: always for loky; for Dask when the scheduler
    runs on this machine; for Ray when every node is this machine. On a cluster
    of several machines set ``$PLLM_SK_CACHE_DIR`` to a folder that every machine
    mounts at the same path and ``$PLLM_SK_CORPUS_REFERENCE=always``; ``never``
    sends the data with every task. When the folder cannot be written, the data
    travels with a ``RuntimeWarning``.

    See Also
    --------
    make_personalllm : A synthetic corpus with the PersonalLLM schema.
    load_personalllm : The real PersonalLLM corpus.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.datasets import Corpus
    >>> corpus = Corpus(
    ...     prompts=["Hi?", "How are you?"],
    ...     responses=[["Hello.", "Hey!"], ["Fine.", "Great, thanks!"]],
    ...     rewards=np.zeros((2, 2, 3)),
    ...     reward_models=["a", "b", "c"],
    ... )
    >>> corpus.n_prompts, corpus.n_responses, corpus.n_reward_models
    (2, 2, 3)
    >>> corpus.lookup_rewards([1], [0]).shape
    (1, 3)
    """

    def __init__(
        self,
        prompts,
        responses,
        rewards,
        *,
        reward_models,
        response_models=None,
        split=None,
        subset=None,
        name="custom",
    ):
        self.prompts = np.asarray(prompts, dtype=object)
        self.responses = np.asarray(responses, dtype=object)
        self.rewards = np.asarray(rewards, dtype=np.float32)
        self.reward_models = tuple(str(m) for m in reward_models)
        n_prompts = self.prompts.shape[0] if self.prompts.ndim else 0
        n_responses = self.responses.shape[1] if self.responses.ndim == 2 else 0
        if response_models is None:
            slots = np.array(
                [f"response_{k + 1}" for k in range(n_responses)], dtype=object
            )
            response_models = np.tile(slots, (n_prompts, 1))
        self.response_models = np.asarray(response_models, dtype=object)
        self.split = np.asarray(
            ["train"] * n_prompts if split is None else split, dtype=object
        )
        self.subset = np.asarray(
            ["unknown"] * n_prompts if subset is None else subset, dtype=object
        )
        self.name = str(name)
        self.validate()

    @property
    def n_prompts(self):
        return self.rewards.shape[0]

    @property
    def n_responses(self):
        return self.rewards.shape[1]

    @property
    def n_reward_models(self):
        return self.rewards.shape[2]

    def __repr__(self):
        splits = ", ".join(
            f"{s}={n}" for s, n in zip(*np.unique(self.split, return_counts=True))
        )
        return (
            f"Corpus(name={self.name!r}, n_prompts={self.n_prompts}, "
            f"n_responses={self.n_responses}, n_reward_models={self.n_reward_models}, "
            f"{splits})"
        )

    def __len__(self):
        return self.n_prompts

    def __deepcopy__(self, memo):
        # A corpus is treated as immutable: scikit-learn's clone deep-copies
        # non-estimator parameters in every CV fold, and copying ~100k texts per
        # fold would cost more than the fit. Copies share the arrays.
        return self

    @property
    def fingerprint(self):
        if "_fingerprint" not in self.__dict__:
            self.__dict__["_fingerprint"] = _content_digest(self)
        return self.__dict__["_fingerprint"]

    def __reduce_ex__(self, protocol):
        # A parallel engine's task serializer gets a reference (see Notes); any
        # other pickle gets the data.
        engine = shipping_engine()
        if engine is not None and workers_share_disk(engine):
            folder = _shared_copy(self)
            if folder is not None:
                _remember(self)
                return _resolve_reference, (self.fingerprint, str(folder))
        return super().__reduce_ex__(protocol)

    def __getstate__(self):
        self.fingerprint  # noqa: B018 -- computed once, so that a copy knows it
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)
        with _lock:
            _loads[state.get("_fingerprint")] += 1

    def validate(self):
        """Check shapes, names and values; raise ``ValueError`` naming the problem.

        Returns
        -------
        self : Corpus
        """
        if self.prompts.ndim != 1 or self.prompts.shape[0] == 0:
            raise ValueError(
                f"prompts must be a non-empty 1-d sequence; got shape {self.prompts.shape}."
            )
        n_prompts = self.prompts.shape[0]
        if self.responses.ndim != 2 or self.responses.shape[0] != n_prompts:
            raise ValueError(
                f"responses must have shape (n_prompts, n_responses) = ({n_prompts}, K); "
                f"got {self.responses.shape}."
            )
        n_responses = self.responses.shape[1]
        if n_responses < 2:
            raise ValueError(
                f"A corpus needs at least 2 responses per prompt; got {n_responses}."
            )
        n_reward_models = len(self.reward_models)
        expected = (n_prompts, n_responses, n_reward_models)
        if self.rewards.shape != expected:
            raise ValueError(
                f"rewards must have shape (n_prompts, n_responses, n_reward_models) = "
                f"{expected}; got {self.rewards.shape}."
            )
        if n_reward_models == 0:
            raise ValueError("reward_models must name at least one reward model.")
        if len(set(self.reward_models)) != n_reward_models:
            duplicated = sorted(
                {m for m in self.reward_models if self.reward_models.count(m) > 1}
            )
            raise ValueError(f"reward_models must be unique; duplicated: {duplicated}.")
        bad = ~np.isfinite(self.rewards)
        if bad.any():
            p, k, b = np.argwhere(bad)[0]
            raise ValueError(
                f"rewards must be finite; found {int(bad.sum())} NaN or inf values, the "
                f"first at prompt_id={p}, response_id={k}, "
                f"reward model {self.reward_models[b]!r}."
            )
        if self.response_models.shape != (n_prompts, n_responses):
            raise ValueError(
                f"response_models must have shape {(n_prompts, n_responses)}; "
                f"got {self.response_models.shape}."
            )
        for attribute in ("split", "subset"):
            values = getattr(self, attribute)
            if values.shape != (n_prompts,):
                raise ValueError(
                    f"{attribute} must have shape ({n_prompts},); got {values.shape}."
                )
        unknown = set(np.unique(self.split)) - {"train", "test"}
        if unknown:
            raise ValueError(
                f"split labels must be 'train' or 'test'; got {sorted(unknown)}."
            )
        return self

    def prompt_ids(self, split=None):
        """Ids of the prompts in ``split`` (``"train"``, ``"test"`` or ``None`` for all).

        Returns
        -------
        prompt_ids : ndarray of int64
        """
        if split is None:
            return np.arange(self.n_prompts, dtype=np.int64)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train', 'test' or None; got {split!r}.")
        return np.flatnonzero(self.split == split).astype(np.int64)

    def select(self, prompt_ids):
        """A new corpus made of the given prompts, renumbered from 0 in that order."""
        prompt_ids = self.check_ids(prompt_ids)
        return Corpus(
            self.prompts[prompt_ids],
            self.responses[prompt_ids],
            self.rewards[prompt_ids],
            reward_models=self.reward_models,
            response_models=self.response_models[prompt_ids],
            split=self.split[prompt_ids],
            subset=self.subset[prompt_ids],
            name=self.name,
        )

    def select_split(self, split):
        """A new corpus with only the prompts of ``split`` (ids renumbered)."""
        return self.select(self.prompt_ids(split))

    def check_ids(self, prompt_ids, response_ids=None):
        """Validate id arrays against this corpus and return them as int64.

        Raises ``TypeError`` for non-integer ids and ``ValueError`` for ids outside
        the corpus, naming the offending value.
        """
        prompt_ids = _as_id_array(prompt_ids, "prompt_id", self.n_prompts)
        if response_ids is None:
            return prompt_ids
        response_ids = _as_id_array(response_ids, "response_id", self.n_responses)
        if prompt_ids.shape != response_ids.shape:
            raise ValueError(
                f"prompt_id and response_id must have the same length; got "
                f"{prompt_ids.shape[0]} and {response_ids.shape[0]}."
            )
        return prompt_ids, response_ids

    def lookup_rewards(self, prompt_ids, response_ids):
        """Reward vectors of (prompt_id, response_id) pairs.

        Returns
        -------
        rewards : ndarray of float32, shape (n_pairs, n_reward_models)
        """
        prompt_ids, response_ids = self.check_ids(prompt_ids, response_ids)
        return self.rewards[prompt_ids, response_ids]


def _content_digest(corpus):
    """BLAKE2b-128 of everything a corpus holds, as hex."""
    digest = hashlib.blake2b(digest_size=16)
    header = [corpus.name, list(corpus.reward_models), list(corpus.rewards.shape)]
    digest.update(json.dumps(header).encode("utf-8"))
    digest.update(np.ascontiguousarray(corpus.rewards, dtype="<f4").tobytes())
    for values in _text_arrays(corpus).values():
        lengths, blob = _encode_texts(values)
        digest.update(lengths.tobytes())
        digest.update(blob)
    return digest.hexdigest()


def _encode_texts(values):
    """The texts of an array as (length of each in characters, all of them in UTF-8)."""
    texts = [str(text) for text in values.ravel().tolist()]
    lengths = np.fromiter(map(len, texts), dtype="<i8", count=len(texts))
    return lengths, "".join(texts).encode("utf-8", "surrogatepass")


def _decode_texts(lengths, blob, shape):
    """The inverse of :func:`_encode_texts`: an object array of ``shape``."""
    joined = bytes(blob).decode("utf-8", "surrogatepass")
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    texts = np.empty(len(ends), dtype=object)
    texts[:] = [joined[start:end] for start, end in zip(starts, ends)]
    return texts.reshape(shape)


def _text_arrays(corpus):
    names = ("prompts", "responses", "response_models", "split", "subset")
    return {name: getattr(corpus, name) for name in names}


def corpus_loads(fingerprint=None):
    """How many times this process built a corpus from its data, pickled or shared.

    A corpus resolved from this process's registry is not counted.
    """
    with _lock:
        return sum(_loads.values()) if fingerprint is None else _loads[fingerprint]


def shared_folder(fingerprint):
    """``<feature cache root>/corpora/<fingerprint>``."""

    return default_cache_dir() / SHARED_FOLDER / fingerprint


def _remember(corpus):
    with _lock:
        _registry[corpus.fingerprint] = corpus
        _registry.move_to_end(corpus.fingerprint)
        while len(_registry) > _REGISTRY_SIZE:
            _registry.popitem(last=False)


def _shared_copy(corpus):
    """The folder of the corpus's shared copy, written now if absent; None if it can't."""
    folder = shared_folder(corpus.fingerprint)
    if (folder / _META).is_file():
        return folder
    temporary = folder.with_name(f"{folder.name}.{uuid.uuid4().hex}.part")
    try:
        temporary.mkdir(parents=True)
        np.save(temporary / "rewards.npy", np.ascontiguousarray(corpus.rewards))
        arrays, shapes = {}, {}
        for name, values in _text_arrays(corpus).items():
            lengths, blob = _encode_texts(values)
            arrays[f"{name}_lengths"] = lengths
            arrays[f"{name}_utf8"] = np.frombuffer(blob, dtype=np.uint8)
            shapes[name] = list(values.shape)
        np.savez(temporary / "texts.npz", **arrays)
        meta = dict(
            reward_models=list(corpus.reward_models), name=corpus.name, shapes=shapes
        )
        # Written last: its presence says the copy is whole.
        (temporary / _META).write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.replace(temporary, folder)
        except OSError:
            if (folder / _META).is_file():  # another writer's copy: as good
                return folder
            # A folder without its meta file was never renamed into place whole:
            # debris of another format or of a damaged disk. Replaced.
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(temporary, folder)
        return folder
    except OSError as exc:
        if corpus.fingerprint not in _unwritable:
            _unwritable.add(corpus.fingerprint)
            warnings.warn(
                f"Could not write the shared copy of corpus {corpus.name!r} to "
                f"{folder} ({exc.strerror or exc}); its data travels with every task. "
                f"Set $PLLM_SK_CACHE_DIR to a writable folder, or {REFERENCE_ENV}=never "
                "to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _resolve_reference(fingerprint, folder):
    """The corpus of a reference: from this process's registry, else from ``folder``.

    The lock is held throughout, so that the threads of one worker read the folder
    once between them.
    """
    with _lock:
        corpus = _registry.get(fingerprint)
        if corpus is None:
            corpus = _read_shared_copy(fingerprint, Path(folder))
            _loads[fingerprint] += 1
        _remember(corpus)
        return corpus


def _read_shared_copy(fingerprint, folder):
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        rewards = np.load(folder / "rewards.npy", mmap_mode="r", allow_pickle=False)
        with np.load(folder / "texts.npz", allow_pickle=False) as arrays:
            texts = {
                name: _decode_texts(
                    arrays[f"{name}_lengths"], arrays[f"{name}_utf8"], shape
                )
                for name, shape in meta["shapes"].items()
            }
    except FileNotFoundError:
        raise FileNotFoundError(
            f"This worker cannot read the shared copy of corpus {fingerprint} at "
            f"{folder}. On a cluster of several machines, set $PLLM_SK_CACHE_DIR to a "
            f"folder that every machine mounts at the same path, or {REFERENCE_ENV}="
            "never to send the corpus with every task."
        ) from None
    corpus = Corpus(
        texts.pop("prompts"),
        texts.pop("responses"),
        rewards,
        reward_models=meta["reward_models"],
        name=meta["name"],
        **texts,
    )
    corpus.__dict__["_fingerprint"] = fingerprint
    return corpus


def _as_id_array(values, name, upper):
    values = np.asarray(values)
    if values.ndim != 1:
        values = values.reshape(-1)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise TypeError(f"{name} must hold integers; got non-integer values.")
        values = values.astype(np.int64)
    elif values.dtype.kind not in "iu":
        if values.size and all(isinstance(v, numbers.Integral) for v in values):
            values = values.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integers; got dtype {values.dtype}.")
    values = values.astype(np.int64, copy=False)
    if values.size:
        low, high = values.min(), values.max()
        if low < 0 or high >= upper:
            bad = low if low < 0 else high
            raise ValueError(
                f"{name}={bad} is outside the corpus: ids must lie in [0, {upper})."
            )
    return values
