"""Active cold start: which prompts to ask a new user about."""

import copy
import numbers

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ..utils import Interval, StrOptions, validate_arguments
from ._feedback import _choose_distinct, _label
from ._oracle import PreferenceOracle
from ._policies import preference_uncertainty
from ._rows import _candidate_rows, _split_pipeline, _transform

__all__ = ["ACTIVE_STRATEGIES", "active_cold_start"]

ACTIVE_STRATEGIES = ("information", "random")


def active_cold_start(
    estimator,
    oracle,
    users,
    *,
    n_answers=(1, 3, 5, 10),
    strategy="information",
    n_candidates=50,
    n_draws=32,
    n_query=3,
    support_split="train",
    query_split="test",
    random_state=None,
):
    """Gap closed for new users after ``n`` answers to prompts chosen for them.

    The :class:`~pllm_sk.model_selection.ColdStartSplit` setting, with the
    support prompts chosen one at a time instead of at random. At each answer,
    every user is offered ``n_candidates`` prompts they have not answered (from
    ``support_split``, drawn at random); the strategy picks one; the user labels
    its candidates best / worst (the paper's feedback, as in
    :func:`simulate_feedback`) and the estimator learns it (``partial_fit``, or
    ``fit`` on all the answers when it has none). After each number of answers
    in ``n_answers`` the users' query prompts (``n_query`` each, from
    ``query_split``, all K candidates) are scored as a personal scorer does.

    - ``"information"``: the prompt whose candidates' order the posterior is
      least sure of: the mean over its candidate pairs of ``p (1 - p)`` (see
      :func:`preference_uncertainty`), from ``n_draws`` draws of ``sample_y``;
      the rule of :class:`InformationSeekingPolicy`.
    - ``"random"``: the first of the offered prompts (a uniform draw).

    For a fixed ``random_state`` both strategies are offered the same prompts and
    scored on the same query prompts, so their results compare pairwise.

    Parameters
    ----------
    estimator : fitted ranker or Pipeline
        Fitted on historical users, as for :meth:`InteractionEnvironment.run`.
    oracle : PreferenceOracle
    users : array-like of int
        The new users (ids of the oracle that the estimator has not seen).
    n_answers : sequence of int, default=(1, 3, 5, 10)
        Numbers of answers after which to score.
    strategy : {"information", "random"}, default="information"
    n_candidates : int, default=50
        Prompts offered per answer, >= 1.
    n_draws : int, default=32
        Posterior draws of ``"information"``, >= 2.
    n_query : int, default=3
        Query prompts per user.
    support_split, query_split : {"train", "test"} or None, default="train", "test"
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    scores : DataFrame
        One row per number of answers: ``n_answers``, ``gap_closed``, ``top1``
        and ``reward`` (as :func:`~pllm_sk.model_selection.make_personal_scorer`
        defines them, over all users' query prompts), and ``strategy``.
    """
    from ..model_selection import make_personal_scorer

    validate_arguments(
        _CONSTRAINTS,
        dict(
            oracle=oracle,
            users=users,
            n_answers=n_answers,
            strategy=strategy,
            n_candidates=n_candidates,
            n_draws=n_draws,
            n_query=n_query,
            support_split=support_split,
            query_split=query_split,
            random_state=random_state,
        ),
        "active_cold_start",
    )
    checkpoints = sorted({int(n) for n in n_answers})
    if not checkpoints or checkpoints[0] < 1:
        raise ValueError(f"n_answers must hold positive integers; got {n_answers!r}.")
    features, ranker = _split_pipeline(estimator)
    check_is_fitted(ranker)
    if strategy == "information" and not hasattr(ranker, "sample_y"):
        raise TypeError(
            f"strategy='information' needs posterior draws from sample_y, and "
            f"{type(ranker).__name__} has no sample_y method."
        )
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    offers, queries, draw_seeds = _draw_offers_and_queries(
        oracle, users.size, checkpoints[-1], n_candidates, n_query,
        support_split, query_split, random_state,
    )
    X_query = _transform(
        features,
        _candidate_rows(
            np.repeat(users, n_query), queries.reshape(-1), oracle.corpus.n_responses
        ),
    )
    scorer = make_personal_scorer(oracle, ["gap_closed", "top1", "reward"])
    learner = _AnswerLearner(ranker, features)
    results = []
    for answer in range(checkpoints[-1]):
        offered = offers[:, answer]
        pick = np.zeros(users.size, dtype=np.int64)
        if strategy == "information":
            pick = _most_uncertain(
                learner.ranker, features, users, offered, n_draws, int(draw_seeds[answer]),
                oracle.corpus.n_responses,
            )
        learner.learn(*_answer(oracle, users, offered[np.arange(users.size), pick]))
        if answer + 1 in checkpoints:
            result = scorer(learner.ranker, X_query, None)
            results.append(dict(strategy=strategy, n_answers=answer + 1, **result))
    return pd.DataFrame(results)


_CONSTRAINTS = {
    "oracle": [PreferenceOracle],
    "users": ["array-like"],
    "n_answers": ["array-like"],
    "strategy": [StrOptions(set(ACTIVE_STRATEGIES))],
    "n_candidates": [Interval(numbers.Integral, 1, None, closed="left")],
    "n_draws": [Interval(numbers.Integral, 2, None, closed="left")],
    "n_query": [Interval(numbers.Integral, 1, None, closed="left")],
    "support_split": [StrOptions({"train", "test"}), None],
    "query_split": [StrOptions({"train", "test"}), None],
    "random_state": ["random_state"],
}


def _draw_offers_and_queries(
    oracle, n_users, n_max, n_candidates, n_query, support_split, query_split, random_state
):
    """Everything random, drawn up front so that both strategies get the same.

    Returns the offered prompts, shape (n_users, n_max, n_candidates), the query
    prompts, shape (n_users, n_query), and one ``sample_y`` seed per answer.
    """
    rng = np.random.RandomState(np.random.MT19937(np.random.SeedSequence(
        check_random_state(random_state).randint(np.iinfo(np.int32).max)
    )))
    pool = oracle.corpus.prompt_ids(support_split)
    if n_max * n_candidates > pool.size:
        raise ValueError(
            f"{n_max} answers with n_candidates={n_candidates} fresh prompts each need "
            f"{n_max * n_candidates} distinct prompts per user; support_split="
            f"{support_split!r} has {pool.size}. Lower n_candidates or n_answers."
        )
    offers = _choose_distinct(rng, n_users, pool, n_max * n_candidates).reshape(
        n_users, n_max, n_candidates
    )
    queries = _choose_distinct(rng, n_users, oracle.corpus.prompt_ids(query_split), n_query)
    draw_seeds = rng.randint(np.iinfo(np.int32).max, size=n_max)
    return offers, queries, draw_seeds


def _most_uncertain(ranker, features, users, offered, n_draws, seed, n_responses):
    """Position of the offered prompt whose candidates' order is least certain, per user."""
    n_users, n_candidates = offered.shape
    X = _transform(
        features,
        _candidate_rows(np.repeat(users, n_candidates), offered.reshape(-1), n_responses),
    )
    draws = ranker.sample_y(X, n_draws, random_state=seed)
    uncertainty = preference_uncertainty(
        draws.reshape(n_users * n_candidates, n_responses, n_draws)
    )
    upper = np.triu_indices(n_responses, k=1)
    score = uncertainty[:, upper[0], upper[1]].mean(axis=1)
    return np.argmax(score.reshape(n_users, n_candidates), axis=1)


def _answer(oracle, users, prompts):
    """Each user's best / worst labels of the candidates of their prompt: rows and y."""
    utility = oracle.candidate_rewards(users, prompts)
    user_id, prompt_id, response_id, y = _label(
        "best_worst", users, prompts, utility, None, 1.0, 0.0
    )
    rows = pd.DataFrame(
        {"user_id": user_id, "prompt_id": prompt_id, "response_id": response_id}
    )
    return rows, y


class _AnswerLearner:
    """The estimator as it learns the answers: ``partial_fit``, or ``fit`` on all of them.

    The ranker given is the population: it is copied, never changed.
    """

    def __init__(self, population, features):
        self.population = population
        self.features = features
        self.ranker = copy.deepcopy(population)
        self.answered = []

    def learn(self, rows, y):
        self.answered.append((rows, y))
        if hasattr(self.ranker, "partial_fit"):
            self.ranker.partial_fit(_transform(self.features, rows), y)
            return
        self.ranker = clone(self.population).fit(
            _transform(
                self.features, pd.concat([r for r, _ in self.answered], ignore_index=True)
            ),
            np.concatenate([labels for _, labels in self.answered]),
        )
