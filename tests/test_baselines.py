"""Reference rankers: population, per-user, oracle and the Bayes limit."""

import numpy as np
import pandas as pd
import pytest
from _estimator_checks import check_input_errors
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, special

from conftest import random_corpus
from pllm_sk.baselines import BayesRanker, OracleRanker, PerUserRanker, PopulationRanker
from pllm_sk.datasets import Corpus
from pllm_sk.simulation import sample_users, simulate_feedback


def with_rewards(corpus, X):
    """``X`` with the corpus's reward scores appended as ``reward_<name>`` columns."""
    scores = corpus.lookup_rewards(X["prompt_id"], X["response_id"]).astype(float)
    columns = {
        f"reward_{name}": scores[:, b] for b, name in enumerate(corpus.reward_models)
    }
    return pd.concat([X.reset_index(drop=True), pd.DataFrame(columns)], axis=1)


def chosen(X, utility):
    """The top row of each (user, prompt): arrays user_id, prompt_id, response_id."""
    frame = X[["user_id", "prompt_id", "response_id"]].assign(utility=utility)
    top = frame.loc[frame.groupby(["user_id", "prompt_id"])["utility"].idxmax()]
    return (
        top["user_id"].to_numpy(),
        top["prompt_id"].to_numpy(),
        top["response_id"].to_numpy(),
    )


def simulated(n_users, n_support, *, n_query=2, n_prompts=120, seed=0, **kwargs):
    """Reward-track rows of simulated users: (X, y, is_query, oracle)."""
    corpus = random_corpus(n_prompts, n_prompts // 3, random_state=seed)
    weights = sample_users(n_users, alpha=0.05, random_state=seed)
    data = simulate_feedback(
        corpus,
        weights,
        n_history=n_support,
        n_query=n_query,
        random_state=seed,
        **kwargs,
    )
    return with_rewards(corpus, data.X), data.y, data.is_query, data.oracle


def planted_pairs(weights_by_user, n_pairs, seed=0):
    """Pairwise rows with Gaussian features, chosen by Bradley-Terry with each user's weights."""
    rng = np.random.RandomState(seed)
    n_users, n_features = weights_by_user.shape
    user = np.repeat(np.arange(n_users), n_pairs)
    features = rng.normal(size=(user.size, 2, n_features))
    margin = np.einsum(
        "pf,pf->p", features[:, 0] - features[:, 1], weights_by_user[user]
    )
    first_wins = rng.rand(user.size) < special.expit(margin)
    X = pd.DataFrame(
        {
            "user_id": np.repeat(user, 2),
            "prompt_id": np.repeat(np.arange(user.size), 2),
            "response_id": np.tile([0, 1], user.size),
        }
    )
    for f in range(n_features):
        X[f"x{f}"] = features[:, :, f].reshape(-1)
    y = np.column_stack([first_wins, ~first_wins]).reshape(-1).astype(float)
    return X, y


# ---------------------------------------------------------------- PopulationRanker


def test_population_recovers_planted_direction(global_random_seed):
    planted = np.array([2.0, -1.0, 0.5, 0.0])
    X, y = planted_pairs(np.tile(planted, (20, 1)), 150, seed=global_random_seed)
    ranker = PopulationRanker().fit(X, y)
    coef = ranker.population_coef_
    cosine = coef @ planted / np.linalg.norm(coef) / np.linalg.norm(planted)
    assert cosine > 0.98
    assert_allclose(np.linalg.norm(ranker.population_coef_), np.linalg.norm(planted), rtol=0.2)
    assert ranker.n_response_slots_ is None


def test_population_uses_order_not_magnitude():
    X, y = planted_pairs(np.array([[1.0, -1.0]]), 100)
    reference = PopulationRanker().fit(X, y).population_coef_
    assert_allclose(PopulationRanker().fit(X, 10 * y + 3).population_coef_, reference)


def test_population_ids_track_one_hot_of_response_slot():
    # Slot 2 beats every other slot, slot 0 loses to every other slot.
    rows = []
    for prompt in range(30):
        for slot, label in [(0, 0.0), (1, 0.5), (2, 1.0)]:
            rows.append((prompt % 5, prompt, slot, label))
    X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id", "y"])
    y = X.pop("y").to_numpy()
    ranker = PopulationRanker().fit(X, y)
    assert ranker.n_response_slots_ == 3
    assert np.argmax(ranker.population_coef_) == 2 and np.argmin(ranker.population_coef_) == 0
    new = pd.DataFrame(
        {"user_id": [99] * 3, "prompt_id": [77] * 3, "response_id": range(3)}
    )
    assert_allclose(ranker.predict(new), ranker.population_coef_)
    assert ranker.count_fallbacks(new) == {"rows": 3, "users": 1}
    # Nothing is known about a slot that fit never saw: an error, not a silent 0.
    with pytest.raises(ValueError, match=r"response_id=3 \(row 2\) was not seen in fit"):
        ranker.predict(new.assign(response_id=[0, 1, 3]))


def test_population_needs_comparisons():
    X = pd.DataFrame({"user_id": [0, 1], "prompt_id": [0, 0], "response_id": [0, 1]})
    with pytest.raises(ValueError, match="comparison"):
        PopulationRanker().fit(X, [1.0, 0.0])


@pytest.mark.parametrize(
    "params, name",
    [({"alpha": -1.0}, "alpha"), ({"max_iter": 0}, "max_iter"), ({"tol": -1}, "tol")],
)
def test_population_parameter_errors_name_the_parameter(params, name):
    X, y = planted_pairs(np.ones((1, 2)), 5)
    with pytest.raises(ValueError, match=name):
        PopulationRanker(**params).fit(X, y)


# ---------------------------------------------------------------- PerUserRanker


def test_per_user_huge_shrinkage_is_the_population():
    X, y = planted_pairs(np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), 40)
    per_user = PerUserRanker(shrinkage=1e9).fit(X, y)
    population = PopulationRanker().fit(X, y)
    assert_allclose(per_user.population_coef_, population.population_coef_)
    assert_allclose(per_user.coef_, np.tile(population.population_coef_, (3, 1)), atol=1e-6)
    assert_allclose(per_user.predict(X), population.predict(X), atol=1e-6)


def test_per_user_tiny_shrinkage_follows_each_user():
    # Two users with opposite tastes: the population cannot please both.
    planted = np.array([[3.0, 0.0], [-3.0, 0.0]])
    X, y = planted_pairs(planted, 200)
    per_user = PerUserRanker(shrinkage=1e-3).fit(X, y)
    assert_array_equal(per_user.users_, [0, 1])
    for user in range(2):
        cosine = (
            per_user.coef_[user]
            @ planted[user]
            / np.linalg.norm(per_user.coef_[user])
            / np.linalg.norm(planted[user])
        )
        assert cosine > 0.98
    assert np.abs(per_user.population_coef_[0]) < 0.5


def test_per_user_cold_user_gets_the_population(feedback_data, corpus):
    X = with_rewards(corpus, feedback_data.X)
    labeled = ~feedback_data.is_query
    ranker = PerUserRanker().fit(X[labeled], feedback_data.y[labeled])
    cold = X[feedback_data.is_query].assign(user_id=lambda d: d["user_id"] + 1000)
    features = cold.filter(like="reward_").to_numpy()
    assert_allclose(ranker.predict(cold), features @ ranker.population_coef_)
    assert ranker.count_fallbacks(cold) == {"rows": len(cold), "users": 40}
    known = ranker.users_[[3, 0]]
    assert_allclose(
        ranker.user_preference([known[0], 5000, known[1]]),
        [ranker.coef_[3], ranker.population_coef_, ranker.coef_[0]],
    )


def test_per_user_auto_shrinkage_ranks_new_users_about_as_well_as_the_best_fixed_one():
    from _helpers import one_shot_regret

    from pllm_sk.baselines._per_user import SHRINKAGES

    regret = {
        float(s): one_shot_regret(PerUserRanker(shrinkage=float(s)))
        for s in SHRINKAGES[::2]
    }
    best, worst = min(regret.values()), max(regret.values())
    auto = one_shot_regret(PerUserRanker(random_state=0))
    assert worst > 1.5 * best
    assert auto <= best + 0.2 * (worst - best)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_user_auto_shrinkage_grows_with_the_noise_of_the_choices(seed):
    from _helpers import bradley_terry_rows

    # Three kinds of users; the same comparisons, chosen without noise, with
    # Bradley-Terry noise at temperature 1, and at temperature 4.
    weights = np.repeat(3 * np.eye(3), 30, axis=0)
    chosen = [
        PerUserRanker(random_state=seed)
        .fit(*bradley_terry_rows(weights, 20, temperature, seed=seed))
        .shrinkage_
        for temperature in (None, 1.0, 4.0)
    ]
    assert chosen[0] < chosen[1] < chosen[2]
    # The same seed chooses the same shrinkage; a given one is kept as given.
    X, y = bradley_terry_rows(weights, 20, None, seed=seed)
    assert PerUserRanker(random_state=seed).fit(X, y).shrinkage_ == chosen[0]
    assert PerUserRanker(shrinkage=0.3).fit(X, y).shrinkage_ == 0.3


@pytest.mark.parametrize("shrinkage", [-1.0, 0.0])
def test_per_user_shrinkage_must_be_positive(shrinkage):
    X, y = planted_pairs(np.ones((1, 2)), 5)
    with pytest.raises(ValueError, match="shrinkage"):
        PerUserRanker(shrinkage=shrinkage).fit(X, y)


# ---------------------------------------------------------------- OracleRanker


def test_oracle_ranks_exactly_by_true_reward(feedback_data):
    X, oracle = feedback_data.X, feedback_data.oracle
    ranker = OracleRanker(oracle).fit(X, feedback_data.y)
    utility = ranker.predict(X)
    assert_allclose(
        utility, oracle.reward(X["user_id"], X["prompt_id"], X["response_id"])
    )
    users, prompts, responses = chosen(X, utility)
    assert_array_equal(responses, oracle.best_response(users, prompts))
    assert ranker.n_users_ == 40
    assert ranker.count_fallbacks(X.assign(user_id=0)) == {"rows": 0, "users": 0}


def test_oracle_errors(feedback_data):
    X, y = feedback_data.X, feedback_data.y
    with pytest.raises(ValueError, match="needs an oracle"):
        OracleRanker().fit(X, y)
    with pytest.raises(TypeError, match="reward"):
        OracleRanker(oracle="not an oracle").fit(X, y)
    ranker = OracleRanker(feedback_data.oracle).fit(X, y)
    with pytest.raises(ValueError, match="unknown to the oracle"):
        ranker.predict(X.assign(user_id=X["user_id"] + 100))


# ---------------------------------------------------------------- BayesRanker


def two_model_corpus(seed):
    rng = np.random.RandomState(seed)
    n_prompts = 6
    return Corpus(
        [f"p{p}" for p in range(n_prompts)],
        [[f"r{k}" for k in range(4)] for _ in range(n_prompts)],
        rng.normal(size=(n_prompts, 4, 2)),
        reward_models=["a", "b"],
    )


def one_user_rows(corpus, weight, n_prompts, feedback="best_worst", seed=0):
    data = simulate_feedback(
        corpus,
        [[weight, 1 - weight]],
        n_history=n_prompts,
        n_query=0,
        feedback=feedback,
        history_split=None,
        random_state=seed,
    )
    return with_rewards(corpus, data.X), data.y


@pytest.mark.parametrize("n_prompts, weight", [(1, 0.9), (3, 0.3), (6, 0.02)])
def test_bayes_two_models_matches_the_truncated_beta_mean(n_prompts, weight):
    # With B = 2, w = (t, 1 - t), t ~ Beta(alpha, alpha), and the orders restrict t to
    # an interval [low, high]: the posterior mean of t has a closed form.
    corpus = two_model_corpus(n_prompts)
    X, y = one_user_rows(corpus, weight, n_prompts)
    ranker = BayesRanker(n_draws=40_000, random_state=0).fit(X, y)
    scores = X[["reward_a", "reward_b"]].to_numpy()
    t = np.linspace(0, 1, 200_001)
    feasible = np.ones_like(t, dtype=bool)
    for prompt in np.unique(X["prompt_id"]):
        rows = np.flatnonzero(X["prompt_id"].to_numpy() == prompt)
        best, worst = rows[np.argmax(y[rows])], rows[np.argmin(y[rows])]
        for row in rows:
            for above, below in [(best, row), (row, worst)]:
                if above != below:
                    d = scores[above] - scores[below]
                    feasible &= t * d[0] + (1 - t) * d[1] > 0
    low, high = t[feasible].min(), t[feasible].max()
    alpha = 0.05
    expected = (
        0.5
        * (
            special.betainc(alpha + 1, alpha, high)
            - special.betainc(alpha + 1, alpha, low)
        )
        / (special.betainc(alpha, alpha, high) - special.betainc(alpha, alpha, low))
    )
    assert ranker.user_preference([0])[0, 0] == pytest.approx(expected, abs=0.01)


def test_bayes_two_models_bradley_terry_matches_numerical_integration():
    corpus = two_model_corpus(3)
    X, y = one_user_rows(corpus, 0.7, 6, feedback="bradley_terry")
    ranker = BayesRanker(temperature=0.5, n_draws=40_000, random_state=0).fit(X, y)
    scores = X[["reward_a", "reward_b"]].to_numpy()
    winners, losers = scores[y == 1], scores[y == 0]
    d = winners - losers

    def likelihood(t):
        return np.prod(special.expit((t * d[:, 0] + (1 - t) * d[:, 1]) / 0.5))

    # Integrate against the Beta(alpha, alpha) density's singular ends exactly.
    weight = {"weight": "alg", "wvar": (0.05 - 1, 0.05 - 1)}
    mean = (
        integrate.quad(lambda t: t * likelihood(t), 0, 1, **weight)[0]
        / integrate.quad(likelihood, 0, 1, **weight)[0]
    )
    assert ranker.user_preference([0])[0, 0] == pytest.approx(mean, abs=0.01)


def test_bayes_matches_brute_force_rejection_sampling():
    X, y, is_query, _ = simulated(4, 2, n_query=0, seed=3)
    ranker = BayesRanker(n_draws=8000, random_state=0).fit(X, y)
    rng = np.random.RandomState(0)
    prior = rng.dirichlet(np.full(10, 0.05), size=400_000)
    scores = X.filter(like="reward_").to_numpy()
    for user in range(4):
        mine = np.flatnonzero(X["user_id"].to_numpy() == user)
        keep = np.ones(len(prior), dtype=bool)
        for prompt in np.unique(X["prompt_id"].to_numpy()[mine]):
            rows = mine[X["prompt_id"].to_numpy()[mine] == prompt]
            utility = prior @ scores[rows].T
            keep &= utility.argmax(axis=1) == np.argmax(y[rows])
            keep &= utility.argmin(axis=1) == np.argmin(y[rows])
        assert keep.sum() > 1000
        expected = prior[keep].mean(axis=0)
        assert np.abs(ranker.user_preference([user])[0] - expected).sum() < 0.05


def top1_accuracy(ranker, X, y, is_query, oracle):
    ranker.fit(X, y)
    users, prompts, responses = chosen(X[is_query], ranker.predict(X[is_query]))
    return np.mean(responses == oracle.best_response(users, prompts))


def test_bayes_top1_accuracy_rises_with_support():
    accuracy = [
        top1_accuracy(BayesRanker(n_draws=800, random_state=0), *simulated(100, n))
        for n in (1, 3, 8)
    ]
    assert accuracy[0] + 0.05 < accuracy[1] < accuracy[2]


@pytest.mark.parametrize("n_support", [1, 3])
def test_bayes_beats_per_user_with_little_support(n_support):
    X, y, is_query, oracle = simulated(200, n_support, seed=1)

    def mean_reward(ranker):
        ranker.fit(X, y)
        return oracle.reward(*chosen(X[is_query], ranker.predict(X[is_query]))).mean()

    bayes = mean_reward(BayesRanker(n_draws=800, random_state=0))
    assert bayes > mean_reward(PerUserRanker()) + 0.05
    assert bayes > mean_reward(PopulationRanker()) + 0.05


def test_bayes_is_stable_across_seeds_and_batches():
    X, y, is_query, _ = simulated(30, 3, seed=2)
    first = BayesRanker(random_state=0).fit(X, y)
    second = BayesRanker(random_state=1).fit(X, y)
    users = np.arange(30)
    difference = np.abs(first.user_preference(users) - second.user_preference(users))
    assert difference.sum(axis=1).mean() < 0.03
    # A user's estimate does not depend on which users are sampled with it (SIMD
    # transcendental functions may round the last bit differently).
    alone = BayesRanker(random_state=0).fit(X, y).user_preference([7, 31])
    assert_allclose(alone, first.user_preference([7, 31]), rtol=1e-9, atol=1e-12)


def test_bayes_cold_user_gets_the_prior_mean(feedback_data, corpus):
    X = with_rewards(corpus, feedback_data.X)
    labeled = ~feedback_data.is_query
    ranker = BayesRanker(n_draws=100, random_state=0).fit(
        X[labeled], feedback_data.y[labeled]
    )
    assert_allclose(ranker.population_coef_, np.full(10, 0.1))
    cold = X[feedback_data.is_query].assign(user_id=lambda d: d["user_id"] + 1000)
    expected = cold.filter(like="reward_").to_numpy().mean(axis=1)
    assert_allclose(ranker.predict(cold), expected)
    assert ranker.count_fallbacks(cold)["users"] == 40


def test_bayes_inconsistent_user_warns_and_gets_the_prior_mean():
    # The same two candidates ordered both ways on two prompts with equal scores.
    X = pd.DataFrame(
        {
            "user_id": [0, 0, 0, 0],
            "prompt_id": [0, 0, 1, 1],
            "response_id": [0, 1, 0, 1],
            "reward_a": [1.0, 0.0, 1.0, 0.0],
            "reward_b": [0.0, 1.0, 0.0, 1.0],
        }
    )
    ranker = BayesRanker(n_draws=100, random_state=0).fit(X, [1.0, 0.0, 0.0, 1.0])
    with pytest.warns(UserWarning, match="no weight vector"):
        weights = ranker.user_preference([0])
    assert_allclose(weights, [[0.5, 0.5]])
    # The Bradley-Terry likelihood takes the noise in its stride.
    soft = BayesRanker(temperature=1.0, n_draws=2000, random_state=0)
    soft.fit(X, [1.0, 0.0, 0.0, 1.0])
    assert_allclose(soft.user_preference([0]), [[0.5, 0.5]], atol=0.05)


def test_bayes_errors_name_the_problem():
    X = pd.DataFrame({"user_id": [0, 0], "prompt_id": [0, 0], "response_id": [0, 1]})
    with pytest.raises(ValueError, match="reward-model scores"):
        BayesRanker().fit(X, [1.0, 0.0])
    X["reward_a"] = [1.0, 0.0]
    for params, name in [
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 0.0}, "alpha"),
        ({"n_draws": 0}, "n_draws"),
        ({"n_chains": 0}, "n_chains"),
    ]:
        with pytest.raises(ValueError, match=name):
            BayesRanker(**params).fit(X, [1.0, 0.0])


# ---------------------------------------------------------------- bad input, every estimator


def every_estimator(oracle):
    return [
        PopulationRanker(),
        PerUserRanker(),
        OracleRanker(oracle),
        BayesRanker(n_draws=50, n_burnin=5, random_state=0),
    ]


@pytest.fixture
def reward_rows(feedback_data, corpus):
    return with_rewards(corpus, feedback_data.X), feedback_data.y, feedback_data.oracle


@pytest.mark.parametrize("index", range(4))
def test_bad_input_errors_name_the_problem(reward_rows, index):
    X, y, oracle = reward_rows
    estimator = every_estimator(oracle)[index]
    check_input_errors(
        estimator,
        X,
        y,
        missing="prompt_id",
        non_integer="user_id",
        feature="reward_beaver_7b",
        bad_row=3,
    )
    with pytest.raises(ValueError, match="different lengths"):
        estimator.fit(X, y[:-1])
    estimator.fit(X, y)
    with pytest.raises(ValueError, match="feature names"):
        estimator.predict(X.rename(columns={"reward_beaver_7b": "reward_other"}))
    with pytest.raises(ValueError):
        estimator.predict(X.drop(columns="reward_beaver_7b"))


@pytest.mark.parametrize(
    "make",
    [PopulationRanker, lambda: PerUserRanker(random_state=0)],
    ids=["population", "per_user"],
)
def test_float32_feature_columns_fit_as_their_float64_values(make):
    # float32 columns (what feature steps append) reach the solvers without a
    # float64 copy; the fit is the one on the same values in float64, to the bit.
    X, y, is_query, _ = simulated(40, 6, seed=3)
    X32 = X.astype({c: np.float32 for c in X.columns if c.startswith("reward_")})
    X64 = X32.astype({c: np.float64 for c in X32.columns if c.startswith("reward_")})
    fitted32 = make().fit(X32[~is_query], y[~is_query])
    fitted64 = make().fit(X64[~is_query], y[~is_query])
    assert_array_equal(fitted32.population_coef_, fitted64.population_coef_)
    assert_array_equal(fitted32.predict(X64[is_query]), fitted64.predict(X64[is_query]))
