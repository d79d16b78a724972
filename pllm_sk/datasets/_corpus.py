"""The :class:`Corpus`: prompts, candidate responses and their reward-model scores.

A corpus pickles with its data; :meth:`Corpus.share` gives one that pickles as a
reference to a checked copy on disk (see :mod:`._transport`), for parallel workers.
"""

import numbers
import warnings
from pathlib import Path

import numpy as np

from ..runtime import CACHE_DIR_ENV, SHARED_FOLDER, default_cache_dir
from . import _transport
from ._transport import (
    TEXT_ARRAYS,
    DamagedCopyError,
    content_digest,
    copy_stats,
    encode_texts,
    read_copy,
    remember,
    write_copy,
)

__all__ = ["Corpus"]


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
    shared_folder : pathlib.Path or None
        The folder of the saved copy that a pickle of this corpus refers to (see
        :meth:`share`); ``None``: it pickles with its data.

    Notes
    -----
    A corpus pickles with its data: every task of a parallel search carries it
    (45 MB for the 10,402-prompt corpus). ``corpus.share()`` returns the same
    corpus, whose pickle is instead a reference (its fingerprint and the folder of a
    copy saved with :meth:`save`): each worker process reads the copy once, checks
    it against the fingerprint and keeps it for its later tasks. The process that
    shares checks the copy's files before each pickle and rewrites a damaged copy;
    a worker that reads a damaged copy raises :class:`DamagedCopyError`, naming the
    folder. On several machines, share into a folder that every machine mounts at
    the same path.

    See Also
    --------
    Corpus.share : Send a corpus to parallel workers once per worker.
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
    >>> import pickle, tempfile
    >>> shared = corpus.share(tempfile.mkdtemp())
    >>> len(pickle.dumps(shared)) < 200 < len(pickle.dumps(corpus))
    True
    >>> pickle.loads(pickle.dumps(shared)) is shared
    True
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
        shared = "" if self.shared_folder is None else f", shared={str(self.shared_folder)!r}"
        return (
            f"Corpus(name={self.name!r}, n_prompts={self.n_prompts}, "
            f"n_responses={self.n_responses}, n_reward_models={self.n_reward_models}, "
            f"{splits}{shared})"
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
            encoded = {
                name: encode_texts(values) for name, values in _text_arrays(self).items()
            }
            self.__dict__["_fingerprint"] = content_digest(
                self.name, self.reward_models, self.rewards, encoded
            )
        return self.__dict__["_fingerprint"]

    @property
    def shared_folder(self):
        folder = self.__dict__.get("_shared")
        return None if folder is None else Path(folder)

    def save(self, folder):
        """Write this corpus into ``folder``, for :meth:`load`.

        Three files (``rewards.npy``, ``texts.npz``, ``corpus.json`` with the
        fingerprint), each replaced whole; the folder is created if needed.

        Returns
        -------
        folder : pathlib.Path
        """
        write_copy(
            folder,
            self.fingerprint,
            self.name,
            self.reward_models,
            self.rewards,
            _text_arrays(self),
        )
        return Path(folder)

    @classmethod
    def load(cls, folder, *, mmap_mode=None):
        """The corpus saved in ``folder``, checked against its fingerprint.

        Parameters
        ----------
        folder : str or path-like
            A folder written by :meth:`save` (or :meth:`share`).
        mmap_mode : {None, "r", "r+", "c"}, default=None
            Passed to :func:`numpy.load` for the rewards; the texts are read.
            ``None`` reads the rewards into memory; ``"r"`` maps them read-only;
            ``"c"`` maps them copy-on-write (changes stay in memory); ``"r+"``
            maps them read-write: a change to ``corpus.rewards`` is written to
            ``rewards.npy``, and the copy no longer matches its fingerprint.

        Returns
        -------
        corpus : Corpus

        Raises
        ------
        ValueError
            ``mmap_mode`` is not one of the values above (checked before any
            file is opened).
        FileNotFoundError
            ``folder`` holds no saved corpus.
        DamagedCopyError
            A file is unreadable (missing, truncated, not in its format), or the
            files do not match the fingerprint written with them.
        """
        meta, rewards, texts = read_copy(folder, mmap_mode)
        corpus = cls(
            texts.pop("prompts"),
            texts.pop("responses"),
            rewards,
            reward_models=meta["reward_models"],
            name=meta["name"],
            **texts,
        )
        corpus.__dict__["_fingerprint"] = meta["fingerprint"]
        return corpus

    def share(self, folder=None):
        """This corpus, pickled from now on as a reference to a checked saved copy.

        The copy is written into ``folder`` (see :meth:`save`) unless a copy that
        matches the fingerprint is there already. The returned corpus shares this
        one's arrays; this one still pickles with its data.

        Parameters
        ----------
        folder : str or path-like, default=None
            ``None``: ``<feature cache root>/corpora/<fingerprint>`` (see
            :func:`~pllm_sk.runtime.default_cache_dir`). On several machines, a
            folder that every machine mounts at the same path.

        Returns
        -------
        shared : Corpus
            Its ``shared_folder`` is ``folder``, shown in its repr.
        """
        if folder is None:
            folder = default_cache_dir() / SHARED_FOLDER / self.fingerprint
        shared = Corpus.__new__(Corpus)
        shared.__dict__.update(self.__dict__, _shared=str(folder), _stats=None)
        try:
            _check_copy(shared)
        except OSError as exc:
            raise OSError(
                f"Could not write the shared copy of corpus {self.name!r} to {folder} "
                f"({exc.strerror or exc}). Pass share() a writable folder, or set "
                f"${CACHE_DIR_ENV}."
            ) from exc
        remember(shared.fingerprint, shared)
        return shared

    def __reduce_ex__(self, protocol):
        if self.shared_folder is None:
            return super().__reduce_ex__(protocol)
        _check_copy(self)
        return _open_shared, (self.fingerprint, str(self.shared_folder))

    def __getstate__(self):
        self.fingerprint  # noqa: B018 -- computed once, so that a copy knows it
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)
        with _transport.lock:
            _transport.loads[state.get("_fingerprint")] += 1

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


def _text_arrays(corpus):
    return {name: getattr(corpus, name) for name in TEXT_ARRAYS}


def corpus_loads(fingerprint=None):
    """How many times this process built a corpus from its data, pickled or read.

    A corpus that a reference resolves to from this process's registry is not
    counted.
    """
    with _transport.lock:
        loads = _transport.loads
        return sum(loads.values()) if fingerprint is None else loads[fingerprint]


def _check_copy(corpus):
    """Make the saved copy of a shared ``corpus`` whole: checked, rewritten if damaged.

    The check reads the copy only when its files changed since it was last
    checked (their inode, size or modification time differ).
    """
    folder = corpus.shared_folder
    with _transport.lock:
        stats = copy_stats(folder)
        if stats is not None and stats == corpus.__dict__["_stats"]:
            return
        try:
            meta = read_copy(folder)[0]
            whole = meta["fingerprint"] == corpus.fingerprint
        except FileNotFoundError:
            whole = False
        except DamagedCopyError as exc:
            warnings.warn(f"{exc} Rewritten from the corpus in memory.", RuntimeWarning,
                          stacklevel=3)
            whole = False
        if not whole:
            stats = copy_stats(corpus.save(folder))
        corpus.__dict__["_stats"] = stats


def _open_shared(fingerprint, folder):
    """The corpus of a reference: from this process's registry, else read from ``folder``.

    The lock is held throughout, so that the threads of one worker read the copy
    once between them.
    """
    with _transport.lock:
        corpus = _transport.registry.get(fingerprint)
        if corpus is None:
            stats = copy_stats(folder)
            corpus = Corpus.load(folder)
            if corpus.fingerprint != fingerprint:
                raise DamagedCopyError(
                    f"The saved corpus in {folder} is corpus {corpus.fingerprint}, not "
                    f"the corpus {fingerprint} that was shared: another corpus was "
                    "saved there since. Share each corpus into its own folder, and "
                    "call share() again in the process that holds the data."
                )
            corpus.__dict__.update(_shared=folder, _stats=stats)
            _transport.loads[fingerprint] += 1
        remember(fingerprint, corpus)
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
