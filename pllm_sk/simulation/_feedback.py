"""Simulated feedback: each user's labeled history and unlabeled query candidates."""

import numbers

import numpy as np
import pandas as pd
from sklearn.utils import Bunch, check_random_state

from ._oracle import PreferenceOracle

__all__ = ["FEEDBACK_PROTOCOLS", "simulate_feedback"]

FEEDBACK_PROTOCOLS = (
    "best_worst",
    "best_worst_pair",
    "random_pair",
    "bradley_terry",
    "reward",
    "ranking",
)


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

    Parameters
    ----------
    corpus : Corpus
    weights : array-like of shape (n_users, n_reward_models)
        True user weights (for example from :func:`sample_users`); ``user_id`` is the
        row index.
    n_history : int, default=50
        Labeled prompts per user; 0 gives users with query rows only.
    n_query : int, default=1
        Unlabeled query prompts per user.
    feedback : str, default="best_worst"
        One of :data:`FEEDBACK_PROTOCOLS`.
    history_split, query_split : {"train", "test"} or None, default="train", "test"
        Where history and query prompts come from; ``None`` means all prompts. When
        both come from the same prompts, a user's history and query prompts differ.
    temperature : float, default=1.0
        Choice temperature of the ``"bradley_terry"`` protocol, > 0.
    noise : float, default=0.0
        Standard deviation of the Gaussian noise of the ``"reward"`` protocol, >= 0.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    data : Bunch
        ``X`` (DataFrame with ``user_id``, ``prompt_id``, ``response_id``), ``y``
        (ndarray, NaN on query rows), ``is_query`` (bool mask of query rows),
        ``oracle`` (:class:`PreferenceOracle`, the only holder of the true weights),
        and ``settings`` (the arguments used, for printing beside results).

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
    oracle = PreferenceOracle(corpus, weights)
    n_users, n_responses = oracle.n_users, corpus.n_responses
    for name, value in (("n_history", n_history), ("n_query", n_query)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer; got {value!r}.")
        if value < 0:
            raise ValueError(f"{name} must be non-negative; got {value}.")
    if n_history + n_query == 0:
        raise ValueError("n_history and n_query are both 0: no rows to simulate.")
    if feedback not in FEEDBACK_PROTOCOLS:
        raise ValueError(
            f"Unknown feedback protocol {feedback!r}; choose one of {FEEDBACK_PROTOCOLS}."
        )
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}.")
    if not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}.")
    history_pool = corpus.prompt_ids(history_split)
    query_pool = corpus.prompt_ids(query_split)
    same_pool = history_split == query_split
    needed = {history_split: n_history, query_split: n_query}
    if same_pool:
        needed = {history_split: n_history + n_query}
    for split, count in needed.items():
        available = corpus.prompt_ids(split).size
        if count > available:
            raise ValueError(
                f"Each user needs {count} distinct prompts from split {split!r}, "
                f"which has only {available}; lower n_history or n_query."
            )
    rng = check_random_state(random_state)

    history, query = _draw_prompts(
        rng, n_users, history_pool, n_history, query_pool, n_query, same_pool
    )
    frames = []
    if n_history:
        users = np.repeat(np.arange(n_users), n_history)
        prompts = history.reshape(-1)
        utility = oracle.candidate_rewards(users, prompts)
        frames.append(
            _label(feedback, users, prompts, utility, rng, temperature, noise)
        )
    if n_query:
        users = np.repeat(np.arange(n_users), n_query)
        prompts = query.reshape(-1)
        frames.append(
            (
                np.repeat(users, n_responses),
                np.repeat(prompts, n_responses),
                np.tile(np.arange(n_responses), users.size),
                np.full(users.size * n_responses, np.nan),
            )
        )
    user_id, prompt_id, response_id, y = (np.concatenate(c) for c in zip(*frames))
    # Rows grouped by user: history first, then query, as a user's log would read.
    order = np.argsort(user_id, kind="stable")
    X = pd.DataFrame(
        {
            "user_id": user_id[order].astype(np.int64),
            "prompt_id": prompt_id[order].astype(np.int64),
            "response_id": response_id[order].astype(np.int64),
        }
    )
    y = y[order]
    settings = dict(
        corpus=corpus.name,
        n_users=n_users,
        n_history=n_history,
        n_query=n_query,
        feedback=feedback,
        history_split=history_split,
        query_split=query_split,
    )
    if feedback == "bradley_terry":
        settings["temperature"] = temperature
    if feedback == "reward":
        settings["noise"] = noise
    return Bunch(X=X, y=y, is_query=np.isnan(y), oracle=oracle, settings=settings)


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


def _label(feedback, users, prompts, utility, rng, temperature, noise):
    """Rows and labels of one protocol for (user, prompt) pairs with utilities (n, K)."""
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
        first = rng.randint(n_responses, size=n_pairs)
        # An offset in [1, K) makes the second candidate distinct and uniform.
        second = (first + rng.randint(1, n_responses, size=n_pairs)) % n_responses
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
