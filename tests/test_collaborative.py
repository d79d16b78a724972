"""LowRankRanker and its fold-in solver, on cases small enough to check by hand."""

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
from _helpers import best_worst_rows
from numpy.testing import assert_allclose, assert_array_equal
from scipy import linalg
from scipy.optimize import minimize
from sklearn.base import clone

from pllm_sk.collaborative import LowRankRanker
from pllm_sk.collaborative._solvers import (
    FactorizationProblem,
    _cholesky_solve,
    balanced,
    pair_vectors,
)


@pytest.fixture
def history():
    """Twelve users, four devoted to each of three features, ten prompts each."""
    return best_worst_rows(np.repeat(np.eye(3), 4, axis=0), 10)


def pairwise_accuracy(utility, truth, groups):
    """Share of same-group row pairs with different truths that ``utility`` orders right."""
    right = total = 0
    for group in np.unique(groups):
        u, t = utility[groups == group], truth[groups == group]
        i, j = np.triu_indices(u.size, k=1)
        keep = t[i] != t[j]
        right += np.sum(np.sign(u[i] - u[j])[keep] == np.sign(t[i] - t[j])[keep])
        total += keep.sum()
    return right / total


# ---------------------------------------------------------------------- LowRankRanker


def test_recovers_a_planted_rank_2_structure():
    rng = np.random.RandomState(0)
    true_basis = rng.normal(size=(2, 6))
    weights = rng.normal(size=(40, 2)) @ true_basis  # 40 users, rank 2 in 6 features
    X, y = best_worst_rows(weights, 15, n_responses=4, n_features=6)
    model = LowRankRanker(rank=2, n_components=1, random_state=0).fit(X, y)
    assert model.basis_.shape == (2, 6) and model.n_iter_ >= 1
    # The learned map spans the planted two-dimensional space of preferences.
    cosines = linalg.svdvals(linalg.orth(true_basis.T).T @ linalg.orth(model.basis_.T))
    assert cosines.min() > 0.95
    # And every user's held-out rows are ordered as the user orders them.
    X_new, _ = best_worst_rows(weights, 3, n_responses=4, n_features=6, seed=1)
    features = X_new[[f"x{f}" for f in range(6)]].to_numpy()
    truth = np.einsum("nf,nf->n", features, weights[X_new["user_id"]])
    accuracy = pairwise_accuracy(model.predict(X_new), truth, X_new["prompt_id"].to_numpy())
    assert accuracy > 0.9


def test_rank_at_least_the_features_uses_the_identity_map(history):
    X, y = history
    model = LowRankRanker(rank=10, n_components=2, random_state=0).fit(X, y)
    assert model.rank_ == 3 and model.n_iter_ == 0
    assert_array_equal(model.basis_, np.eye(3))
    assert model.user_factors_.shape == (12, 3)


def test_item_embeddings_learn_items_on_the_ids_track():
    # Forty prompts with four responses; item and user factors of rank 2, planted.
    # Response slots carry no information: only the items' own embeddings do.
    rng = np.random.RandomState(0)
    n_users, n_prompts, n_responses = 60, 40, 4
    items = rng.normal(size=(n_prompts, n_responses, 2))
    users = rng.normal(size=(n_users, 2))
    rows, labels, held_out = [], [], []
    for u in range(n_users):
        prompts = rng.choice(n_prompts, 14, replace=False)
        for i, p in enumerate(prompts):
            utility = items[p] @ users[u]
            y = np.full(n_responses, 0.5)
            y[np.argmin(utility)], y[np.argmax(utility)] = 0.0, 1.0
            for r in range(n_responses):
                (held_out if i >= 12 else rows).append((u, p, r))
                (labels if i < 12 else []).append(y[r])
    X = pd.DataFrame(rows, columns=["user_id", "prompt_id", "response_id"])
    X_new = pd.DataFrame(held_out, columns=["user_id", "prompt_id", "response_id"])
    truth = np.einsum(
        "nr,nr->n", items[X_new["prompt_id"], X_new["response_id"]], users[X_new["user_id"]]
    )
    groups = (X_new["user_id"] * n_prompts + X_new["prompt_id"]).to_numpy()
    accuracy = {}
    for embed in (True, False):
        model = LowRankRanker(
            rank=2, n_components=1, item_embeddings=embed, random_state=0
        ).fit(X, np.array(labels))
        accuracy[embed] = pairwise_accuracy(model.predict(X_new), truth, groups)
    assert model.item_embedding_.shape == (0, 2)
    assert accuracy[True] > 0.8 and accuracy[False] < 0.65


def test_cold_user_gets_the_population_prediction(history):
    X, y = history
    model = LowRankRanker(n_components=3, random_state=0).fit(X, y)
    cold = X[X["user_id"] == 0].assign(user_id=77)
    utility = model.predict(cold)
    assert model.count_fallbacks(cold) == {"rows": len(cold), "users": 1}
    features = cold[["x0", "x1", "x2"]].to_numpy()
    assert_allclose(utility, features @ model.population_coef_)
    assert_allclose(model.population_factor_, model.prior_weights_ @ model.prior_means_)
    assert_allclose(model.user_preference([77, 78]), [model.population_factor_] * 2)


def test_user_preference_is_the_factor_that_predict_uses(history):
    X, y = history
    model = LowRankRanker(n_components=3, random_state=0).fit(X, y)
    assert model.n_iter_ == 0  # the identity map: a factor weighs the features
    users = X[X["user_id"].isin([2, 7])]
    factors = model.user_preference(users["user_id"])
    features = users[["x0", "x1", "x2"]].to_numpy()
    assert_allclose(model.predict(users), np.einsum("nf,nf->n", features, factors))


def test_user_without_comparisons_gets_the_prior_mean(history):
    X, y = history
    tied = X[X["user_id"] == 0].assign(user_id=50)
    model = LowRankRanker(n_components=3, random_state=0)
    model.fit(pd.concat([X, tied]), np.concatenate([y, np.full(len(tied), 0.5)]))
    assert 50 in model.users_
    assert_allclose(model.user_preference([50])[0], model.population_factor_)
    # Labeled, if all tied: the user is known, not a fallback.
    assert model.count_fallbacks(tied) == {"rows": 0, "users": 0}


def test_fold_in_follows_the_mixture_component_that_explains_the_user(history):
    X, y = history
    model = LowRankRanker(n_components=3, temperature=1.0, random_state=0).fit(X, y)
    # The three kinds of users each get a component near the axis they are devoted to.
    factors = model.user_preference(np.arange(12))
    assert_array_equal(np.argmax(factors, axis=1), np.repeat(np.arange(3), 4))
    X_new, y_new = best_worst_rows([[0.0, 0.0, 1.0]], 1, seed=7, first_user=30)
    model.partial_fit(X_new, y_new)
    assert np.argmax(model.user_preference([30])[0]) == 2


def population_state(model):
    """The fitted population parameters, pickled: ``partial_fit`` leaves them alone."""
    return pickle.dumps(
        (model.basis_, model.prior_means_, model.prior_covariances_, model.temperature_)
    )


def test_partial_fit_changes_that_user_and_no_one_else(history):
    X, y = history
    model = LowRankRanker(n_components=3, random_state=0).fit(X, y)
    new = best_worst_rows([[0.0, 1.0, 0.0]], 2, seed=3, first_user=40)
    returning = best_worst_rows([[0.0, 0.0, 1.0]], 3, seed=4, first_user=1)
    check_partial_fit_changes_only_that_user(model, X, new, returning, population_state)


def test_partial_fit_is_close_to_a_full_refit(history):
    X, y = history
    X_new, y_new = best_worst_rows([[0.0, 1.0, 0.0]], 3, seed=9, first_user=40)
    params = dict(n_components=3, temperature=1.0, random_state=0)
    both = LowRankRanker(**params).fit(pd.concat([X, X_new]), np.concatenate([y, y_new]))
    added = LowRankRanker(**params).fit(X, y).partial_fit(X_new, y_new)
    assert_allclose(added.predict(X_new), both.predict(X_new), rtol=0.1, atol=0.1)
    assert np.corrcoef(added.predict(X_new), both.predict(X_new))[0, 1] > 0.99


def test_partial_fit_on_an_unfitted_estimator_fits(history):
    X, y = history
    check_partial_fit_of_unfitted_fits(LowRankRanker(n_components=2, random_state=0), X, y)


def test_components_are_capped_by_the_prior_users(history):
    X, y = history
    model = LowRankRanker(n_components=50, min_prior_prompts=10, random_state=0).fit(X, y)
    assert model.n_components_ == model.prior_weights_.size == 12


def test_mixture_is_fitted_to_a_sample_of_many_prior_users(history, monkeypatch):
    from pllm_sk.collaborative import _low_rank, _prior

    X, y = history
    sizes = []
    fit = _prior.GaussianMixture.fit
    monkeypatch.setattr(
        _prior.GaussianMixture,
        "fit",
        lambda self, sample: sizes.append(sample.shape[0]) or fit(self, sample),
    )
    params = dict(n_components=2, random_state=0)
    full = LowRankRanker(**params).fit(X, y)
    assert sizes == [12]
    # A cap at the number of prior users draws nothing: the same fit.
    monkeypatch.setattr(_low_rank, "_MIXTURE_USERS", 12)
    assert_array_equal(LowRankRanker(**params).fit(X, y).prior_means_, full.prior_means_)
    monkeypatch.setattr(_low_rank, "_MIXTURE_USERS", 8)
    sampled = LowRankRanker(**params).fit(X, y)
    assert sizes[-1] == 8
    # Each mean is a mixture of the sampled users' factors (within their hull).
    assert np.all(sampled.prior_means_.min(axis=0) >= full.user_factors_.min(axis=0))
    assert np.all(sampled.prior_means_.max(axis=0) <= full.user_factors_.max(axis=0))


def test_identity_map_solves_only_the_mixtures_users(history, monkeypatch):
    from pllm_sk.collaborative import _low_rank

    X, y = history
    params = dict(n_components=2, random_state=0)
    full = LowRankRanker(**params).fit(X, y)
    monkeypatch.setattr(_low_rank, "_MIXTURE_USERS", 8)
    sampled = LowRankRanker(**params).fit(X, y)
    assert sampled.n_iter_ == 0
    # The sample's factors are those of the full solve, to the bit; the rest unsolved.
    solved = ~np.isnan(sampled.user_factors_).any(axis=1)
    assert solved.sum() == 8
    assert np.isnan(sampled.user_factors_[~solved]).all()
    assert_array_equal(sampled.user_factors_[solved], full.user_factors_[solved])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_temperature_is_softer_when_features_explain_choices_less(seed):
    X, y = best_worst_rows(np.repeat(np.eye(3), 10, axis=0), 12)
    model = LowRankRanker(n_components=3, random_state=seed)
    check_temperature_softer_on_shuffled_labels(model, X, y, seed)


def test_clone_pickle_and_determinism(history):
    X, y = history
    model = LowRankRanker(rank=2, n_components=2, random_state=3)
    fitted = check_clone_pickle_and_determinism(model, X, y, "basis_")
    from_array = clone(model).fit(X.to_numpy(), y)
    assert_allclose(from_array.predict(X.to_numpy()), fitted.predict(X))


def test_sklearn_parameter_conventions():
    check_parameter_conventions("LowRankRanker", LowRankRanker())


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(rank=0), ValueError, "rank"),
        (dict(n_components=0), ValueError, "n_components"),
        (dict(temperature="warm"), ValueError, "temperature"),
        (dict(temperature=-1.0), ValueError, "temperature"),
        (dict(user_l2=0.0), ValueError, "user_l2"),
        (dict(basis_l2=0.0), ValueError, "basis_l2"),
        (dict(embedding_l2=-1.0), ValueError, "embedding_l2"),
        (dict(item_embeddings="yes"), TypeError, "item_embeddings"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(tol=-1.0), ValueError, "tol"),
        (dict(min_prior_prompts=0), ValueError, "min_prior_prompts"),
    ],
)
def test_parameter_errors_name_the_parameter(history, params, error, match):
    X, y = history
    with pytest.raises(error, match=match):
        LowRankRanker(**params).fit(X, y)


def test_errors_name_the_problem(history):
    X, y = history
    model = LowRankRanker(n_components=2, random_state=0)
    check_input_errors(
        model,
        X,
        y,
        missing="response_id",
        non_integer="prompt_id",
        feature="x2",
        bad_row=5,
        bad_value=np.inf,
    )
    with pytest.raises(ValueError, match="comparison"):
        model.fit(X, np.zeros(len(y)))
    model.fit(X, y)
    with pytest.raises(ValueError, match="feature names"):
        model.predict(X.rename(columns={"x0": "other"}))
    with pytest.raises(ValueError, match="no labeled rows"):
        model.partial_fit(X, np.full(len(y), np.nan))


def test_embedding_newton_steps_reach_the_minimum_that_lbfgs_finds():
    # The item step's block-Jacobi Newton against a direct L-BFGS solve of the same
    # convex problem: users and map fixed, L2 on the embeddings.
    rng = np.random.RandomState(0)
    n_pairs, n_items, n_users, rank = 300, 40, 30, 3
    pair_items = rng.randint(0, n_items, size=(n_pairs, 2))
    pair_items[:10, 1] = -1  # an item outside the embedded ones counts as 0
    pair_user = rng.randint(0, n_users, size=n_pairs)
    factors = rng.normal(size=(n_users, rank))
    differences, basis = rng.normal(size=(n_pairs, 2)), rng.normal(size=(rank, 2))
    problem = FactorizationProblem(
        differences, pair_user, n_users, pair_items, n_items, (0.01, 1.0, 0.1), None
    )
    embedding = np.zeros((n_items, rank))
    basis_margin = problem.basis_margins(factors, basis)
    margin, losses = basis_margin + problem.embedding_margins(factors, embedding), None
    for _ in range(50):
        embedding, margin, losses = problem.embedding_step(factors, embedding, margin, losses)
    # The margins that come back are those of the embedding that comes back (up to
    # the float32 rounding of their changes), the losses theirs.
    assert_allclose(
        margin, basis_margin + problem.embedding_margins(factors, embedding),
        rtol=1e-4, atol=1e-4,
    )
    assert_array_equal(losses, problem.pair_losses(margin))
    loss = problem.objective(factors, basis, embedding)

    def objective(flat):
        padded = np.vstack([flat.reshape(n_items, rank), np.zeros((1, rank))])
        vectors = differences @ basis.T + padded[pair_items[:, 0]] - padded[pair_items[:, 1]]
        margin = np.einsum("pr,pr->p", factors[pair_user], vectors)
        return (
            np.logaddexp(0.0, -margin).sum() + 0.1 * np.sum(flat**2)
            + 0.01 * np.sum(factors**2) + np.sum(basis**2)
        )

    reference = minimize(objective, np.zeros(n_items * rank), method="L-BFGS-B")
    assert loss == pytest.approx(objective(embedding.ravel()))
    assert loss == pytest.approx(reference.fun, rel=1e-6)
    assert loss < objective(np.zeros(n_items * rank))


def small_problem(seed=0, n_pairs=300, n_items=40, n_users=30, rank=3):
    """A random factorisation problem with embeddings, and a point of it."""
    rng = np.random.RandomState(seed)
    pair_items = rng.randint(0, n_items, size=(n_pairs, 2))
    pair_items[:10, 1] = -1
    pair_user = rng.randint(0, n_users, size=n_pairs)
    differences = rng.normal(size=(n_pairs, 2))
    problem = FactorizationProblem(
        differences, pair_user, n_users, pair_items, n_items, (0.01, 1.0, 0.1), None
    )
    point = (
        rng.normal(size=(n_users, rank)), rng.normal(size=(rank, 2)),
        rng.normal(size=(n_items, rank)),
    )
    return problem, point


def test_basis_steps_reach_the_minimum_of_the_map():
    # The map's Newton step (halved until the objective falls; users and
    # embeddings fixed) against a direct L-BFGS solve of the same convex problem.
    problem, (factors, basis, embedding) = small_problem(seed=2)
    embedding_margin = problem.embedding_margins(factors, embedding)
    margin, losses = problem.basis_margins(factors, basis) + embedding_margin, None
    start = problem.objective(factors, basis, embedding)
    for _ in range(50):
        basis, margin, losses = problem.basis_step(factors, basis, embedding, margin, losses)
    # The margins that come back are those of the map that comes back (up to the
    # float32 rounding of their changes), the losses theirs.
    assert_allclose(
        margin, problem.basis_margins(factors, basis) + embedding_margin, rtol=1e-4, atol=1e-4
    )
    assert_array_equal(losses, problem.pair_losses(margin))

    def objective(flat):
        return problem.objective(factors, flat.reshape(basis.shape), embedding)

    # From there L-BFGS finds no lower point, and from zero none as low.
    value = problem.objective(factors, basis, embedding)
    for begin in (basis.ravel(), np.zeros(basis.size)):
        reference = minimize(objective, begin, method="L-BFGS-B")
        assert value <= reference.fun * (1.0 + 1e-6)
    assert value < start


@pytest.mark.parametrize("rank", [1, 2, 10])
def test_cholesky_solve_is_that_of_linalg_solve(rank):
    # The embeddings' blocks are solved by a Cholesky vectorised over the items.
    rng = np.random.RandomState(rank)
    square = rng.normal(size=(50, rank, rank + 3))
    matrices = square @ square.transpose(0, 2, 1) + 0.1 * np.eye(rank)
    rhs = rng.normal(size=(50, rank))
    rows, columns = np.tril_indices(rank)
    lower = np.ascontiguousarray(matrices[:, rows, columns].T)
    expected = np.linalg.solve(matrices, rhs[..., np.newaxis])[..., 0]
    assert_allclose(_cholesky_solve(lower, rhs), expected, rtol=1e-10, atol=1e-12)


def test_balanced_gauge_keeps_the_margins_and_lowers_the_penalty():
    problem, (factors, basis, embedding) = small_problem()
    # Unbalanced on purpose: users 10x too large, items 10x too small.
    point = (10.0 * factors, basis / 10.0, embedding / 10.0)
    moved = balanced(problem, *point)
    margins = [
        problem.basis_margins(f, a) + problem.embedding_margins(f, e) for f, a, e in (point, moved)
    ]
    assert_allclose(margins[1], margins[0], rtol=1e-4, atol=1e-4)
    assert problem.penalty(*moved) < 0.5 * problem.penalty(*point)
    # At the balanced gauge the two Gram matrices agree, so it is a fixed point.
    factors, basis, embedding = moved
    user_gram = 0.01 * factors.T @ factors
    item_gram = basis @ basis.T + 0.1 * embedding.T @ embedding
    assert_allclose(user_gram, item_gram, atol=1e-8 * np.abs(user_gram).max())
    again = balanced(problem, *moved)
    for block, same in zip(moved, again):
        assert_allclose(same, block, atol=1e-8)


def test_user_newton_steps_reach_each_users_own_optimum():
    # Users are independent given the items: the per-user halving steps converge
    # to the exact Newton solve of every user's problem.
    problem, (_, basis, embedding) = small_problem(seed=1)
    vectors = pair_vectors(problem.differences, basis, embedding, problem.pair_items)
    factors = np.zeros((problem.n_users, basis.shape[0]))
    margin = np.zeros(problem.pair_user.size)
    start = problem.objective(factors, basis, embedding)
    losses = None
    for _ in range(30):
        factors, margin, losses = problem.user_newton_step(factors, vectors, margin, losses)
    exact = problem.user_step(basis, embedding, None, 100)
    # Up to the float32 rounding of the margins' changes, which the halving sees.
    assert_allclose(factors, exact, rtol=1e-3, atol=1e-4)
    # The margins that come back are those of the factors (up to float32 rounding).
    assert_allclose(
        margin, np.einsum("pr,pr->p", vectors, factors[problem.pair_user]), rtol=1e-4, atol=1e-4
    )
    assert_array_equal(losses, problem.pair_losses(margin))
    assert problem.objective(factors, basis, embedding) < start


def test_auto_temperature_ranks_new_users_about_as_well_as_the_best_fixed_one():
    from _helpers import one_shot_regret

    from pllm_sk.core._calibration import TEMPERATURES

    regret = {
        float(t): one_shot_regret(LowRankRanker(temperature=float(t), random_state=0))
        for t in TEMPERATURES[::2]
    }
    best, worst = min(regret.values()), max(regret.values())
    auto = one_shot_regret(LowRankRanker(random_state=0))
    assert worst > 1.5 * best
    assert auto <= best + 0.2 * (worst - best)


@pytest.mark.parametrize("candidates", [(1, 8), (8, 1)])
def test_auto_components_prefer_a_mixture_that_describes_the_users(
    candidates, monkeypatch
):
    # Eight kinds of users, each devoted to one of 8 features: one Gaussian is a
    # poor prior for them, eight components give each kind its own. Whichever
    # candidate is scored first, the held-out score must prefer the mixture.
    monkeypatch.setattr("pllm_sk.collaborative._low_rank.N_COMPONENTS", candidates)
    X, y = best_worst_rows(np.repeat(np.eye(8), 10, axis=0), 10, n_features=8)
    assert LowRankRanker(random_state=0).fit(X, y).n_components_ == 8
