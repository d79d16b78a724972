"""Comparison pairs and the Bradley-Terry helpers, on cases small enough to check by hand."""

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import minimize

from pllm_sk.utils._preferences import (
    bradley_terry_loss,
    comparison_pairs,
    fit_bradley_terry_groups,
)


def _pair_set(winners, losers):
    return set(zip(winners.tolist(), losers.tolist()))


def test_pairs_best_worst_all_and_reduced():
    # One prompt of 8 candidates: row 1 best, row 4 worst, the others 0.5.
    y = np.array([0.5, 1.0, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5])
    middles = [0, 2, 3, 5, 6, 7]
    winners, losers = comparison_pairs(np.zeros(8, dtype=int), y)
    expected = {(1, m) for m in middles} | {(m, 4) for m in middles} | {(1, 4)}
    assert _pair_set(winners, losers) == expected
    assert winners.size == 13

    winners, losers = comparison_pairs(
        np.zeros(8, dtype=int), y, transitive_reduction=True
    )
    assert _pair_set(winners, losers) == expected - {(1, 4)}


def test_pairs_ranking_all_and_reduced():
    # y = number of candidates ranked below: row 3 first, then 0, 2, 1.
    y = np.array([2.0, 0.0, 1.0, 3.0])
    winners, losers = comparison_pairs(np.zeros(4, dtype=int), y)
    assert _pair_set(winners, losers) == {
        (3, 0),
        (3, 2),
        (3, 1),
        (0, 2),
        (0, 1),
        (2, 1),
    }
    winners, losers = comparison_pairs(
        np.zeros(4, dtype=int), y, transitive_reduction=True
    )
    assert _pair_set(winners, losers) == {(3, 0), (0, 2), (2, 1)}


def test_pairs_from_pairwise_feedback_with_two_keys_and_unlabeled_rows():
    # (user, prompt) keys; each labeled pair is one comparison. NaN rows and ties
    # give nothing, and rows of different groups are never compared.
    keys = np.array([[0, 5], [0, 5], [0, 6], [0, 6], [1, 5], [1, 5], [1, 5], [2, 7]])
    y = np.array([0.0, 1.0, 1.0, 0.0, np.nan, 1.0, 0.0, 1.0])
    winners, losers = comparison_pairs(keys, y)
    assert_array_equal(winners, [1, 2, 5])
    assert_array_equal(losers, [0, 3, 6])

    tied = comparison_pairs(np.zeros(3, dtype=int), [0.5, 0.5, 0.5])
    assert tied[0].size == 0 and tied[1].size == 0
    empty = comparison_pairs(np.zeros(2, dtype=int), [np.nan, np.nan])
    assert empty[0].size == 0


def test_pairs_match_brute_force(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    keys = rng.randint(0, 3, size=(60, 2))
    y = rng.randint(0, 4, size=60).astype(float)
    y[rng.rand(60) < 0.1] = np.nan
    expected = {
        (a, b)
        for a, b in itertools.permutations(range(60), 2)
        if (keys[a] == keys[b]).all() and y[a] > y[b]
    }
    winners, losers = comparison_pairs(keys, y)
    assert _pair_set(winners, losers) == expected
    assert len(expected) == winners.size  # no duplicates

    reduced = comparison_pairs(keys, y, transitive_reduction=True)
    levels = {}
    for key in {tuple(k) for k in keys}:
        in_group = (keys == key).all(axis=1) & ~np.isnan(y)
        levels[key] = np.unique(y[in_group])[::-1].tolist()
    expected_reduced = {
        (a, b)
        for a, b in expected
        if levels[tuple(keys[a])].index(y[b]) == levels[tuple(keys[a])].index(y[a]) + 1
    }
    assert _pair_set(*reduced) == expected_reduced


def test_pairs_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="one key row per label"):
        comparison_pairs(np.zeros(3, dtype=int), [1.0, 0.0])


def test_bradley_terry_loss_by_hand():
    differences = np.array([[1.0, 0.0], [0.0, -2.0]])
    loss, gradient = bradley_terry_loss(np.zeros(2), differences)
    assert loss == pytest.approx(2 * np.log(2))
    assert_allclose(gradient, [-0.5, 1.0])

    # Penalty l2 * ||coef - prior||^2 around a prior mean.
    loss, gradient = bradley_terry_loss(
        np.array([1.0, 1.0]), np.zeros((1, 2)), l2=3.0, prior_mean=[1.0, 0.0]
    )
    assert loss == pytest.approx(np.log(2) + 3.0)
    assert_allclose(gradient, [0.0, 6.0])


def test_bradley_terry_gradient_matches_finite_differences(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    differences = rng.normal(size=(30, 4))
    weight = rng.uniform(0.5, 2.0, size=30)
    prior = rng.normal(size=4)
    coef = rng.normal(size=4)

    def loss(c):
        return bradley_terry_loss(
            c, differences, l2=0.7, prior_mean=prior, sample_weight=weight
        )[0]

    _, gradient = bradley_terry_loss(
        coef, differences, l2=0.7, prior_mean=prior, sample_weight=weight
    )
    step = 1e-6
    numerical = [
        (loss(coef + step * e) - loss(coef - step * e)) / (2 * step) for e in np.eye(4)
    ]
    assert_allclose(gradient, numerical, rtol=1e-6, atol=1e-6)


def test_fit_groups_matches_per_group_lbfgs(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    differences = rng.normal(size=(200, 3))
    groups = rng.randint(0, 5, size=200)  # group 5 has no pairs
    prior = np.array([0.5, -1.0, 0.0])
    coef = fit_bradley_terry_groups(
        differences, groups, 6, l2=0.3, prior_mean=prior, tol=1e-12
    )
    for group in range(5):
        mine = differences[groups == group]
        _, gradient = bradley_terry_loss(coef[group], mine, l2=0.3, prior_mean=prior)
        assert np.abs(gradient).max() < 1e-6
        reference = minimize(
            lambda c, d=mine: bradley_terry_loss(c, d, l2=0.3, prior_mean=prior),
            prior,
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-10},
        )
        assert_allclose(coef[group], reference.x, atol=1e-5)
    assert_allclose(coef[5], prior)


def test_fit_groups_batching_and_group_priors_do_not_change_the_answer():
    rng = np.random.RandomState(1)
    differences = rng.normal(size=(120, 2))
    groups = np.repeat(np.arange(6), [2, 5, 10, 20, 33, 50])
    priors = rng.normal(size=(6, 2))
    whole = fit_bradley_terry_groups(differences, groups, 6, l2=1.0, prior_mean=priors)
    batched = fit_bradley_terry_groups(
        differences, groups, 6, l2=1.0, prior_mean=priors, chunk_size=30
    )
    assert_allclose(whole, batched, atol=1e-10)


def test_fit_groups_shrinkage_limits():
    # One comparison saying feature 0 beats feature 1.
    differences = np.array([[1.0, -1.0]])
    prior = np.array([-1.0, 1.0])
    strong = fit_bradley_terry_groups(differences, [0], 1, l2=1e8, prior_mean=prior)
    assert_allclose(strong[0], prior, atol=1e-6)
    weak = fit_bradley_terry_groups(differences, [0], 1, l2=1e-3, prior_mean=prior)
    assert weak[0] @ differences[0] > 0  # the comparison now wins over the prior


def test_fit_groups_requires_positive_l2():
    with pytest.raises(ValueError, match="l2 must be > 0"):
        fit_bradley_terry_groups(np.ones((1, 1)), [0], 1, l2=0.0, prior_mean=[0.0])
