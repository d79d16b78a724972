"""The :class:`Corpus`: prompts, candidate responses and their reward-model scores."""

import numbers

import numpy as np

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
