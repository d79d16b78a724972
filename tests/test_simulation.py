"""Simulated users, feedback protocols and the oracle."""

import numpy as np
import pytest

from pllm_sk.datasets import REWARD_MODELS
from pllm_sk.simulation import (
    FEEDBACK_PROTOCOLS,
    PreferenceOracle,
    sample_users,
    simulate_feedback,
)


def one_hot_users(n_reward_models=10):
    return np.eye(n_reward_models)


def test_sample_users_on_the_simplex_and_seeded():
    weights = sample_users(500, alpha=0.05, random_state=0)
    assert weights.shape == (500, 10)
    assert weights.min() >= 0
    np.testing.assert_allclose(weights.sum(axis=1), 1)
    np.testing.assert_array_equal(
        weights, sample_users(500, alpha=0.05, random_state=0)
    )
    assert not np.array_equal(weights, sample_users(500, alpha=0.05, random_state=1))
    # Small alpha puts users near one reward model; large alpha makes them alike.
    assert np.median(weights.max(axis=1)) > 0.8
    assert sample_users(500, alpha=100.0, random_state=0).max() < 0.3


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_users=0), ValueError, "n_users must be at least 1"),
        (dict(n_users=2.5), TypeError, "n_users must be an integer"),
        (dict(n_users=3, alpha=0.0), ValueError, "alpha must be a positive"),
        (dict(n_users=3, alpha=-1), ValueError, "alpha must be a positive"),
    ],
)
def test_sample_users_bad_input(kwargs, error, message):
    with pytest.raises(error, match=message):
        sample_users(**kwargs)


def test_oracle_uses_weights_in_reward_model_order(corpus):
    # A user with all weight on one reward model must be scored by that model's column.
    oracle = PreferenceOracle(corpus, one_hot_users())
    prompts = np.arange(corpus.n_prompts)
    for b, name in enumerate(REWARD_MODELS):
        users = np.full(corpus.n_prompts, b)
        utility = oracle.candidate_rewards(users, prompts)
        np.testing.assert_allclose(
            utility, corpus.rewards[:, :, b], rtol=1e-6, err_msg=name
        )


def test_oracle_best_response_matches_brute_force(corpus):
    weights = sample_users(7, random_state=3)
    oracle = PreferenceOracle(corpus, weights)
    users, prompts = np.meshgrid(np.arange(7), np.arange(corpus.n_prompts))
    best = oracle.best_response(users.ravel(), prompts.ravel())
    for user, prompt, chosen in zip(users.ravel(), prompts.ravel(), best):
        rewards = [float(weights[user] @ corpus.rewards[prompt, k]) for k in range(8)]
        assert chosen == int(np.argmax(rewards))
    np.testing.assert_allclose(
        oracle.reward(users.ravel(), prompts.ravel(), best),
        oracle.candidate_rewards(users.ravel(), prompts.ravel()).max(axis=1),
    )


def test_oracle_rejects_bad_weights_and_unknown_users(corpus):
    with pytest.raises(ValueError, match="10 reward models"):
        PreferenceOracle(corpus, np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="simplex"):
        PreferenceOracle(corpus, np.full((2, 10), 0.5))
    oracle = PreferenceOracle(corpus, sample_users(2, random_state=0))
    with pytest.raises(ValueError, match="user_id=2 is unknown"):
        oracle.reward([2], [0], [0])


def test_best_worst_labels_say_what_the_user_said(corpus):
    weights = sample_users(30, random_state=0)
    data = simulate_feedback(corpus, weights, n_history=5, n_query=2, random_state=0)
    X, y = data.X, data.y
    assert X.shape[0] == 30 * (5 + 2) * 8
    labeled = ~data.is_query
    utility = data.oracle.reward(*(X[labeled][c].to_numpy() for c in X.columns))
    groups = X[labeled].groupby(["user_id", "prompt_id"]).indices
    for rows in groups.values():
        assert sorted(y[labeled][rows]) == [0.0] + [0.5] * 6 + [1.0]
        assert y[labeled][rows][np.argmax(utility[rows])] == 1.0
        assert y[labeled][rows][np.argmin(utility[rows])] == 0.0
    # History from train, queries from test, every query row unlabeled.
    assert set(corpus.split[X.prompt_id[labeled]]) == {"train"}
    assert set(corpus.split[X.prompt_id[data.is_query]]) == {"test"}
    assert X[data.is_query].groupby("user_id").size().eq(2 * 8).all()


def simulate(corpus, n_users, **options):
    """``simulate_feedback`` for ``sample_users(n_users)``, both with random_state=0."""
    return simulate_feedback(
        corpus, sample_users(n_users, random_state=0), random_state=0, **options
    )


def test_history_prompts_are_distinct_per_user(corpus):
    data = simulate(corpus, 50, n_history=40, n_query=20)
    per_user = (
        data.X.drop_duplicates(["user_id", "prompt_id"]).groupby("user_id").size()
    )
    assert (per_user == 60).all()


@pytest.mark.parametrize("feedback", ["random_pair", "bradley_terry", "reward"])
def test_every_response_slot_can_be_drawn(corpus, feedback):
    data = simulate(corpus, 200, n_history=10, n_query=0, feedback=feedback)
    assert sorted(np.unique(data.X.response_id)) == list(range(8))
    if feedback != "reward":
        chosen = data.X.response_id[data.y == 1]
        assert sorted(np.unique(chosen)) == list(range(8))


def test_best_worst_pair_can_choose_the_last_slot(corpus):
    # A user on one reward model whose best is slot 8 for some prompt must name it.
    rewards_b0 = corpus.rewards[corpus.prompt_ids("train"), :, 0]
    assert (rewards_b0.argmax(axis=1) == 7).any()
    data = simulate_feedback(
        corpus,
        one_hot_users()[:1],
        n_history=40,
        n_query=0,
        feedback="best_worst_pair",
        random_state=0,
    )
    assert data.X.shape[0] == 80
    best = data.X.response_id[data.y == 1].to_numpy()
    expected = corpus.rewards[data.X.prompt_id[data.y == 1], :, 0].argmax(axis=1)
    np.testing.assert_array_equal(best, expected)
    assert 7 in best


def test_ranking_and_pair_labels_follow_true_rewards(corpus):
    weights = sample_users(20, random_state=1)
    ranking = simulate_feedback(
        corpus, weights, n_history=5, n_query=0, feedback="ranking", random_state=0
    )
    utility = ranking.oracle.reward(
        *(ranking.X[c].to_numpy() for c in ranking.X.columns)
    )
    for rows in ranking.X.groupby(["user_id", "prompt_id"]).indices.values():
        np.testing.assert_array_equal(
            np.argsort(np.argsort(utility[rows])), ranking.y[rows]
        )
    pairs = simulate_feedback(
        corpus, weights, n_history=5, n_query=0, feedback="random_pair", random_state=0
    )
    utility = pairs.oracle.reward(*(pairs.X[c].to_numpy() for c in pairs.X.columns))
    chosen, rejected = utility[pairs.y == 1], utility[pairs.y == 0]
    assert (chosen >= rejected).all()


def test_bradley_terry_choice_is_noisy_and_tracks_rewards(corpus):
    weights = sample_users(300, random_state=2)
    data = simulate_feedback(
        corpus,
        weights,
        n_history=20,
        n_query=0,
        feedback="bradley_terry",
        temperature=0.5,
        random_state=0,
    )
    utility = data.oracle.reward(*(data.X[c].to_numpy() for c in data.X.columns))
    agree = (utility[data.y == 1] > utility[data.y == 0]).mean()
    assert 0.6 < agree < 0.99


def test_reward_protocol_adds_noise(corpus):
    weights = sample_users(10, random_state=0)
    options = dict(n_history=5, n_query=0, feedback="reward", random_state=0)
    clean = simulate_feedback(corpus, weights, **options)
    noisy = simulate_feedback(corpus, weights, noise=1.0, **options)
    truth = clean.oracle.reward(*(clean.X[c].to_numpy() for c in clean.X.columns))
    np.testing.assert_allclose(clean.y, truth)
    assert np.std(noisy.y - truth) > 0.5


@pytest.mark.parametrize("feedback", FEEDBACK_PROTOCOLS)
def test_feedback_is_seeded(corpus, feedback):
    weights = sample_users(10, random_state=0)
    first = simulate_feedback(
        corpus, weights, n_history=5, feedback=feedback, random_state=0
    )
    again = simulate_feedback(
        corpus, weights, n_history=5, feedback=feedback, random_state=0
    )
    other = simulate_feedback(
        corpus, weights, n_history=5, feedback=feedback, random_state=1
    )
    assert first.X.equals(again.X)
    np.testing.assert_array_equal(first.y, again.y)
    assert not first.X.equals(other.X)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_history=41), ValueError, "which has only 40"),
        (dict(n_history=5, n_query=21), ValueError, "which has only 20"),
        (dict(feedback="thumbs"), ValueError, "Unknown feedback protocol 'thumbs'"),
        (
            dict(feedback="bradley_terry", temperature=0),
            ValueError,
            "temperature must be > 0",
        ),
        (dict(n_history=-1), ValueError, "n_history must be non-negative"),
        (dict(noise=-1.0), ValueError, "noise must be >= 0"),
    ],
)
def test_simulate_feedback_bad_input(corpus, kwargs, error, message):
    with pytest.raises(error, match=message):
        simulate_feedback(corpus, sample_users(3, random_state=0), **kwargs)


def test_simulate_feedback_rejects_misshapen_weights(corpus):
    with pytest.raises(ValueError, match="10 reward models"):
        simulate_feedback(corpus, np.full((3, 4), 0.25))
    with pytest.raises(ValueError, match="simplex"):
        simulate_feedback(corpus, np.full((3, 10), 0.2))


COPL_MODELS = ["gemma_7b", "mistral_weqweasdas", "llama3_sfairx", "oasst_deberta_v3"]


def test_raw_scores_and_reward_model_subset_define_the_users_rewards(corpus):
    from pllm_sk.datasets import REWARD_MODEL_STATS

    weights = sample_users(4, n_reward_models=2, random_state=0)
    data = simulate_feedback(
        corpus,
        weights,
        n_history=3,
        reward_models=["gemma_7b", "beaver_7b"],
        responses=[6, 2, 4],
        scores="raw",
        random_state=0,
    )
    assert data.oracle.corpus is data.corpus
    assert data.corpus.reward_models == ("gemma_7b", "beaver_7b")
    assert data.corpus.n_responses == 3 and data.X.response_id.max() == 2
    columns = [REWARD_MODELS.index("gemma_7b"), REWARD_MODELS.index("beaver_7b")]
    z = corpus.rewards[:, [6, 2, 4]][:, :, columns].astype(np.float64)
    stats = np.array([REWARD_MODEL_STATS[m][1:] for m in ("gemma_7b", "beaver_7b")])
    np.testing.assert_allclose(
        data.corpus.rewards, z * stats[:, 1] + stats[:, 0], rtol=1e-6
    )
    assert data.settings["scores"] == "raw"


def test_per_user_counts(corpus):
    data = simulate(
        corpus,
        3,
        n_history=np.array([4, 0, 2]),
        n_query=np.array([1, 3, 0]),
        feedback="best_worst_pair",
    )
    labeled = data.X[~data.is_query].groupby("user_id").prompt_id.nunique()
    query = data.X[data.is_query].groupby("user_id").prompt_id.nunique()
    assert labeled.to_dict() == {0: 4, 2: 2}
    assert query.to_dict() == {0: 1, 1: 3}
    assert data.settings["n_history"] == {0: 1, 2: 1, 4: 1}


def test_only_disagreeing_pairs_and_query_comparisons(corpus):
    weights = sample_users(30, n_reward_models=4, alpha=0.1, random_state=0)
    data = simulate_feedback(
        corpus,
        weights,
        n_history=10,
        n_query=5,
        feedback="random_pair",
        reward_models=COPL_MODELS,
        scores="raw",
        only_disagreeing=True,
        query_feedback="random_pair",
        random_state=0,
    )
    rewards = data.corpus.rewards
    history = data.X[~data.is_query].to_numpy().reshape(-1, 2, 3)
    comparisons = data.query_comparisons
    pairs = np.concatenate([history[:, 0, 1], comparisons.prompt_id])
    first = np.concatenate([history[:, 0, 2], comparisons.chosen_id])
    second = np.concatenate([history[:, 1, 2], comparisons.rejected_id])
    diff = rewards[pairs, first] - rewards[pairs, second]
    # Every pair is one the reward models do not all order the same way.
    assert not ((diff > 0).all(axis=1) | (diff < 0).all(axis=1)).any()
    assert len(comparisons) == 30 * 5
    chosen = data.oracle.reward(
        comparisons.user_id, comparisons.prompt_id, comparisons.chosen_id
    )
    rejected = data.oracle.reward(
        comparisons.user_id, comparisons.prompt_id, comparisons.rejected_id
    )
    assert (chosen >= rejected).all()


def test_best_worst_query_comparisons_are_best_against_worst(corpus):
    data = simulate(corpus, 5, n_history=2, n_query=4, query_feedback="best_worst_pair")
    comparisons = data.query_comparisons
    utility = data.oracle.candidate_rewards(comparisons.user_id, comparisons.prompt_id)
    np.testing.assert_array_equal(comparisons.chosen_id, utility.argmax(axis=1))
    np.testing.assert_array_equal(comparisons.rejected_id, utility.argmin(axis=1))
    assert data.X[data.is_query].groupby(["user_id", "prompt_id"]).size().eq(8).all()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(scores="logit"), ValueError, "scores must be one of"),
        (dict(reward_models=["nope"]), ValueError, "reward_models must name"),
        (dict(responses=[0, 0]), ValueError, "responses must be at least 2 distinct"),
        (dict(only_disagreeing=True), ValueError, "only_disagreeing=True restricts"),
        (dict(query_feedback="ranking"), ValueError, "query_feedback must be"),
        (dict(n_history=[1, 2]), ValueError, r"one count per user, shape \(3,\)"),
        (dict(n_history=[1.0, 2.0, 3.0]), TypeError, "array of integers"),
    ],
)
def test_simulate_feedback_bad_options(corpus, kwargs, error, message):
    with pytest.raises(error, match=message):
        simulate_feedback(corpus, sample_users(3, random_state=0), **kwargs)
