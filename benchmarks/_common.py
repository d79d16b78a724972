"""What the benchmark scripts share: the methods by name, the feature steps of each
track, the simulated world and the gap closed of choice outcomes (their bootstrap is
:func:`pllm_sk.simulation.paired_bootstrap`).

Every script imports from here (``from _common import ...``: a script's folder is
on ``sys.path`` when it runs) and composes the public API of ``pllm_sk``.
"""

import numpy as np
import pandas as pd

from pllm_sk.baselines import BayesRanker, OracleRanker, PerUserRanker, PopulationRanker
from pllm_sk.collaborative import LowRankRanker
from pllm_sk.datasets import make_personalllm
from pllm_sk.features import EmbeddingFeatures, RewardDistiller, RewardFeatures
from pllm_sk.icl import InContextRanker
from pllm_sk.meta import MetaRewardHead
from pllm_sk.neighbors import UserKNNRanker
from pllm_sk.simulation import PreferenceOracle, sample_users, simulate_feedback

TRACKS = ("rewards", "ids", "embeddings", "distilled")

# name -> (estimator class, the tracks it runs on). Bayes and Oracle read the
# reward features; InContext reads the texts and ignores feature columns, so one
# track is enough.
METHODS = {
    "Population": (PopulationRanker, TRACKS),
    "PerUser": (PerUserRanker, TRACKS),
    "UserKNN": (UserKNNRanker, TRACKS),
    "LowRank": (LowRankRanker, TRACKS),
    "MetaHead": (MetaRewardHead, TRACKS),
    "Bayes": (BayesRanker, ("rewards",)),
    "Oracle": (OracleRanker, ("rewards",)),
    "InContext": (InContextRanker, ("ids",)),
}

# The columns of pllm_sk.model_selection.choice_outcomes that gap closed reads.
GAP_COLUMNS = ("reward", "zero_shot_reward", "best_reward")


def make_method(name, random_state=0, **params):
    """The unfitted ranker ``name`` of :data:`METHODS`, built with ``params``.

    ``random_state`` is set where the ranker takes one. Only reference methods
    (Bayes, Oracle) may be given what the world hides: its alpha, its oracle.
    """
    estimator = METHODS[name][0](**params)
    if "random_state" in estimator.get_params():
        estimator.set_params(random_state=random_state)
    return estimator


def feature_steps(track, corpus, *, embedder=None, parts=("response",), n_components=32):
    """The feature steps of ``track``, to place before a method in a Pipeline.

    ``embedder``, ``parts`` and ``n_components`` configure the ``embeddings``
    track (``embedder`` the ``distilled`` one too).
    """
    if track == "rewards":
        return [RewardFeatures(corpus)]
    if track == "ids":
        return []
    if track == "embeddings":
        return [
            EmbeddingFeatures(
                corpus, embedder=embedder, parts=parts, n_components=n_components
            )
        ]
    if track == "distilled":
        return [RewardDistiller(corpus, embedder=embedder, validation_fraction=None)]
    raise ValueError(f"Unknown track {track!r}; choose from {TRACKS}.")


def simulate_world(
    corpus,
    *,
    n_history_users,
    n_test_users,
    alpha,
    seed,
    n_history=50,
    n_labeled=1,
    n_query=1,
    query_splits=("test",),
    **protocol,
):
    """Dirichlet users and their feedback: historical users, then test users.

    Users' weights are ``sample_users(n_history_users + n_test_users, alpha,
    random_state=seed)``, historical users first. Historical users label
    ``n_history`` train prompts each (``random_state=seed``); test users label
    ``n_labeled`` train prompts and bring ``n_query`` unlabeled query prompts from
    each split of ``query_splits`` (``random_state=seed + 1`` in every split).
    ``protocol`` (``feedback``, ``temperature``) goes to
    :func:`~pllm_sk.simulation.simulate_feedback`.

    Returns
    -------
    oracle : PreferenceOracle
        All users, historical ones first.
    history : Bunch
        The historical users' feedback (``X``, ``y``).
    tests : dict
        ``{query_split: feedback}`` of the test users, numbered after the
        historical users.
    """
    weights = sample_users(
        n_history_users + n_test_users, alpha=alpha, random_state=seed
    )
    history = simulate_feedback(
        corpus,
        weights[:n_history_users],
        n_history=n_history,
        n_query=0,
        random_state=seed,
        **protocol,
    )
    tests = {}
    for query_split in query_splits:
        test = simulate_feedback(
            corpus,
            weights[n_history_users:],
            n_history=n_labeled,
            n_query=n_query,
            query_split=query_split,
            random_state=seed + 1,
            **protocol,
        )
        test.X["user_id"] += n_history_users
        tests[query_split] = test
    return PreferenceOracle(corpus, weights), history, tests


def synthetic_world(args, n_history_users, n_test_users, alpha, **options):
    """A synthetic corpus of ``args.n_prompts`` prompts and its simulated world.

    The corpus is ``make_personalllm(args.n_prompts, random_state=args.seed)``;
    the world is :func:`simulate_world` on it with ``seed=args.seed`` and
    ``options`` (``n_history``, ``n_labeled``, ...). Returns ``(corpus, oracle,
    history, tests)``.
    """
    corpus = make_personalllm(args.n_prompts, random_state=args.seed)
    oracle, history, tests = simulate_world(
        corpus,
        n_history_users=n_history_users,
        n_test_users=n_test_users,
        alpha=alpha,
        seed=args.seed,
        **options,
    )
    return corpus, oracle, history, tests


def stack(*parts):
    """The rows of several feedback sets as one ``(X, y)``, in order."""
    X = pd.concat([part.X for part in parts], ignore_index=True)
    return X, np.concatenate([part.y for part in parts])


def gap_columns(outcomes):
    """The :data:`GAP_COLUMNS` of ``choice_outcomes`` rows, shape (3, n_groups)."""
    return np.stack([outcomes[column].to_numpy() for column in GAP_COLUMNS])


def gap_closed(reward, zero_shot_reward, best_reward):
    """``make_personal_scorer``'s gap closed: a ratio of means over the groups."""
    zero_shot = zero_shot_reward.mean()
    return (reward.mean() - zero_shot) / (best_reward.mean() - zero_shot)
