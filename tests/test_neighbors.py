"""UserKNNRanker: nearest historical users, on cases small enough to check by hand."""

import pickle

import numpy as np
import pandas as pd
import pytest
from _estimator_checks import (
    check_clone_pickle_and_determinism,
    check_input_errors,
    check_parameter_conventions,
    check_partial_fit_changes_only_that_user,
    check_partial_fit_of_unfitted_fits,
    check_temperature_softer_on_shuffled_labels,
)
from _helpers import best_worst_rows, one_shot_regret
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import log_expit
from sklearn.base import clone

from pllm_sk.baselines import PopulationRanker
from pllm_sk.neighbors import UserKNNRanker
from pllm_sk.neighbors._knn import IMPUTATIONS

# Three kinds of users, each devoted to one feature.
KINDS = np.eye(3)


@pytest.fixture
def history():
    """Nine historical users, three of each kind, twelve prompts each."""
    return best_worst_rows(np.repeat(KINDS, 3, axis=0), 12)


def copy_user(X, y, source, new_id):
    mask = (X["user_id"] == source).to_numpy()
    return X[mask].assign(user_id=new_id), y[mask]


def test_identical_user_gets_that_users_ranking(history):
    X, y = history
    X_copy, y_copy = copy_user(X, y, source=4, new_id=100)
    knn = UserKNNRanker(n_neighbors=1, min_neighbor_prompts=5, random_state=0)
    knn.fit(pd.concat([X, X_copy]), np.concatenate([y, y_copy]))
    neighbors, weights = knn.user_neighbors([100])
    assert neighbors.tolist() == [[4]] and weights.tolist() == [[1.0]]
    # On a new prompt, the copy ranks exactly as user 4's preference does.
    new = pd.DataFrame(
        {"user_id": 100, "prompt_id": 999, "response_id": range(4),
         "x0": [0.3, -1.0, 2.0, 0.1], "x1": [2.0, 0.5, -1.0, 0.0], "x2": 0.0}
    )
    coef_4 = knn.neighbor_coef_[np.searchsorted(knn.neighbor_users_, 4)]
    assert_allclose(knn.predict(new), new[["x0", "x1", "x2"]].to_numpy() @ coef_4)
    assert np.argmax(knn.predict(new)) == 0  # user 4 is devoted to x1


def test_user_preference_is_the_neighbours_weighted_preference(history):
    X, y = history
    X_copy, y_copy = copy_user(X, y, source=4, new_id=100)
    knn = UserKNNRanker(n_neighbors=3, min_neighbor_prompts=5, random_state=0)
    knn.fit(pd.concat([X, X_copy]), np.concatenate([y, y_copy]))
    neighbors, weights = knn.user_neighbors([100, 2])
    coef = knn.neighbor_coef_[np.searchsorted(knn.neighbor_users_, neighbors)]
    expected = np.einsum("nk,nkf->nf", weights, coef)
    # Repeated and unknown users: rows in the order asked, the cold one the population's.
    preference = knn.user_preference([2, 100, 555, 2])
    assert_allclose(preference[[1, 0, 3]], expected[[0, 1, 1]])
    assert_array_equal(preference[2], knn.population_coef_)
    with pytest.raises(TypeError, match="integers"):
        knn.user_preference([1.5])


def test_identical_user_on_the_ids_track_reproduces_the_neighbours_labels(history):
    X, y = history
    X = X[["user_id", "prompt_id", "response_id"]]
    X_copy, y_copy = copy_user(X, y, source=4, new_id=100)
    knn = UserKNNRanker(n_neighbors=1, min_neighbor_prompts=5, temperature=1.0)
    knn.fit(pd.concat([X, X_copy]), np.concatenate([y, y_copy]))
    assert knn.user_neighbors([100])[0].tolist() == [[4]]
    utility = knn.predict(X_copy)
    # User 4's best row of every prompt comes first and the worst last, whatever the
    # response slot: the neighbour's labels on the same (prompt, response) ids.
    for prompt in np.unique(X_copy["prompt_id"]):
        in_prompt = (X_copy["prompt_id"] == prompt).to_numpy()
        assert np.argmax(utility[in_prompt]) == np.argmax(y_copy[in_prompt])
        assert np.argmin(utility[in_prompt]) == np.argmin(y_copy[in_prompt])
    # A prompt no neighbour labeled backs off to the neighbour's response-slot weights.
    new = pd.DataFrame({"user_id": 100, "prompt_id": 999, "response_id": range(4)})
    coef_4 = knn.neighbor_coef_[np.searchsorted(knn.neighbor_users_, 4)]
    assert_allclose(knn.predict(new), coef_4)


@pytest.mark.parametrize("imputation", [0.0, 0.5, 1.0])
def test_item_imputation_stands_the_labelers_in_for_the_other_neighbours(
    history, imputation
):
    X, y = history
    X = X[["user_id", "prompt_id", "response_id"]]
    params = dict(n_neighbors=8, weights="uniform", min_neighbor_prompts=5)
    knn = UserKNNRanker(item_imputation=imputation, **params).fit(X, y)
    assert knn.item_imputation_ == imputation
    # User 0's 8 neighbours are the other users, 1/8 each; only user 4 labeled
    # prompt 48, so W = 1/8 and S = b_4(48, r) / 8.
    rows = pd.DataFrame({"user_id": 0, "prompt_id": 48, "response_id": range(4)})
    others = np.setdiff1d(knn.neighbor_users_, [0])
    slot_level = knn.neighbor_coef_[np.searchsorted(knn.neighbor_users_, others)].mean(0)
    shift_4 = 8.0 * (
        UserKNNRanker(item_imputation=0.0, **params).fit(X, y).predict(rows) - slot_level
    )
    in_prompt = (X["prompt_id"] == 48).to_numpy()
    # b_4 reproduces user 4's labels: best above all, worst below all.
    assert np.argmax(shift_4) == np.argmax(y[in_prompt])
    assert np.argmin(shift_4) == np.argmin(y[in_prompt])
    expected = slot_level + (1 / 8 + imputation * 7 / 8) * shift_4
    assert_allclose(knn.predict(rows), expected)
    # A prompt that no neighbour labeled does not depend on the imputation.
    unseen = rows.assign(prompt_id=999)
    assert_allclose(knn.predict(unseen), slot_level)


def test_auto_item_imputation_imputes_nothing_when_no_prompt_is_shared(history):
    # Every user labels prompts of their own: no other user's label exists to
    # impute from, every share ties on the calibration users, and the least
    # imputation among the ties is kept.
    X, y = history
    X = X[["user_id", "prompt_id", "response_id"]]
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    assert knn.item_imputation_ == IMPUTATIONS.min() == 0.0
    cosine = UserKNNRanker(similarity="cosine_chosen", min_neighbor_prompts=5)
    assert cosine.fit(X, y).item_imputation_ == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_item_imputation_imputes_when_other_users_labels_predict_choices(seed):
    # Everyone shares each item's quality (the response slot says nothing); each
    # prompt is labeled by about 3 of 100 users, so the labelers' weight W is small
    # and only imputing their votes for the other neighbours ranks well.
    rng = np.random.RandomState(0)
    n_users, n_prompts, n_responses = 100, 150, 4
    quality = rng.normal(size=(n_prompts, n_responses))
    rows, labels = [], []
    for u in range(n_users):
        for p in rng.choice(n_prompts, 12, replace=False):
            utility = quality[p] + 0.3 * rng.normal(size=n_responses)
            y = np.full(n_responses, 0.5)
            y[utility.argmin()], y[utility.argmax()] = 0.0, 1.0
            rows.extend((u, p, r) for r in range(n_responses))
            labels.extend(y)
    X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id"])
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=seed)
    assert knn.fit(X, np.array(labels)).item_imputation_ > 0


def test_likelihood_weights_are_the_posterior_over_candidates(history):
    X, y = history
    X_new, y_new = best_worst_rows([[0.0, 1.0, 0.2]], 2, seed=5, first_user=50)
    knn = UserKNNRanker(n_neighbors=8, min_neighbor_prompts=5, temperature=2.0)
    knn.fit(pd.concat([X, X_new]), np.concatenate([y, y_new]))
    neighbors, weights = knn.user_neighbors([50])
    assert 50 not in neighbors[0] and neighbors.shape == (1, 8)
    # Every within-prompt comparison of user 50, chosen minus rejected features.
    features = X_new[["x0", "x1", "x2"]].to_numpy()
    differences = [
        features[a] - features[b]
        for a in range(len(y_new))
        for b in range(len(y_new))
        if X_new["prompt_id"].iat[a] == X_new["prompt_id"].iat[b] and y_new[a] > y_new[b]
    ]
    coef = knn.neighbor_coef_[np.searchsorted(knn.neighbor_users_, neighbors[0])]
    loglik = log_expit(np.array(differences) @ coef.T).sum(axis=0) / 2.0
    expected = np.exp(loglik - loglik.max())
    assert_allclose(weights[0], expected / expected.sum(), rtol=1e-4)
    assert set(neighbors[0, :3]) == {3, 4, 5}  # the users devoted to x1


def test_pruned_search_finds_the_exact_top_neighbours():
    # 24 candidates of random preferences and few neighbours: the bound prunes.
    rng = np.random.RandomState(0)
    X, y = best_worst_rows(rng.dirichlet(np.full(3, 0.3), 24), 10, seed=1)
    X_new, y_new = best_worst_rows([[0.2, 0.7, 0.1], [0.0, 0.0, 1.0]], 3, seed=2, first_user=50)
    knn = UserKNNRanker(n_neighbors=5, min_neighbor_prompts=5, temperature=1.0)
    knn.fit(pd.concat([X, X_new]), np.concatenate([y, y_new]))
    neighbors, _ = knn.user_neighbors([50, 51])
    features = X_new[["x0", "x1", "x2"]].to_numpy()
    for row, user in enumerate([50, 51]):
        mine = (X_new["user_id"] == user).to_numpy()
        differences = [
            features[a] - features[b]
            for a in np.flatnonzero(mine)
            for b in np.flatnonzero(mine)
            if X_new["prompt_id"].iat[a] == X_new["prompt_id"].iat[b] and y_new[a] > y_new[b]
        ]
        loglik = log_expit(np.array(differences) @ knn.neighbor_coef_.T).sum(axis=0)
        expected = knn.neighbor_users_[np.argsort(-loglik)[:5]]
        assert_array_equal(neighbors[row], expected)


@pytest.mark.parametrize(
    "similarity, kind",
    [("cosine_chosen", 1), ("cosine_rejected", 2), ("cosine_difference", 1)],
)
def test_cosine_similarities_use_the_papers_representations(similarity, kind):
    # Items are one-hot: each kind of user chooses their own feature's row and
    # rejects the row of the next kind's feature.
    rows, labels = [], []
    for user in range(7):
        kind_of_user = user % 3 if user < 6 else kind
        for q in range(6):
            for r in range(3):
                rows.append((user, 10 * user + q, r, *np.eye(3)[r]))
                label = {kind_of_user: 1.0, (kind_of_user + 1) % 3: 0.0}.get(r, 0.5)
                labels.append(label)
    X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id", "a", "b", "c"])
    knn = UserKNNRanker(
        n_neighbors=2, similarity=similarity, weights="uniform", min_neighbor_prompts=6
    ).fit(X, np.array(labels))
    neighbors, weights = knn.user_neighbors([6])
    assert sorted(neighbors[0].tolist()) == [kind, kind + 3]
    assert_allclose(weights, [[0.5, 0.5]])
    assert knn.temperature_ is None


def test_cold_user_gets_the_population_prediction(history):
    X, y = history
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    cold = X[X["user_id"] == 0].assign(user_id=77)
    features = cold[["x0", "x1", "x2"]].to_numpy()
    utility = knn.predict(cold)
    assert knn.count_fallbacks(cold) == {"rows": len(cold), "users": 1}
    assert_allclose(utility, features @ knn.population_coef_)
    population = PopulationRanker().fit(X, y)
    assert_allclose(utility, population.predict(cold), rtol=1e-4, atol=1e-6)
    # Predicting leaves the estimator as it was: the count does not grow.
    knn.predict(X)
    assert knn.count_fallbacks(cold) == {"rows": len(cold), "users": 1}
    assert knn.count_fallbacks(X)["users"] == 0


def population_state(knn):
    """The fitted neighbours' coefficients and temperature, which ``partial_fit`` keeps."""
    return pickle.dumps(knn.neighbor_coef_), knn.temperature_


def test_partial_fit_changes_that_user_and_no_one_else(history):
    X, y = history
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    new = best_worst_rows([[0.0, 0.0, 1.0]], 3, seed=3, first_user=40)
    # A returning user (user 1, devoted to x0) adds comparisons for x2.
    returning = best_worst_rows([[0.0, 0.0, 1.0]], 2, seed=4, first_user=1)
    check_partial_fit_changes_only_that_user(knn, X, new, returning, population_state)
    # The new user is fitted, not a neighbour for others until a refit.
    assert 40 in knn.users_ and 40 not in knn.neighbor_users_


def test_partial_fit_is_close_to_a_full_refit(history):
    X, y = history
    X_new, y_new = best_worst_rows([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], 3, seed=9, first_user=40)
    both = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(
        pd.concat([X, X_new]), np.concatenate([y, y_new])
    )
    added = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    added.partial_fit(X_new, y_new)
    assert_array_equal(added.user_neighbors([40, 41])[0], both.user_neighbors([40, 41])[0])
    assert_allclose(added.predict(X_new), both.predict(X_new), rtol=0.05, atol=0.05)


def test_predicting_users_in_chunks_changes_nothing(history, monkeypatch):
    X, y = history
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    at_once = knn.predict(X)
    monkeypatch.setattr("pllm_sk.neighbors._knn._USERS_PER_CHUNK", 2)
    assert_allclose(knn.predict(X), at_once, rtol=1e-12)



def test_likelihood_blocks_change_nothing(history, monkeypatch):
    # Blocks of one group each against the whole search in one block.
    X, y = history
    knn = UserKNNRanker(n_neighbors=4, min_neighbor_prompts=5, random_state=0)
    whole = knn.fit(X, y)
    neighbors, loglik = whole.user_neighbors(np.arange(9))
    monkeypatch.setattr("pllm_sk.neighbors._knn._BLOCK_ENTRIES", 1)
    blocked = clone(knn).fit(X, y)
    blocked_neighbors, blocked_loglik = blocked.user_neighbors(np.arange(9))
    assert_array_equal(blocked_neighbors, neighbors)
    assert_allclose(blocked_loglik, loglik, rtol=1e-6)
    assert_allclose(blocked.predict(X), whole.predict(X), rtol=1e-6, atol=1e-9)

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_temperature_is_softer_when_features_explain_choices_less(seed):
    X, y = best_worst_rows(np.repeat(KINDS, 10, axis=0), 12)
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=seed)
    check_temperature_softer_on_shuffled_labels(knn, X, y, seed)


def test_partial_fit_on_an_unfitted_estimator_fits(history):
    X, y = history
    check_partial_fit_of_unfitted_fits(
        UserKNNRanker(min_neighbor_prompts=5, random_state=0), X, y
    )


def test_auto_temperature_is_calibrated_and_deterministic(history):
    X, y = history
    first = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    second = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    assert first.temperature_ == second.temperature_
    assert_array_equal(first.predict(X), second.predict(X))
    # Uniform weights do not depend on the temperature.
    uniform = UserKNNRanker(weights="uniform", min_neighbor_prompts=5).fit(X, y)
    assert uniform.temperature_ == 1.0


def test_callable_weights(history):
    X, y = history
    knn = UserKNNRanker(
        n_neighbors=4, weights=lambda similarity: np.ones_like(similarity),
        min_neighbor_prompts=5, temperature=1.0,
    ).fit(X, y)
    assert_allclose(knn.user_neighbors([0, 3])[1], 0.25)
    bad = clone(knn).set_params(weights=lambda similarity: -np.ones_like(similarity))
    with pytest.raises(ValueError, match="non-negative"):
        bad.fit(X, y).predict(X)


def test_array_input_matches_dataframe_input(history):
    X, y = history
    from_frame = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X, y)
    from_array = UserKNNRanker(min_neighbor_prompts=5, random_state=0).fit(X.to_numpy(), y)
    assert_allclose(from_array.predict(X.to_numpy()), from_frame.predict(X))


def test_clone_pickle_and_determinism(history):
    X, y = history
    knn = UserKNNRanker(n_neighbors=5, min_neighbor_prompts=5, random_state=3)
    check_clone_pickle_and_determinism(knn, X, y, "neighbor_coef_")


def test_sklearn_parameter_conventions():
    check_parameter_conventions("UserKNNRanker", UserKNNRanker())


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(n_neighbors=0), "n_neighbors"),
        (dict(similarity="euclidean"), "similarity"),
        (dict(weights="distance"), "weights"),
        (dict(temperature="warm"), "temperature"),
        (dict(temperature=0.0), "temperature"),
        (dict(item_imputation="some"), "item_imputation"),
        (dict(item_imputation=1.5), "item_imputation"),
        (dict(shrinkage=0.0), "shrinkage"),
        (dict(alpha=-1.0), "alpha"),
        (dict(min_neighbor_prompts=0), "min_neighbor_prompts"),
        (dict(max_iter=0), "max_iter"),
    ],
)
def test_parameter_errors_name_the_parameter(history, params, match):
    X, y = history
    with pytest.raises(ValueError, match=match):
        UserKNNRanker(**params).fit(X, y)


def test_errors_name_the_problem(history):
    X, y = history
    knn = UserKNNRanker(min_neighbor_prompts=5, random_state=0)
    check_input_errors(
        knn, X, y, missing="prompt_id", non_integer="user_id", feature="x1", bad_row=2
    )
    with pytest.raises(ValueError, match="different lengths"):
        knn.fit(X, y[:-1])
    with pytest.raises(ValueError, match="comparison"):
        knn.fit(X, np.ones(len(y)))
    with pytest.raises(ValueError, match="min_neighbor_prompts=20"):
        clone(knn).set_params(min_neighbor_prompts=20).fit(X, y)
    knn.fit(X, y)
    with pytest.raises(ValueError, match="feature names"):
        knn.predict(X.rename(columns={"x1": "other"}))
    with pytest.raises(ValueError, match="feature names"):
        knn.partial_fit(X.rename(columns={"x1": "other"}), y)
    with pytest.raises(ValueError, match="no labeled rows"):
        knn.partial_fit(X, np.full(len(y), np.nan))
    with pytest.raises(ValueError, match="User 77"):
        knn.user_neighbors([0, 77])


def test_auto_temperature_ranks_new_users_about_as_well_as_the_best_fixed_one():
    from pllm_sk.core._calibration import TEMPERATURES

    regret = {
        float(t): one_shot_regret(UserKNNRanker(temperature=float(t), item_imputation=0.0))
        for t in TEMPERATURES
    }
    best, worst = min(regret.values()), max(regret.values())
    auto = one_shot_regret(UserKNNRanker(item_imputation=0.0, random_state=0))
    # Far from every end of the grid, near the best of it.
    assert worst > 1.5 * best
    assert auto <= best + 0.2 * (worst - best)


def test_imputation_ignores_labelers_of_negligible_weight():
    from pllm_sk.neighbors._knn import _imputation_factor

    # 1 / 1e-320 overflows: the factor must stay finite, so that no margin is NaN.
    factor = _imputation_factor(np.array([1e-320, 0.0, 0.5, 1.0]), 1.0)
    assert_allclose(factor, [0.0, 0.0, 2.0, 1.0])


def test_float32_feature_columns_fit_as_their_float64_values(history):
    # float32 columns (what feature steps append) reach the solvers without a
    # float64 copy; the fit is the one on the same values in float64, to the bit.
    X, y = history
    features = [c for c in X.columns if c not in ("user_id", "prompt_id", "response_id")]
    X32 = X.astype(dict.fromkeys(features, np.float32))
    X64 = X32.astype(dict.fromkeys(features, np.float64))
    fitted32 = UserKNNRanker(n_neighbors=4, random_state=0).fit(X32, y)
    fitted64 = UserKNNRanker(n_neighbors=4, random_state=0).fit(X64, y)
    assert_array_equal(fitted32.neighbor_coef_, fitted64.neighbor_coef_)
    assert fitted32.temperature_ == fitted64.temperature_
    assert_array_equal(fitted32.predict(X64), fitted64.predict(X64))
