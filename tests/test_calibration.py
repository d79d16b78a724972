"""The shared calibration helpers, on cases small enough to check by hand."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import expit

from pllm_sk.core._calibration import (
    TEMPERATURES,
    best_grid_value,
    calibrate,
    calibration_split,
    laplace_predictive,
    log_likelihood_scores,
    per_user_means,
    within_one_standard_error,
)
from pllm_sk.core._comparisons import UserComparisons


@pytest.mark.parametrize("exponent", [-1.3, 0.0, 0.45, 2.2])
def test_best_grid_value_is_the_vertex_of_a_parabola_in_log2(exponent):
    # Scores exactly quadratic in log2(T): the refinement lands on the vertex.
    scores = -((np.log2(TEMPERATURES) - exponent) ** 2)[np.newaxis]
    assert best_grid_value(np.repeat(scores, 3, axis=0)) == pytest.approx(2.0**exponent)


def test_best_grid_value_on_another_grid_and_at_its_ends():
    grid = 4.0 ** np.arange(-2, 3)  # two octaves per step
    scores = -((np.log2(grid) - 1.0) ** 2)[np.newaxis]
    assert best_grid_value(scores, grid) == pytest.approx(2.0)
    # Increasing scores: the largest value, never beyond the grid.
    assert best_grid_value(np.arange(grid.size)[np.newaxis], grid) == grid[-1]
    assert best_grid_value(-np.arange(grid.size)[np.newaxis], grid) == grid[0]
    # No calibration user: the neutral value.
    assert best_grid_value(np.empty((0, grid.size)), grid) == 1.0


def test_best_grid_value_skips_values_left_out_of_the_search():
    scores = -((np.log2(TEMPERATURES) - 0.4) ** 2)[np.newaxis]
    scores[:, 1::2] = np.nan  # every second temperature not scored
    # The best scored one (T = 1) is kept: its neighbours were not scored.
    assert best_grid_value(scores) == 1.0


def test_log_likelihood_scores_weigh_every_user_the_same():
    probability = np.array([[0.5, 0.9], [0.5, 0.9], [0.25, 0.5]])
    owner = np.array([0, 0, 2])
    scores = log_likelihood_scores(probability, owner, 3)
    # User 1 has no comparison and is left out; user 0's two comparisons average.
    assert_allclose(scores, np.log([[0.5, 0.9], [0.25, 0.5]]))
    assert_allclose(per_user_means(np.arange(6.0).reshape(3, 2), owner, 3), [[1, 2], [4, 5]])


def random_laplace_problem(seed, n_users=4, n_components=3, rank=2, n_support=12, n=9):
    """Random inputs of laplace_predictive, as a dict of its positional arguments."""
    rng = np.random.default_rng(seed)
    roots = rng.normal(size=(n_components, rank, rank))
    return dict(
        vectors=rng.normal(size=(n, rank)),
        owner=np.sort(rng.integers(0, n_users, n)),
        support_vectors=rng.normal(size=(n_support, rank)),
        support_owner=np.sort(rng.integers(0, n_users, n_support)),
        coef=rng.normal(size=(n_users, n_components, rank)),
        posterior=rng.dirichlet(np.ones(n_components), n_users),
        prior_precisions=roots @ roots.transpose(0, 2, 1) + np.eye(rank),
        weight=0.7,
    )


def test_laplace_predictive_matches_a_direct_computation():
    problem = random_laplace_problem(0)
    vectors, owner, coef = problem["vectors"], problem["owner"], problem["coef"]
    support, support_owner = problem["support_vectors"], problem["support_owner"]
    expected = np.zeros(len(vectors))
    for n, user in enumerate(owner):
        for c in range(coef.shape[1]):
            hessian = problem["prior_precisions"][c].copy()
            for i in np.flatnonzero(support_owner == user):
                s = expit(support[i] @ coef[user, c])
                hessian += problem["weight"] * s * (1 - s) * np.outer(support[i], support[i])
            variance = vectors[n] @ np.linalg.solve(hessian, vectors[n])
            margin = vectors[n] @ coef[user, c] / np.sqrt(1 + np.pi / 8 * variance)
            expected[n] += problem["posterior"][user, c] * expit(margin)
    assert_allclose(laplace_predictive(**problem), expected, rtol=1e-12)


def test_laplace_predictive_support_weights_count_as_repeated_comparisons():
    problem = random_laplace_problem(1, n_users=3, n_components=2, n_support=8, n=6)
    repeats = np.random.default_rng(2).integers(1, 4, 8)
    weighted = laplace_predictive(**problem, support_weight=repeats.astype(float))
    repeated = laplace_predictive(
        **dict(
            problem,
            support_vectors=np.repeat(problem["support_vectors"], repeats, axis=0),
            support_owner=np.repeat(problem["support_owner"], repeats),
        )
    )
    assert_allclose(weighted, repeated, rtol=1e-12)
    assert not np.allclose(weighted, laplace_predictive(**problem))


def test_laplace_predictive_is_the_plug_in_when_the_posterior_is_certain():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0]])
    coef = np.array([[[0.5, -1.0]]])
    probability = laplace_predictive(
        vectors,
        np.zeros(2, dtype=np.int64),
        np.empty((0, 2)),
        np.empty(0, dtype=np.int64),
        coef,
        np.ones((1, 1)),
        1e12 * np.eye(2)[np.newaxis],
        1.0,
    )
    assert_allclose(probability, expit(vectors @ coef[0, 0]), rtol=1e-9)


def test_calibration_split_holds_out_at_most_n_held_out_prompts():
    # Three users with 8, 8 and 1 prompts, one comparison per prompt.
    owner = np.repeat([10, 11, 12], [8, 8, 1])
    prompts = np.concatenate([np.arange(8), np.arange(8) + 100, [200]])
    store = UserComparisons(np.array([10, 11, 12]), owner, prompt=prompts)
    positions, support, held_out = calibration_split(
        store, np.arange(3), np.random.RandomState(0), 5, n_held_out=3
    )
    # The one-prompt user has nothing to hold out and is skipped.
    assert_array_equal(np.sort(positions), [0, 1])
    for user in range(2):
        shown = set(prompts[support[0][support[1] == user]])
        hidden = set(prompts[held_out[0][held_out[1] == user]])
        assert shown and not shown & hidden
        assert len(hidden) == 3
    # Support sizes cycle 1, 2, ...: the first user shows one prompt, the second two.
    assert np.bincount(support[1]).tolist() == [1, 2]


def _scores_at(table, grid):
    """A scoring function reading column ``grid == setting`` of ``table``, and its log."""
    calls = []

    def score(setting, previous=None):
        calls.append((float(setting), previous))
        return table[:, np.flatnonzero(grid == setting)[0]]

    return score, calls


def test_calibrate_scores_the_grid_and_applies_the_parabola_rule():
    rng = np.random.RandomState(0)
    table = -((np.log2(TEMPERATURES) - 0.7) ** 2) + rng.normal(0, 0.1, (5, TEMPERATURES.size))
    score, calls = _scores_at(table, TEMPERATURES)
    result = calibrate(score, TEMPERATURES)
    assert [setting for setting, _ in calls] == TEMPERATURES.tolist()
    assert_array_equal(result.table, table)
    assert result.best == best_grid_value(table)
    assert result.index == int(np.argmax(table.mean(axis=0)))
    assert result.best != TEMPERATURES[result.index]  # refined off the grid


def test_calibrate_discrete_rules():
    grid = np.array([0.0, 0.25, 0.5, 1.0])
    # Column 2 is best on average; column 1 is within one standard error of it.
    table = np.array([[0.2, 0.60, 0.7, 0.1], [0.2, 0.70, 0.6, 0.1], [0.2, 0.65, 0.7, 0.1]])
    score, _ = _scores_at(table, grid)
    assert calibrate(score, grid, rule="argmax").best == 0.5
    cautious = calibrate(score, grid, rule="one_standard_error")
    assert cautious.best == 0.25
    assert cautious.index == within_one_standard_error(table).min() == 1
    with pytest.raises(ValueError, match="rule must be one of"):
        calibrate(score, grid, rule="median")


def test_calibrate_vectorized_calls_score_once_with_the_settings():
    grid = np.array([1.0, 2.0, 4.0])
    calls = []

    def score(settings):
        calls.append(settings.tolist())
        return np.tile(-np.abs(np.log2(settings) - 1.0), (4, 1))

    result = calibrate(score, grid, rule="argmax", vectorized=True)
    assert calls == [[1.0, 2.0, 4.0]] and result.best == 2.0


def test_calibrate_sweeps_then_climbs_with_warm_starts():
    # Mean scores peak at index 5; the sweep sees every second index from the top.
    grid = 2.0 ** np.arange(10)
    table = np.tile(-((np.arange(10) - 5.2) ** 2), (3, 1))
    score, calls = _scores_at(table, grid)
    sweep = calibrate(score, grid, rule="argmax", order=[8, 6, 4, 2, 0], warm_start=True)
    assert sweep.index == 6
    assert calls == [(256.0, None), (64.0, 256.0), (16.0, 64.0), (4.0, 16.0), (1.0, 4.0)]
    assert np.isnan(sweep.table[:, 1::2]).all()
    calls.clear()
    final = calibrate(score, grid, table=sweep.table, climb_from=sweep.index, warm_start=True)
    # From index 6: scores 5 and 7 (warm from 6), moves to 5 (4 and 6 already scored), stops.
    assert calls == [(32.0, 64.0), (128.0, 64.0)]
    assert final.index == 5 and final.best == best_grid_value(final.table, grid)
    assert np.isnan(sweep.table[:, 5]).all()  # the earlier table is not modified
    assert np.isnan(final.table[:, [1, 3, 9]]).all()


def test_calibrate_without_held_out_users():
    result = calibrate(lambda setting: np.empty(0), TEMPERATURES)
    assert result.best == 1.0 and result.table.shape == (0, TEMPERATURES.size)
    assert calibrate(lambda setting: np.empty(0), [0.5, 1.0], rule="argmax").best == 0.5
