"""Simulated feedback: each user's labeled history and unlabeled query candidates."""

import numbers

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from ..datasets import REWARD_MODEL_STATS, Corpus
from ._oracle import PreferenceOracle

__all__ = ["FEEDBACK_PROTOCOLS", "SCORE_SCALES", "simulate_feedback"]

FEEDBACK_PROTOCOLS = (
    "best_worst",
    "best_worst_pair",
    "random_pair",
    "bradley_terry",
    "reward",
    "ranking",
)

# How users read the reward-model scores: the corpus's z-normalised scores, or the
# raw scores the papers' code uses (z * sd + mean with the published statistics).
SCORE_SCALES = ("normalised", "raw")

# Protocols whose pair can be restricted to pairs the reward models disagree on.
_RANDOM_PAIR_PROTOCOLS = ("random_pair", "bradley_terry")

# Deterministic pair protocols that can also label the query prompts.
_QUERY_PAIR_PROTOCOLS = ("best_worst_pair", "random_pair")


def simulate_feedback(
    corpus,
    weights,
    *,
    n_history=50,
    n_query=1,
    feedback="best_worst",
    history_split="train",
    query_split="test",
    temperature=1.0,
    noise=0.0,
    reward_models=None,
    responses=None,
    scores="normalised",
    only_disagreeing=False,
    query_feedback=None,
    random_state=None,
):
    """Simulate every user's feedback on a corpus, in the rows-of-candidates format.

    For each user, ``n_history`` distinct prompts are drawn from ``history_split`` and
    labeled under the ``feedback`` protocol, and ``n_query`` distinct prompts are drawn
    from ``query_split`` with all K candidates unlabeled (``y = NaN``): the candidates
    a personalization method must rank.

    Feedback protocols (``y``: larger is better within a (user, prompt)):

    - ``"best_worst"`` (the paper's): the user names their best and worst of the K
      candidates. All K rows are returned, ``y = 1`` for the best, ``0`` for the worst
      and ``0.5`` for the others, so the rows say exactly what the user said: the best
      above all others, all others above the worst.
    - ``"best_worst_pair"``: the same choice stored as the paper's interaction
      database stores it, only the two rows, ``y`` 1 / 0.
    - ``"random_pair"``: two distinct random candidates (every slot can be drawn); the
      better one for the user gets ``y = 1``.
    - ``"bradley_terry"``: a random pair; the first is chosen with probability
      ``sigmoid((r_a - r_b) / temperature)``.
    - ``"reward"``: one random candidate with its true reward plus Gaussian noise of
      standard deviation ``noise``.
    - ``"ranking"``: all K candidates, ``y`` = the number of candidates the user ranks
      below it (K - 1 for the best, 0 for the worst).

    Ties between candidates are broken toward the lower ``response_id``.

    The published protocols (:mod:`pllm_sk.protocols`) also choose which reward
    models and response slots the users see (``reward_models``, ``responses``), on
    which scale (``scores``), keep only pairs that those reward models disagree on
    (``only_disagreeing``) and draw a test comparison per query prompt
    (``query_feedback``). The users' rewards are then those of the corpus that these
    options derive (``data.corpus``, the oracle's corpus).

    Parameters
    ----------
    corpus : Corpus
    weights : array-like of shape (n_users, n_reward_models)
        True user weights (for example from :func:`sample_users`), one column per
        reward model of ``reward_models``; ``user_id`` is the row index.
    n_history : int or array-like of int of shape (n_users,), default=50
        Labeled prompts per user, or each user's own count; 0 gives users with query
        rows only.
    n_query : int or array-like of int of shape (n_users,), default=1
        Unlabeled query prompts per user, or each user's own count.
    feedback : str, default="best_worst"
        One of :data:`FEEDBACK_PROTOCOLS`.
    history_split, query_split : {"train", "test"} or None, default="train", "test"
        Where history and query prompts come from; ``None`` means all prompts. When
        both come from the same prompts, a user's history and query prompts differ.
    temperature : float, default=1.0
        Choice temperature of the ``"bradley_terry"`` protocol, > 0.
    noise : float, default=0.0
        Standard deviation of the Gaussian noise of the ``"reward"`` protocol, >= 0.
    reward_models : sequence of str or None, default=None
        The reward models a user's weights refer to, in the order of the weights'
        columns; ``None`` for all of the corpus's, in its order.
    responses : sequence of int or None, default=None
        The response slots (``response_id`` of ``corpus``) the users see, renumbered
        from 0 in the order given; ``None`` for all.
    scores : {"normalised", "raw"}, default="normalised"
        The corpus's z-normalised scores, or the raw scores ``z * sd + mean`` with the
        published statistics of :data:`~pllm_sk.datasets.REWARD_MODEL_STATS`.
    only_disagreeing : bool, default=False
        For ``"random_pair"`` and ``"bradley_terry"`` (and a ``"random_pair"``
        ``query_feedback``): draw each pair uniformly among the pairs of its prompt
        on which the reward models do not all strictly agree, and draw prompts only
        among those that have such a pair.
    query_feedback : {"best_worst_pair", "random_pair"} or None, default=None
        Also draw one comparison per (user, query prompt) under this protocol, the
        test comparison of pairwise accuracy; the query rows stay unlabeled.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    data : Bunch
        ``X`` (DataFrame with ``user_id``, ``prompt_id``, ``response_id``), ``y``
        (ndarray, NaN on query rows), ``is_query`` (bool mask of query rows),
        ``oracle`` (:class:`PreferenceOracle`, the only holder of the true weights),
        ``corpus`` (the oracle's corpus: ``corpus`` itself unless the options above
        derive another), ``query_comparisons`` (a DataFrame of ``user_id``,
        ``prompt_id``, ``chosen_id``, ``rejected_id``, or ``None`` without
        ``query_feedback``) and ``settings`` (the arguments used, for printing beside
        results).

    Examples
    --------
    >>> from pllm_sk.datasets import make_personalllm
    >>> from pllm_sk.simulation import sample_users, simulate_feedback
    >>> corpus = make_personalllm(200, random_state=0)
    >>> data = simulate_feedback(corpus, sample_users(5, random_state=0),
    ...                          n_history=4, random_state=0)
    >>> data.X.shape, int(data.is_query.sum())
    ((200, 3), 40)
    """
    _check_protocol(
        feedback, temperature, noise, scores, only_disagreeing, query_feedback
    )
    corpus = _derive_corpus(corpus, reward_models, responses, scores)
    oracle = PreferenceOracle(corpus, weights)
    n_users = oracle.n_users
    n_history = _check_count(n_history, "n_history", n_users)
    n_query = _check_count(n_query, "n_query", n_users)
    if n_history.sum() + n_query.sum() == 0:
        raise ValueError("n_history and n_query are both 0: no rows to simulate.")
    allowed = _disagreeing_pairs(corpus.rewards) if only_disagreeing else None
    rng = check_random_state(random_state)
    history, query = _draw_user_prompts(
        corpus, rng, n_history, n_query, history_split, query_split, allowed
    )
    frames, query_comparisons = [], None
    if history[0].size:
        utility = oracle.candidate_rewards(*history)
        pair_mask = None if allowed is None else allowed[history[1]]
        frames.append(
            _label(feedback, *history, utility, rng, temperature, noise, pair_mask)
        )
    if query[0].size:
        frames.append(_candidate_rows(*query, corpus.n_responses))
        if query_feedback is not None:
            query_comparisons = _comparisons(
                query_feedback, *query, oracle, rng, allowed
            )
    X, y = _assemble(frames)
    settings = dict(
        corpus=corpus.name,
        n_users=n_users,
        n_history=_count_setting(n_history),
        n_query=_count_setting(n_query),
        feedback=feedback,
        history_split=history_split,
        query_split=query_split,
        **_option_settings(
            feedback,
            temperature=temperature,
            noise=noise,
            reward_models=reward_models,
            responses=responses,
            scores=scores,
            only_disagreeing=only_disagreeing,
            query_feedback=query_feedback,
        ),
    )
    return Bunch(
        X=X,
        y=y,
        is_query=np.isnan(y),
        oracle=oracle,
        corpus=corpus,
        query_comparisons=query_comparisons,
        settings=settings,
    )


def _option_settings(feedback, **options):
    """The options used, for printing beside the data's sizes: only where they matter."""
    settings = {}
    if feedback == "bradley_terry":
        settings["temperature"] = options["temperature"]
    if feedback == "reward":
        settings["noise"] = options["noise"]
    defaults = dict(
        reward_models=None,
        responses=None,
        scores="normalised",
        only_disagreeing=False,
        query_feedback=None,
    )
    settings.update(
        {
            key: options[key]
            for key, default in defaults.items()
            if options[key] != default
        }
    )
    return settings


def _check_protocol(
    feedback, temperature, noise, scores, only_disagreeing, query_feedback
):
    """Validate the labeling options; raise naming the parameter at fault."""
    if feedback not in FEEDBACK_PROTOCOLS:
        raise ValueError(
            f"Unknown feedback protocol {feedback!r}; choose one of {FEEDBACK_PROTOCOLS}."
        )
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")
    if not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}.")
    if scores not in SCORE_SCALES:
        raise ValueError(f"scores must be one of {SCORE_SCALES}; got {scores!r}.")
    if query_feedback not in (None, *_QUERY_PAIR_PROTOCOLS):
        raise ValueError(
            f"query_feedback must be None or one of {_QUERY_PAIR_PROTOCOLS}; "
            f"got {query_feedback!r}."
        )
    if only_disagreeing and feedback not in _RANDOM_PAIR_PROTOCOLS:
        raise ValueError(
            f"only_disagreeing=True restricts random pairs: feedback must be one of "
            f"{_RANDOM_PAIR_PROTOCOLS}; got {feedback!r}."
        )


def _check_count(value, name, n_users):
    """A per-user count as an int64 array of shape (n_users,), validated."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be non-negative; got {value}.")
        return np.full(n_users, int(value), dtype=np.int64)
    counts = np.asarray(value)
    if counts.ndim == 0 or counts.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be an integer or an array of integers; got {value!r}."
        )
    if counts.shape != (n_users,):
        raise ValueError(
            f"{name} must be an integer or one count per user, shape ({n_users},); "
            f"got shape {counts.shape}."
        )
    if counts.min() < 0:
        raise ValueError(f"{name} must be non-negative; got {int(counts.min())}.")
    return counts.astype(np.int64)


def _count_setting(counts):
    """A count for ``settings``: one int, or ``{count: n_users}`` when users differ."""
    values, n_users = np.unique(counts, return_counts=True)
    if values.size == 1:
        return int(values[0])
    return {int(v): int(n) for v, n in zip(values, n_users)}


def _derive_corpus(corpus, reward_models, responses, scores):
    """The corpus the users see: chosen reward models, response slots and scale."""
    if reward_models is None and responses is None and scores == "normalised":
        return corpus
    names = corpus.reward_models if reward_models is None else tuple(reward_models)
    unknown = [name for name in names if name not in corpus.reward_models]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"reward_models must name distinct reward models of the corpus, "
            f"{list(corpus.reward_models)}; got {reward_models!r}."
        )
    slots = (
        np.arange(corpus.n_responses) if responses is None else np.asarray(responses)
    )
    if (
        slots.ndim != 1
        or slots.dtype.kind not in "iu"
        or np.unique(slots).size != slots.size
        or slots.size < 2
        or slots.min() < 0
        or slots.max() >= corpus.n_responses
    ):
        raise ValueError(
            f"responses must be at least 2 distinct response ids in "
            f"[0, {corpus.n_responses}); got {responses!r}."
        )
    columns = [corpus.reward_models.index(name) for name in names]
    rewards = corpus.rewards[:, slots][:, :, columns].astype(np.float64)
    if scores == "raw":
        missing = [name for name in names if name not in REWARD_MODEL_STATS]
        if missing:
            raise ValueError(
                f"scores='raw' needs the published mean and sd of each reward model; "
                f"{missing} have none in REWARD_MODEL_STATS."
            )
        mean = np.array([REWARD_MODEL_STATS[name][1] for name in names])
        sd = np.array([REWARD_MODEL_STATS[name][2] for name in names])
        rewards = rewards * sd + mean
    return Corpus(
        corpus.prompts,
        corpus.responses[:, slots],
        rewards,
        reward_models=names,
        response_models=corpus.response_models[:, slots],
        split=corpus.split,
        subset=corpus.subset,
        name=corpus.name,
    )


def _disagreeing_pairs(rewards):
    """Pairs (j < k) of each prompt that not all reward models strictly order alike.

    ``rewards`` has shape (n_prompts, K, B); returns a bool mask (n_prompts, K, K).
    """
    diff = rewards[:, :, None, :] - rewards[:, None, :, :]
    agree = (diff > 0).all(axis=-1) | (diff < 0).all(axis=-1)
    upper = np.triu(np.ones(rewards.shape[1:2] * 2, dtype=bool), k=1)
    return upper & ~agree


def _prompt_pools(corpus, history_split, query_split, allowed):
    """History and query prompt pools, without prompts that have no allowed pair."""
    history_pool = corpus.prompt_ids(history_split)
    query_pool = corpus.prompt_ids(query_split)
    if allowed is not None:
        has_pair = allowed.any(axis=(1, 2))
        history_pool = history_pool[has_pair[history_pool]]
        query_pool = query_pool[has_pair[query_pool]]
    return history_pool, query_pool


def _check_pool_sizes(history_need, query_need, same_pool):
    """Raise when a pool holds fewer prompts than one user needs from it."""
    needed = {**history_need, **query_need}
    if same_pool:
        ((split, (n_history, available)),) = history_need.items()
        ((n_query, _),) = query_need.values()
        needed = {split: (n_history + n_query, available)}
    for split, (count, available) in needed.items():
        if count > available:
            raise ValueError(
                f"Each user needs {count} distinct prompts from split {split!r}, "
                f"which has only {available}; lower n_history or n_query."
            )


def _draw_user_prompts(
    corpus, rng, n_history, n_query, history_split, query_split, allowed
):
    """Each user's distinct history and query prompts, as flat (users, prompts)."""
    history_pool, query_pool = _prompt_pools(
        corpus, history_split, query_split, allowed
    )
    same_pool = history_split == query_split
    _check_pool_sizes(
        {history_split: (n_history.max(), history_pool.size)},
        {query_split: (n_query.max(), query_pool.size)},
        same_pool,
    )
    history, query = _draw_prompts(
        rng,
        n_history.size,
        history_pool,
        int(n_history.max()),
        query_pool,
        int(n_query.max()),
        same_pool,
    )
    return _flatten(history, n_history), _flatten(query, n_query)


def _draw_prompts(
    rng, n_users, history_pool, n_history, query_pool, n_query, same_pool
):
    """Distinct prompts per user: (n_users, n_history) and (n_users, n_query) ids."""
    if same_pool:
        both = _choose_distinct(rng, n_users, history_pool, n_history + n_query)
        return both[:, :n_history], both[:, n_history:]
    history = _choose_distinct(rng, n_users, history_pool, n_history)
    query = _choose_distinct(rng, n_users, query_pool, n_query)
    return history, query


def _flatten(draws, counts):
    """(user, prompt) of each user's first ``counts[user]`` drawn prompts, flat."""
    n_users, width = draws.shape
    keep = (np.arange(width)[None, :] < counts[:, None]).reshape(-1)
    return np.repeat(np.arange(n_users), width)[keep], draws.reshape(-1)[keep]


def _candidate_rows(users, prompts, n_responses):
    """All K unlabeled candidates of each (user, prompt)."""
    return (
        np.repeat(users, n_responses),
        np.repeat(prompts, n_responses),
        np.tile(np.arange(n_responses), users.size),
        np.full(users.size * n_responses, np.nan),
    )


def _assemble(frames):
    """X and y from row frames, grouped by user: history first, then query."""
    user_id, prompt_id, response_id, y = (np.concatenate(c) for c in zip(*frames))
    order = np.argsort(user_id, kind="stable")
    X = pd.DataFrame(
        {
            "user_id": user_id[order].astype(np.int64),
            "prompt_id": prompt_id[order].astype(np.int64),
            "response_id": response_id[order].astype(np.int64),
        }
    )
    return X, y[order]


def _comparisons(protocol, users, prompts, oracle, rng, allowed):
    """One labeled comparison per (user, prompt): user, prompt, chosen and rejected."""
    utility = oracle.candidate_rewards(users, prompts)
    pair_mask = None if allowed is None else allowed[prompts]
    _, _, response, y = _label(
        protocol, users, prompts, utility, rng, 1.0, 0.0, pair_mask
    )
    response, first_wins = response.reshape(-1, 2), y.reshape(-1, 2)[:, 0] == 1
    return pd.DataFrame(
        {
            "user_id": users.astype(np.int64),
            "prompt_id": prompts.astype(np.int64),
            "chosen_id": np.where(first_wins, response[:, 0], response[:, 1]),
            "rejected_id": np.where(first_wins, response[:, 1], response[:, 0]),
        }
    )


def _choose_distinct(rng, n_users, pool, size):
    """``size`` distinct draws from ``pool`` for each user, shape (n_users, size)."""
    if size == 0:
        return np.empty((n_users, 0), dtype=np.int64)
    # Draw with replacement and redraw the duplicates: far cheaper than a full
    # permutation of the pool per user when size << len(pool).
    if size * 4 > pool.size:
        return np.stack([rng.choice(pool, size, replace=False) for _ in range(n_users)])
    draws = rng.randint(pool.size, size=(n_users, size))
    while True:
        sorted_draws = np.sort(draws, axis=1)
        duplicated = (sorted_draws[:, 1:] == sorted_draws[:, :-1]).any(axis=1)
        if not duplicated.any():
            break
        for user in np.flatnonzero(duplicated):
            draws[user] = rng.choice(pool.size, size, replace=False)
    return pool[draws]


def _label(feedback, users, prompts, utility, rng, temperature, noise, pair_mask=None):
    """Rows and labels of one protocol for (user, prompt) pairs with utilities (n, K).

    ``pair_mask`` (n, K, K), when given, holds the pairs a random pair is drawn from.
    """
    n_pairs, n_responses = utility.shape
    # argmax / argmin return the first extreme, so ties go to the lower response_id.
    best = utility.argmax(axis=1)
    worst = utility.argmin(axis=1)
    if feedback in ("best_worst", "ranking"):
        response = np.tile(np.arange(n_responses), n_pairs)
        if feedback == "best_worst":
            y = np.full((n_pairs, n_responses), 0.5)
            y[np.arange(n_pairs), worst] = 0.0
            y[np.arange(n_pairs), best] = 1.0
        else:
            # Stable sort on the negated utility: ties keep the lower id higher.
            order = np.argsort(-utility, axis=1, kind="stable")
            y = np.empty((n_pairs, n_responses))
            np.put_along_axis(
                y, order, np.arange(n_responses - 1, -1, -1, dtype=float)[None], axis=1
            )
        return (
            np.repeat(users, n_responses),
            np.repeat(prompts, n_responses),
            response,
            y.reshape(-1),
        )
    if feedback == "best_worst_pair":
        first, second = best, worst
        y_first = np.ones(n_pairs)
    elif feedback == "reward":
        chosen = rng.randint(n_responses, size=n_pairs)
        reward = utility[np.arange(n_pairs), chosen]
        if noise > 0:
            reward = reward + rng.normal(scale=noise, size=n_pairs)
        return users, prompts, chosen, reward
    else:
        first, second = _random_pairs(rng, n_pairs, n_responses, pair_mask)
        margin = (
            utility[np.arange(n_pairs), first] - utility[np.arange(n_pairs), second]
        )
        if feedback == "random_pair":
            y_first = ((margin > 0) | ((margin == 0) & (first < second))).astype(float)
        else:
            p_first = 1.0 / (1.0 + np.exp(-np.clip(margin / temperature, -50, 50)))
            y_first = (rng.random_sample(n_pairs) < p_first).astype(float)
    return (
        np.repeat(users, 2),
        np.repeat(prompts, 2),
        np.column_stack([first, second]).reshape(-1),
        np.column_stack([y_first, 1.0 - y_first]).reshape(-1),
    )


def _random_pairs(rng, n_pairs, n_responses, pair_mask):
    """Two distinct candidates per row: uniform, or uniform among ``pair_mask``."""
    if pair_mask is None:
        first = rng.randint(n_responses, size=n_pairs)
        # An offset in [1, K) makes the second candidate distinct and uniform.
        second = (first + rng.randint(1, n_responses, size=n_pairs)) % n_responses
        return first, second
    allowed = pair_mask.reshape(n_pairs, -1)
    pick = (rng.random_sample(n_pairs) * allowed.sum(axis=1)).astype(np.int64)
    # The pick-th allowed pair (from 0) is where the running count passes pick.
    index = (np.cumsum(allowed, axis=1) <= pick[:, None]).sum(axis=1)
    return np.divmod(index, n_responses)
