"""The interaction loop, its policies, posterior draws and sample weights."""

import inspect
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from pandas.testing import assert_frame_equal
from sklearn.base import BaseEstimator, clone
from sklearn.pipeline import make_pipeline
from sklearn.utils.validation import has_fit_parameter

from conftest import random_corpus
from pllm_sk.baselines import BayesRanker, OracleRanker, PopulationRanker
from pllm_sk.collaborative import LowRankRanker
from pllm_sk.features import RewardFeatures
from pllm_sk.meta import MetaRewardHead
from pllm_sk.neighbors import UserKNNRanker
from pllm_sk.simulation import (
    GreedyPolicy,
    InformationSeekingPolicy,
    InteractionEnvironment,
    PreferenceOracle,
    RandomPolicy,
    ThompsonPolicy,
    active_cold_start,
    cumulative_regret,
    paired_bootstrap,
    plot_regret,
    preference_uncertainty,
    progressive_scores,
    sample_users,
    simulate_feedback,
)

N_HISTORY = 30  # historical users 0..29; new users 30..39


@pytest.fixture(scope="module")
def world():
    """A 60-prompt corpus (20 test prompts), 40 users, the first 30 historical."""
    corpus = random_corpus(60, 20)
    weights = sample_users(40, alpha=0.3, random_state=0)
    oracle = PreferenceOracle(corpus, weights)
    history = simulate_feedback(
        corpus, weights[:N_HISTORY], n_history=12, n_query=0, random_state=0
    )
    return corpus, oracle, history


def fitted(world, ranker):
    corpus, _, history = world
    return make_pipeline(RewardFeatures(corpus), ranker).fit(history.X, history.y)


class Recorder(list):
    """A list that copies of an estimator share (deepcopy and clone keep it)."""

    def __deepcopy__(self, memo):
        return self


class SpyRanker(BaseEstimator):
    """Records every call it gets; predicts a fixed function of the ids."""

    def __init__(self, record=None):
        self.record = record

    def fit(self, X, y, sample_weight=None):
        self.record.append(("fit", X.copy(), np.asarray(y), sample_weight))
        self.fitted_ = True
        return self

    def partial_fit(self, X, y, sample_weight=None):
        self.record.append(("partial_fit", X.copy(), np.asarray(y), sample_weight))
        return self

    def predict(self, X):
        self.record.append(("predict", X.copy(), None, None))
        return np.sin(7.0 * X["prompt_id"].to_numpy() + X["response_id"].to_numpy())

    def sample_y(self, X, n_samples=1, random_state=None):
        self.record.append(("sample_y", X.copy(), None, None))
        rng = np.random.RandomState(random_state)
        return self.predict(X)[:, np.newaxis] + rng.normal(size=(len(X), n_samples))


def spy(world):
    corpus, _, history = world
    record = Recorder()
    return SpyRanker(record).fit(history.X, history.y), record


# ---------------------------------------------------------------- the loop


@pytest.mark.parametrize("feedback, n_shown", [("pair", 2), ("slate", 3), ("bradley_terry", 2)])
@pytest.mark.parametrize("policy", [GreedyPolicy(), ThompsonPolicy(), RandomPolicy()], ids=repr)
def test_the_method_sees_feedback_on_shown_responses_only(world, feedback, n_shown, policy):
    _, oracle, _ = world
    ranker, record = spy(world)
    del record[:]
    environment = InteractionEnvironment(
        oracle, users=np.arange(N_HISTORY, 40), feedback=feedback, n_shown=n_shown,
        random_state=0,
    )
    log = environment.run(ranker, policy, n_rounds=6)
    shown = {
        (row.user_id, row.prompt_id): (set(row.shown), row.chosen, row.round)
        for row in log.itertuples()
    }
    updates = [call for call in record if call[0] == "partial_fit"]
    assert len(updates) == 6  # one per round
    for round_, (_, X, y, _) in enumerate(updates):
        for user, prompt, response, label in zip(
            X["user_id"], X["prompt_id"], X["response_id"], y
        ):
            responses, chosen, given_at = shown[(user, prompt)]
            assert response in responses
            assert label == float(response == chosen)
            assert given_at == round_
        # Every shown response of the round, and nothing else.
        assert len(X) == n_shown * 10


def test_no_prompt_is_seen_before_its_round_nor_given_twice(world):
    _, oracle, _ = world
    ranker, record = spy(world)
    del record[:]
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=1)
    log = environment.run(ranker, InformationSeekingPolicy(3, n_draws=4), n_rounds=8)
    assert not log.duplicated(["user_id", "prompt_id"]).any()
    assert set(log["prompt_id"]) <= set(oracle.corpus.prompt_ids("test"))
    prompts = log.set_index(["user_id", "round"])["prompt_id"]
    round_ = 0
    for kind, X, _, _ in record:
        if kind == "partial_fit":
            round_ += 1
            continue
        # Scored rows are the K candidates of each user's prompt of this round.
        expected = prompts.xs(round_, level="round")
        assert_array_equal(
            X.groupby("user_id")["prompt_id"].unique().map(lambda p: p.item()),
            expected.sort_index().to_numpy(),
        )
        assert (X.groupby("user_id").size() == oracle.corpus.n_responses).all()


def test_a_fixed_random_state_reproduces_the_log(world):
    _, oracle, _ = world
    model = fitted(world, LowRankRanker(n_components=2, min_prior_prompts=3, random_state=0))

    def log(seed):
        environment = InteractionEnvironment(
            oracle, users=np.arange(N_HISTORY, 40), drift="mix", feedback="bradley_terry",
            random_state=seed,
        )
        return environment.run(model, ThompsonPolicy(), n_rounds=5)

    first = log(3)
    assert_frame_equal(first, log(3))
    assert not first["prompt_id"].equals(log(4)["prompt_id"])
    # The estimator given is left as it was.
    assert model[-1].users_.max() < N_HISTORY


def test_runs_share_prompts_whatever_the_policy(world):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=0)
    greedy = environment.run(model, GreedyPolicy(), n_rounds=4)
    random = environment.run(model, RandomPolicy(), n_rounds=4)
    assert_array_equal(greedy["prompt_id"], random["prompt_id"])
    assert_array_equal(greedy["best_reward"], random["best_reward"])


def test_the_log_scores_the_served_response_with_the_true_reward(world):
    corpus, oracle, _ = world
    model = fitted(world, PopulationRanker())
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=0)
    log = environment.run(model, RandomPolicy(), n_rounds=3)
    truth = oracle.candidate_rewards(log["user_id"], log["prompt_id"])
    assert_allclose(log["served_reward"], truth[np.arange(len(log)), log["served"]])
    assert_allclose(log["best_reward"], truth.max(axis=1))
    assert (log["regret"] >= 0).all()
    assert_array_equal(log["top1"], log["regret"] == 0)
    # Pair feedback is noiseless: the chosen response is the better one shown.
    second = log["shown"].map(lambda shown: shown[1])
    better = np.where(
        truth[np.arange(len(log)), log["served"]] >= truth[np.arange(len(log)), second],
        log["served"],
        second,
    )
    assert_array_equal(log["chosen"], better)


def test_oracle_greedy_has_no_regret(world):
    _, oracle, history = world
    model = make_pipeline(RewardFeatures(oracle.corpus), OracleRanker(oracle))
    model.fit(history.X, history.y)
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=0)
    log = environment.run(model, GreedyPolicy(), n_rounds=3)
    assert (log["regret"] == 0).all()


def test_a_jump_changes_the_users_rewards_at_its_round(world):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())
    environment = InteractionEnvironment(
        oracle, users=np.arange(N_HISTORY, 40), drift="jump", jump_round=3, random_state=0
    )
    log = environment.run(model, RandomPolicy(), n_rounds=5)
    truth = oracle.candidate_rewards(log["user_id"], log["prompt_id"])
    served = truth[np.arange(len(log)), log["served"]]
    before = log["round"] < 3
    assert_allclose(log.loc[before, "served_reward"], served[before])
    assert not np.allclose(log.loc[~before, "served_reward"], served[~before])


def test_mix_drift_moves_rewards_a_little_each_round(world):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())
    gaps = []
    for rate in (0.05, 0.5):
        environment = InteractionEnvironment(
            oracle, users=np.arange(N_HISTORY, 40), drift="mix", drift_rate=rate,
            random_state=0,
        )
        log = environment.run(model, RandomPolicy(), n_rounds=4)
        truth = oracle.candidate_rewards(log["user_id"], log["prompt_id"])
        drifted = np.abs(log["best_reward"] - truth.max(axis=1))
        assert drifted[log["round"] == 0].max() == 0
        gaps.append(drifted[log["round"] == 3].mean())
    assert 0 < gaps[0] < gaps[1]


def test_users_arrive_over_time_and_the_population_is_refitted(world):
    corpus, oracle, history = world
    ranker, record = spy(world)
    del record[:]
    arrivals = np.repeat([0, 2], 5)
    environment = InteractionEnvironment(
        oracle, users=np.arange(N_HISTORY, 40), arrivals=arrivals, random_state=0
    )
    log = environment.run(
        ranker, GreedyPolicy(), n_rounds=4, history=(history.X, history.y),
        population_refit_every=5,
    )
    assert_array_equal(log.groupby("round").size(), [5, 5, 10, 10])
    assert_array_equal(log["step"], log["round"] - arrivals[log["user_id"] - N_HISTORY])
    refits = [call for call in record if call[0] == "fit"]
    # Refits at rounds 0 and 2 (5 and 10 arrivals), on history and all feedback so far.
    assert [len(X) for _, X, _, _ in refits] == [len(history.X) + 10, len(history.X) + 40]


def test_decay_weighs_older_feedback_less(world):
    _, oracle, _ = world
    ranker, record = spy(world)
    del record[:]
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=0)
    environment.run(ranker, GreedyPolicy(), n_rounds=3, decay=0.5)
    updates = [call for call in record if call[0] == "partial_fit"]
    # Each round the population copy gets all the feedback so far, reweighted.
    assert [len(X) for _, X, _, _ in updates] == [20, 40, 60]
    assert_allclose(np.unique(updates[-1][3]), [0.25, 0.5, 1.0])
    environment.run(ranker, GreedyPolicy(), n_rounds=3, window=2)
    assert [len(call[1]) for call in record if call[0] == "partial_fit"][-3:] == [20, 40, 40]


def test_decay_needs_sample_weight_and_policies_need_sample_y(world):
    _, oracle, _ = world
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=0)
    knn = fitted(world, UserKNNRanker(min_neighbor_prompts=3, random_state=0))
    with pytest.raises(TypeError, match="UserKNNRanker.partial_fit does not accept sample_weight"):
        environment.run(knn, GreedyPolicy(), n_rounds=2, decay=0.9)
    population = fitted(world, PopulationRanker())
    for policy in (ThompsonPolicy(), InformationSeekingPolicy()):
        with pytest.raises(TypeError, match="PopulationRanker has\\s+no sample_y method"):
            environment.run(population, policy, n_rounds=2)
    gradient = fitted(world, MetaRewardHead("gradient", max_epochs=1, random_state=0))
    with pytest.raises(TypeError, match="MetaRewardHead has no sample_y"):
        environment.run(gradient, ThompsonPolicy(), n_rounds=2)


@pytest.mark.parametrize(
    "parameters, match",
    [
        (dict(feedback="best"), "'feedback' parameter of InteractionEnvironment"),
        (dict(n_shown=3), "feedback='pair' shows two"),
        (dict(n_shown=1, feedback="slate"), "'n_shown' parameter .* range \\[2, inf\\)"),
        (dict(drift="jump"), "needs jump_round"),
        (dict(drift="jump", jump_round=0), "'jump_round' parameter .* range \\[1, inf\\)"),
        (dict(prompt_split="dev"), "'prompt_split' parameter"),
        (dict(drift_rate=0.0, drift="mix"), "'drift_rate' parameter"),
        (dict(users=[0, 0]), "twice"),
        (dict(users=[99]), "outside"),
        (dict(arrivals=[0, -1]), "arrivals"),
    ],
)
def test_environment_parameters_are_checked_at_run(world, parameters, match):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())
    parameters = dict(dict(users=[30, 31]), **parameters)
    environment = InteractionEnvironment(oracle, **parameters)  # stores only
    with pytest.raises((ValueError, TypeError), match=match):
        environment.run(model, GreedyPolicy(), n_rounds=2)


def test_run_parameters_are_checked(world):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())
    environment = InteractionEnvironment(oracle, users=[30, 31])
    with pytest.raises(ValueError, match="'decay' parameter of InteractionEnvironment.run"):
        environment.run(model, GreedyPolicy(), n_rounds=2, decay=0.0)
    with pytest.raises(ValueError, match="pass history"):
        environment.run(model, GreedyPolicy(), n_rounds=2, population_refit_every=2)
    with pytest.raises(ValueError, match="n_rounds=21 needs"):
        environment.run(model, GreedyPolicy(), n_rounds=21)
    with pytest.raises(ValueError, match="n_draws"):
        environment.run(fitted(world, BayesRanker(n_draws=16)),
                        InformationSeekingPolicy(n_draws=1), n_rounds=2)


POLICY_NAMES = re.escape(
    "GreedyPolicy(), ThompsonPolicy(), InformationSeekingPolicy(), RandomPolicy()"
)


@pytest.mark.parametrize(
    "policy, got",
    [
        ("greedy", "Got 'greedy' instead"),
        (None, "Got None instead"),
        (GreedyPolicy, "Got the class GreedyPolicy; pass an instance, GreedyPolicy\\(\\)"),
    ],
)
def test_run_names_the_accepted_policies(world, policy, got):
    _, oracle, _ = world
    environment = InteractionEnvironment(oracle, users=[30, 31], random_state=0)
    match = f"'policy' parameter of InteractionEnvironment.run .*{POLICY_NAMES}.* {got}"
    with pytest.raises(ValueError, match=match):
        environment.run(fitted(world, PopulationRanker()), policy, n_rounds=2)


def test_run_takes_any_object_with_the_policy_methods(world):
    class ServeTheFirst:
        def validate(self, estimator, n_shown):
            pass

        def needs(self, steps, n_shown):
            return False, 0

        def choose(self, scores, draws, n_shown, steps, rng):
            return np.tile(np.arange(n_shown), (len(steps), 1))

    _, oracle, _ = world
    environment = InteractionEnvironment(oracle, users=[30, 31], random_state=0)
    log = environment.run(fitted(world, PopulationRanker()), ServeTheFirst(), n_rounds=2)
    assert (log["served"] == 0).all()


def test_a_jump_after_the_last_round_is_refused(world):
    _, oracle, _ = world
    environment = InteractionEnvironment(oracle, users=[30, 31], drift="jump", jump_round=2)
    with pytest.raises(ValueError, match="jump_round=2 is not below n_rounds=2: .* never happen"):
        environment.run(fitted(world, PopulationRanker()), GreedyPolicy(), n_rounds=2)


@pytest.mark.parametrize("drift", [None, "mix"])
def test_a_jump_round_without_the_jump_drift_is_ignored_with_a_warning(world, drift):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())
    parameters = dict(users=np.arange(N_HISTORY, 40), drift=drift, random_state=0)
    environment = InteractionEnvironment(oracle, jump_round=1, **parameters)
    with pytest.warns(UserWarning, match=f"jump_round=1 is ignored with drift={drift!r}"):
        log = environment.run(model, RandomPolicy(), n_rounds=3)
    expected = InteractionEnvironment(oracle, **parameters).run(model, RandomPolicy(), n_rounds=3)
    assert_frame_equal(log, expected)


def test_run_warns_when_users_are_known_to_the_estimator(world):
    _, oracle, _ = world
    model = fitted(world, PopulationRanker())  # fitted on users 0 .. 29
    environment = InteractionEnvironment(oracle, users=[3, 30, 1], random_state=0)
    match = r"2 of the 3 users of the loop \(1, 3\) have feedback in the fitted PopulationRanker"
    with pytest.warns(UserWarning, match=match):
        environment.run(model, GreedyPolicy(), n_rounds=2)
    new_users = InteractionEnvironment(oracle, users=[30, 31], random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        new_users.run(model, GreedyPolicy(), n_rounds=2)


def test_an_estimator_without_partial_fit_is_refitted_on_the_feedback(world):
    corpus, oracle, _ = world
    model = fitted(world, BayesRanker(n_draws=32, n_burnin=5, random_state=0))
    environment = InteractionEnvironment(oracle, users=np.arange(N_HISTORY, 40), random_state=0)
    log = environment.run(model, ThompsonPolicy(), n_rounds=4)
    assert len(log) == 40
    # Refitted on the feedback only (no history given): the loop's users.
    assert model[-1].users_.max() < N_HISTORY


# -------------------------------------------------------------- policies


def test_policies_choose_as_documented():
    rng = np.random.RandomState(0)
    scores = rng.normal(size=(50, 8))
    steps = np.zeros(50, dtype=int)
    greedy = GreedyPolicy().choose(scores, None, 3, steps, rng)
    assert_array_equal(greedy[:, 0], scores.argmax(axis=1))
    assert (np.sort(greedy, axis=1)[:, 1:] != np.sort(greedy, axis=1)[:, :-1]).all()
    draws = rng.normal(size=(50, 8, 2))
    thompson = ThompsonPolicy().choose(scores, draws, 2, steps, rng)
    assert_array_equal(thompson[:, 0], draws[:, :, 0].argmax(axis=1))
    masked = np.where(np.arange(8) == thompson[:, :1], -np.inf, draws[:, :, 1])
    assert_array_equal(thompson[:, 1], masked.argmax(axis=1))
    info = InformationSeekingPolicy(2, n_draws=2)
    assert info.needs(np.array([0, 5]), 2) == (True, 2)
    assert info.needs(np.array([2, 5]), 2) == (True, 0)
    shown = info.choose(scores, draws, 2, steps, rng)
    assert_array_equal(shown[:, 0], scores.argmax(axis=1))
    uncertainty = preference_uncertainty(draws)
    chosen = uncertainty[np.arange(50), shown[:, 0], shown[:, 1]]
    assert_allclose(chosen, uncertainty[np.arange(50), shown[:, 0]].max(axis=1))
    # Past its rounds, the information-seeking policy is greedy.
    late = info.choose(scores, None, 2, np.full(50, 2), np.random.RandomState(1))
    greedy = GreedyPolicy().choose(scores, None, 2, steps, np.random.RandomState(1))
    assert_array_equal(late, greedy)
    pair = InformationSeekingPolicy(2, n_draws=2, anchor=None).choose(scores, draws, 2, steps, rng)
    upper = np.triu_indices(8, k=1)
    assert_allclose(
        uncertainty[np.arange(50), pair[:, 0], pair[:, 1]],
        uncertainty[:, upper[0], upper[1]].max(axis=1),
    )


def test_preference_uncertainty_counts_wins_over_draws():
    draws = np.array([[[3.0, 0.0, 1.0, 2.0], [1.0, 0.0, 2.0, 0.0]]])  # 2 candidates
    # Candidate 0 wins 2 of 4 draws and ties one: p = 2.5 / 4.
    assert_allclose(preference_uncertainty(draws)[0, 0, 1], 0.625 * 0.375)


# ---------------------------------------------------------- progressive scores


def test_progressive_scores_and_cumulative_regret_by_hand():
    log = pd.DataFrame(
        {
            "method": ["a"] * 4 + ["b"] * 4,
            "round": [0, 0, 1, 1] * 2,
            "step": [0, 0, 1, 1] * 2,
            "user_id": [1, 2, 1, 2] * 2,
            "regret": [1.0, 3.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0],
            "top1": [False, False, True, False, True, True, False, True],
        }
    )
    scores = progressive_scores(log, by="method")
    assert_allclose(scores["regret"], [2.0, 0.5, 0.0, 1.0])
    assert_allclose(scores["cumulative_regret"], [2.0, 2.5, 0.0, 1.0])
    assert_allclose(scores["top1"], [0.0, 0.5, 1.0, 0.5])
    per_user = cumulative_regret(log, 2, by="method")
    assert per_user.to_dict() == {("a", 1): 1.0, ("a", 2): 4.0, ("b", 1): 2.0, ("b", 2): 0.0}
    result = paired_bootstrap(per_user["a"], per_user["b"], random_state=0)
    assert result.mean == 1.5 and result.low <= 1.5 <= result.high
    figure = plot_regret(scores, hue="method")
    assert len(figure.axes[0].lines) == 2


def test_paired_bootstrap_interval_covers_a_known_mean():
    rng = np.random.RandomState(0)
    first = rng.normal(1.0, 1.0, size=400)
    noise = rng.normal(0, 0.1, 400)
    result = paired_bootstrap(first, first - 0.3 + noise, random_state=0)
    assert_allclose(result.mean, 0.3 - noise.mean())
    assert result.low < result.mean < result.high
    # The differences have sd 0.1: a 95% interval of their mean spans 3.92 sd / 20.
    assert_allclose(result.high - result.low, 3.92 * noise.std() / 20, rtol=0.15)


def test_paired_bootstrap_draws_units_or_whole_groups():
    # A statistic that returns the resampled rows shows the draws themselves:
    # all at once, as (n_resamples, n_groups) indices from the random state.
    rows = paired_bootstrap(np.arange(5), np.zeros(5), statistic=lambda a, b: a,
                            n_resamples=3, random_state=np.random.default_rng(0))  # fmt: skip
    assert_array_equal(rows.resamples, np.random.default_rng(0).integers(5, size=(3, 5)))
    assert (rows.n_units, rows.n_groups) == (5, 5)
    # Group "y" (rows 0, 1) and "x" (rows 2, 3): each drawn group brings its rows
    # in their order, groups numbered in sorted order of their labels.
    rows = paired_bootstrap(np.arange(4), np.zeros(4), statistic=lambda a, b: a,
                            groups=["y", "y", "x", "x"], n_resamples=4, random_state=0)  # fmt: skip
    members = {0: [2, 3], 1: [0, 1]}
    drawn = np.random.RandomState(0).randint(2, size=(4, 2))
    assert_array_equal(rows.resamples, [members[g] + members[h] for g, h in drawn])
    assert (rows.n_units, rows.n_groups) == (4, 2)


def test_paired_bootstrap_ratio_of_resampled_users():
    # User 0 has two units of difference 1, user 1 one of difference 0: a
    # resample holding user 0 k times has mean difference 2k / (2k + 2 - k).
    first, second = np.array([2.0, 3.0, 5.0]), np.array([1.0, 2.0, 5.0])
    result = paired_bootstrap(first, second, groups=[0, 0, 1], n_resamples=50, random_state=0)
    k = (np.random.RandomState(0).randint(2, size=(50, 2)) == 0).sum(axis=1)
    assert_allclose(result.resamples, 2 * k / (2 * k + 2 - k))
    assert result.mean == 2 / 3 and result.std == result.resamples.std()
    assert (result.low, result.high) == (0.0, 1.0)
    # A ratio of sums, and a vector statistic: one value per component.
    both = paired_bootstrap(
        first, second, statistic=lambda a, b: [a.sum() / b.sum(), a.max()], groups=[0, 0, 1],
        n_resamples=50, random_state=0,
    )  # fmt: skip
    assert_allclose(both.mean, [10 / 8, 5.0])
    assert both.resamples.shape == (50, 2) and both.low.shape == both.std.shape == (2,)
    assert_allclose(both.resamples[:, 0], np.where(k == 2, 5 / 3, np.where(k == 1, 10 / 8, 1.0)))
    # Resamples where the ratio is undefined (0 / 0) are left out of the interval.
    with np.errstate(invalid="ignore"):
        ratio = paired_bootstrap([1.0, 0.0], [1.0, 0.0], statistic=lambda a, b: a.sum() / b.sum(),
                                 n_resamples=20, random_state=0)  # fmt: skip
    assert np.isnan(ratio.resamples).any()
    assert (ratio.low, ratio.high, ratio.std) == (1.0, 1.0, 0.0)


def test_paired_bootstrap_passes_aligned_frames_to_the_statistic():
    first = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=["a", "b", "c"])
    second = pd.DataFrame({"x": [30.0, 10.0]}, index=["c", "a"])
    result = paired_bootstrap(first, second, statistic=lambda a, b: (a["x"] - b["x"]).sum(),
                              n_resamples=5, random_state=0)  # fmt: skip
    assert result.mean == (1.0 - 10.0) + (3.0 - 30.0) and result.n_units == 2


def test_cumulative_regret_warns_when_every_user_is_left_out():
    log = pd.DataFrame({"step": [0, 1, 2, 0], "user_id": [1, 1, 1, 2],
                        "regret": [1.0, 0.5, 9.0, 0.0]})  # fmt: skip
    match = r"no user has n_steps=4 steps in the log \(the most any user has is 3\)"
    with pytest.warns(UserWarning, match=match):
        assert cumulative_regret(log, 4).empty
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert cumulative_regret(log, 3).to_dict() == {1: 10.5}  # user 2 left out


def test_missing_columns_are_named_with_the_fix():
    log = pd.DataFrame({"step": [0, 1], "round": [0, 1], "user_id": [1, 1],
                        "regret": [1.0, 0.0], "top1": [False, True]})  # fmt: skip
    columns = "its columns are 'step', 'round', 'user_id', 'regret', 'top1'"
    with pytest.raises(ValueError, match=f"by='nope' names a column the log does not have: "
                                         f"'nope'; {columns}. Pass as by columns"):  # fmt: skip
        cumulative_regret(log, 1, by="nope")
    with pytest.raises(ValueError, match="progressive_scores: by=\\['method', 'run'\\] names"):
        progressive_scores(log, by=["method", "run"])
    scores = progressive_scores(log)
    with pytest.raises(ValueError, match="cumulative_regret: log has no column 'user_id'.* "
                                         "Pass the log of InteractionEnvironment.run"):  # fmt: skip
        cumulative_regret(scores, 1)
    with pytest.raises(ValueError, match="'metric' parameter of plot_regret"):
        plot_regret(scores, metric="nope")
    match = f"scores has no column 'cumulative_regret'; {columns}. .*pass progressive_scores"
    with pytest.raises(ValueError, match=f"plot_regret: {match}\\(log\\)"):
        plot_regret(log)
    with pytest.raises(ValueError, match="plot_regret: style='policy' names a column"):
        plot_regret(scores, style="policy")


def test_progressive_parameters_are_checked():
    log = pd.DataFrame({"step": [0, 1], "round": [0, 1], "user_id": [1, 1],
                        "regret": [1.0, 0.0], "top1": [False, True]})
    with pytest.raises(ValueError, match="'time' parameter of progressive_scores"):
        progressive_scores(log, time="day")
    with pytest.raises(ValueError, match="'n_steps' parameter of cumulative_regret"):
        cumulative_regret(log, 0)
    for bad in (dict(confidence=1.0), dict(n_resamples=0), dict(statistic="mean"),
                dict(random_state="seed")):  # fmt: skip
        with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter of paired_bootstrap"):
            paired_bootstrap([1.0, 2.0], [0.0, 1.0], **bad)
    with pytest.raises(ValueError, match="one label per unit"):
        paired_bootstrap([1.0, 2.0], [0.0, 1.0], groups=[0, 0, 1])
    with pytest.raises(ValueError, match="one-dimensional"):
        paired_bootstrap([[1.0, 2.0]], [[0.0, 1.0]])
    with pytest.raises(ValueError, match="same, non-zero number of units"):
        paired_bootstrap([1.0, 2.0], [0.0], statistic=lambda a, b: 0.0)


# ---------------------------------------------------------- posterior draws


@pytest.fixture(scope="module")
def reward_rows(world):
    """Reward-track rows of the 30 historical users and 2 query prompts each."""
    corpus, oracle, history = world
    data = simulate_feedback(
        corpus, oracle.weights[:N_HISTORY], n_history=6, n_query=2, random_state=1
    )
    X = RewardFeatures(corpus).fit_transform(data.X)
    query = X[data.is_query].reset_index(drop=True)
    cold = query.assign(user_id=query["user_id"] + 100)
    return X, data.y, pd.concat([query, cold], ignore_index=True)


SAMPLERS = [
    BayesRanker(n_draws=500, n_chains=8, n_burnin=20, random_state=0),
    LowRankRanker(n_components=2, min_prior_prompts=3, random_state=0),
    MetaRewardHead(n_prototypes=16, max_epochs=5, random_state=0),
    MetaRewardHead(n_prototypes=16, max_epochs=5, n_newton_steps=0, random_state=0),
    UserKNNRanker(min_neighbor_prompts=3, random_state=0),
]


@pytest.mark.parametrize("estimator", SAMPLERS, ids=lambda e: type(e).__name__)
def test_sample_y_draws_a_users_parameters_once_per_draw(estimator, reward_rows):
    X, y, query = reward_rows
    estimator = clone(estimator).fit(X, y)
    before = estimator.predict(query)
    draws = estimator.sample_y(query, 6, random_state=0)
    assert draws.shape == (len(query), 6)
    assert_array_equal(draws, estimator.sample_y(query, 6, random_state=0))
    assert not np.array_equal(draws, estimator.sample_y(query, 6, random_state=1))
    assert_array_equal(estimator.predict(query), before)  # sampling changes nothing
    assert estimator.sample_y(query).shape == (len(query), 1)
    # Jointly consistent: each draw of a user is one linear utility over the rows.
    features = query.filter(like="reward_").to_numpy()
    for user in (0, 100):
        rows = (query["user_id"] == user).to_numpy()
        coef, residual, *_ = np.linalg.lstsq(features[rows], draws[rows], rcond=None)
        assert_allclose(features[rows] @ coef, draws[rows], atol=1e-6)
    # Different users draw different parameters.
    assert not np.allclose(draws[query["user_id"] == 0][:4], draws[query["user_id"] == 1][:4])


@pytest.mark.parametrize("estimator", SAMPLERS, ids=lambda e: type(e).__name__)
def test_sample_y_checks_n_samples(estimator, reward_rows):
    X, y, query = reward_rows
    estimator = clone(estimator).fit(X, y)
    message = "'n_samples' parameter of .*sample_y must be an int in the range"
    with pytest.raises(ValueError, match=message):
        estimator.sample_y(query, 0)
    with pytest.raises(TypeError, match=message):
        estimator.sample_y(query, 2.5)


def test_bayes_draws_average_to_predict_within_monte_carlo_error(reward_rows):
    X, y, query = reward_rows
    bayes = BayesRanker(n_draws=20_000, n_chains=16, random_state=0).fit(X, y)
    n_samples = 2000
    draws = bayes.sample_y(query, n_samples, random_state=0)
    # Draw s * 16 + c is chain c's: the 16 chains' means are independent, and
    # their spread gives the Monte Carlo error of the draws' mean.
    chain_means = draws.reshape(len(query), -1, 16).mean(axis=1)
    error = chain_means.std(axis=1, ddof=1) / 4
    deviation = draws.mean(axis=1) - bayes.predict(query)
    # Squared deviations sum to about the squared errors (chi-square over rows;
    # predict's own error, from 10 times the draws, adds about a tenth).
    assert np.sum(deviation**2) / np.sum(error**2) < 1.5
    # Cold users (ids + 100) draw from the Dirichlet prior, whose mean is 1 / B.
    cold = (query["user_id"] >= 100).to_numpy()
    assert_allclose(
        draws[cold].mean(), query.filter(like="reward_").to_numpy()[cold].mean(), atol=0.05
    )


@pytest.mark.parametrize("estimator", SAMPLERS[1:], ids=lambda e: type(e).__name__)
def test_learned_draws_average_to_predict(estimator, reward_rows):
    X, y, query = reward_rows
    estimator = clone(estimator).fit(X, y)
    known = (query["user_id"] < 100).to_numpy()
    draws = estimator.sample_y(query[known], 4000, random_state=0)
    error = draws.std(axis=1) / np.sqrt(draws.shape[1])
    deviation = draws.mean(axis=1) - estimator.predict(query[known])
    # Independent draws: squared deviations sum to about the squared errors.
    assert np.sum(deviation**2) / np.sum(error**2) < 1.5


def test_only_samplers_have_sample_y():
    assert not hasattr(MetaRewardHead(adaptation="gradient"), "sample_y")
    assert not hasattr(PopulationRanker(), "sample_y")
    for estimator in SAMPLERS:
        assert hasattr(estimator, "sample_y")


# ------------------------------------------------------------ sample weights


def test_only_low_rank_accepts_sample_weight():
    assert has_fit_parameter(LowRankRanker(), "sample_weight")
    assert "sample_weight" in inspect.signature(LowRankRanker().partial_fit).parameters
    for estimator in (BayesRanker(), UserKNNRanker(), MetaRewardHead(), PopulationRanker()):
        assert not has_fit_parameter(estimator, "sample_weight")


@pytest.mark.parametrize("item_embeddings", [False, True])
def test_zero_weight_drops_a_row_and_integer_weight_repeats_pairs(reward_rows, item_embeddings):
    X, y, query = reward_rows
    params = dict(n_components=2, min_prior_prompts=3, temperature=1.0, random_state=0,
                  rank=4 if item_embeddings else 10, item_embeddings=item_embeddings,
                  max_iter=3)
    labeled = ~np.isnan(y)
    X, y = X[labeled].reset_index(drop=True), y[labeled]
    reference = LowRankRanker(**params).fit(X, y).predict(query)
    # Zero weight on the rows of a prompt: as if they were never given.
    dropped = (X["prompt_id"] == X["prompt_id"].iloc[0]) & (X["user_id"] == X["user_id"].iloc[0])
    weight = np.where(dropped, 0.0, 1.0)
    assert_allclose(
        LowRankRanker(**params).fit(X, y, sample_weight=weight).predict(query),
        LowRankRanker(**params).fit(X[~dropped], y[~dropped]).predict(query),
        rtol=1e-6, atol=1e-8,
    )
    assert not np.allclose(LowRankRanker(**params).fit(X[~dropped], y[~dropped]).predict(query),
                           reference)
    if item_embeddings:
        return  # a copy under a new prompt id is a new item, not the same pairs
    # Weight 2 on a prompt's rows: the same pairs given twice (a copy of the prompt),
    # up to the solvers' tolerances (the mixture prior's EM amplifies them).
    copy = X[dropped].assign(prompt_id=X["prompt_id"].max() + 1)
    weight = np.where(dropped, 2.0, 1.0)
    weighted = LowRankRanker(**params).fit(X, y, sample_weight=weight).predict(query)
    copied = LowRankRanker(**params).fit(pd.concat([X, copy]), np.r_[y, y[dropped]])
    change = np.abs(weighted - reference).max()
    assert np.abs(weighted - copied.predict(query)).max() < 0.01 * change


def test_partial_fit_weights_act_as_in_fit(reward_rows):
    X, y, query = reward_rows
    labeled = ~np.isnan(y)
    X, y = X[labeled].reset_index(drop=True), y[labeled]
    new = X["user_id"] < 5
    model = LowRankRanker(n_components=2, min_prior_prompts=3, random_state=0).fit(X[~new], y[~new])
    X_new, y_new = X[new].reset_index(drop=True), y[new]
    first = X_new["prompt_id"] == X_new.groupby("user_id")["prompt_id"].transform("first")
    weighted = clone(model).fit(X[~new], y[~new]).partial_fit(
        X_new, y_new, sample_weight=np.where(first, 0.0, 3.0)
    )
    repeated = clone(model).fit(X[~new], y[~new])
    for copy in range(3):
        rows = X_new[~first].assign(prompt_id=X_new["prompt_id"][~first] + 1000 * (copy + 1))
        repeated.partial_fit(rows, y_new[~first])
    assert_allclose(weighted.predict(query), repeated.predict(query), rtol=1e-6, atol=1e-8)
    # The draws follow the weights too.
    assert_allclose(
        weighted.sample_y(query, 3, random_state=0),
        repeated.sample_y(query, 3, random_state=0), rtol=1e-5, atol=1e-7,
    )


@pytest.mark.parametrize(
    "weight, error, match",
    [
        (lambda n: -np.ones(n), ValueError, "non-negative"),
        (lambda n: np.ones(n - 1), ValueError, "weights for"),
        (lambda n: np.ones((n, 2)), ValueError, "1-d"),
        (lambda n: np.zeros(n), ValueError, "zero on every labeled row"),
        (lambda n: np.array(["a"] * n), TypeError, "must hold numbers"),
    ],
)
def test_sample_weight_is_validated(reward_rows, weight, error, match):
    X, y, _ = reward_rows
    model = LowRankRanker(n_components=2, min_prior_prompts=3, random_state=0)
    with pytest.raises(error, match=f"sample_weight.*{match}|{match}.*sample_weight|{match}"):
        model.fit(X, y, sample_weight=weight(len(X)))
    model.fit(X, y)
    with pytest.raises(error, match=match):
        model.partial_fit(X.iloc[:16], y[:16], sample_weight=weight(16))


# ---------------------------------------------------------- active cold start


def test_active_cold_start_compares_strategies_on_the_same_prompts(world):
    _, oracle, _ = world
    model = fitted(world, LowRankRanker(n_components=2, min_prior_prompts=3, random_state=0))
    users = np.arange(N_HISTORY, 40)
    results = [
        active_cold_start(model, oracle, users, strategy=strategy, n_answers=(1, 2),
                          n_candidates=5, n_draws=8, random_state=0)
        for strategy in ("information", "random")
    ]
    for result in results:
        assert result["n_answers"].tolist() == [1, 2]
        assert np.isfinite(result["gap_closed"]).all()
    assert not results[0]["gap_closed"].equals(results[1]["gap_closed"])
    assert_frame_equal(
        results[1],
        active_cold_start(model, oracle, users, strategy="random", n_answers=(1, 2),
                          n_candidates=5, n_draws=8, random_state=0),
    )
    with pytest.raises(TypeError, match="no sample_y"):
        active_cold_start(fitted(world, PopulationRanker()), oracle, users, n_answers=(1,))


# ------------------------------------------------------------------ benchmark


def test_continual_benchmark_runs_end_to_end(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from _helpers import load_script

    continual = load_script("continual")
    continual.main(
        [
            "--n-prompts", "300", "--n-history-users", "40", "--n-history", "12",
            "--n-users", "12", "--n-rounds", "12", "--jump-round", "6",
            "--methods", "Bayes", "LowRank", "UserKNN", "--drifts", "none",
            "--bayes-draws", "16", "--n-resamples", "200", "--output-dir", str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    for section in ("1. Cumulative regret", "2. Paired bootstrap", "4. Jump", "5. Arrivals",
                    "6. Active cold start", "Goals"):
        assert section in printed
    log = pd.read_csv(tmp_path / "continual_log.csv")
    # Random, and 3 policies for each of 3 methods, each 12 users x 12 rounds.
    assert len(log) == (1 + 3 * 3) * 12 * 12
    assert (tmp_path / "continual.png").stat().st_size > 0
