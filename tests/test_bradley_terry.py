"""The Bradley-Terry solvers against direct minimisation, on small problems."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, special
from scipy.optimize import minimize

from pllm_sk.core import PairDifferences, _bradley_terry
from pllm_sk.core._bradley_terry import fit_bradley_terry


def objective(coef, differences, *, l2=0.0, mean=None, precision=None, weight=1.0):
    """The penalised Bradley-Terry loss and gradient, written out independently."""
    margin = differences @ coef
    shift = coef if mean is None else coef - mean
    if precision is None:
        precision = 2.0 * l2 * np.eye(coef.size)
    loss = weight * np.logaddexp(0.0, -margin).sum() + 0.5 * shift @ precision @ shift
    gradient = -weight * special.expit(-margin) @ differences + precision @ shift
    return loss, gradient


def lbfgs(differences, start, **penalty):
    """The minimiser of ``objective`` by scipy's L-BFGS, to a tight tolerance."""
    result = minimize(
        lambda c: objective(c, differences, **penalty), start, jac=True,
        method="L-BFGS-B", options={"gtol": 1e-11, "ftol": 1e-15, "maxiter": 1000},
    )
    return result.x


# The solvers stop on half the Newton decrement relative to the loss (tol=1e-10 by
# default leaves coefficients within about 1e-5), or when the line search can no
# longer see the loss decrease through round-off (about 1e-8 in the coefficients):
# the comparisons with L-BFGS below ask for the tightest tolerance.


def test_objective_by_hand():
    differences = np.array([[1.0, 0.0], [0.0, -2.0]])
    loss, gradient = objective(np.zeros(2), differences)
    assert loss == pytest.approx(2 * np.log(2))
    assert_allclose(gradient, [-0.5, 1.0])


def test_one_pair_one_feature_by_hand():
    # d = 1, l2 = 0.5: the optimum solves w = sigmoid(-w), w = 0.40106.
    coef = fit_bradley_terry(np.ones((1, 1)), l2=0.5, tol=1e-15)
    assert coef[0] == pytest.approx(special.expit(-coef[0]), abs=1e-7)
    assert coef[0] == pytest.approx(0.40106, abs=1e-5)


@pytest.mark.parametrize("chunked", [False, True])
def test_pooled_matches_direct_minimisation(global_random_seed, monkeypatch, chunked):
    rng = np.random.RandomState(global_random_seed)
    differences = rng.normal(size=(400, 4)) + 0.3
    if chunked:
        # 50 pairs a chunk: the gradient is summed over chunks and the solver
        # starts from its fit to every 8th pair.
        monkeypatch.setattr(_bradley_terry, "_POOLED_CHUNK", 50)
    coef, n_iter = fit_bradley_terry(differences, l2=0.7, tol=1e-15, return_n_iter=True)
    assert 1 <= n_iter < 50
    assert_allclose(coef, lbfgs(differences, np.zeros(4), l2=0.7), atol=1e-6)
    assert np.abs(objective(coef, differences, l2=0.7)[1]).max() < 1e-5


def test_pooled_with_a_full_gaussian_prior_and_weight(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    differences = rng.normal(size=(80, 3))
    mean = rng.normal(size=3)
    root = rng.normal(size=(3, 3))
    precision = root @ root.T + np.eye(3)
    coef = fit_bradley_terry(
        differences, prior_mean=mean, prior_precision=precision, weight=0.5, tol=1e-15
    )
    penalty = dict(mean=mean, precision=precision, weight=0.5)
    assert np.abs(objective(coef, differences, **penalty)[1]).max() < 1e-5
    assert_allclose(coef, lbfgs(differences, mean, **penalty), atol=1e-6)


def test_grouped_matches_per_group_minimisation(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    differences = rng.normal(size=(200, 3))
    groups = rng.randint(0, 5, size=200)
    groups[:10] = -1  # dropped pairs
    prior = np.array([0.5, -1.0, 0.0])
    coef = fit_bradley_terry(differences, groups, 6, l2=0.3, prior_mean=prior, tol=1e-15)
    assert coef.shape == (6, 3)
    for group in range(5):
        mine = differences[groups == group]
        assert_allclose(coef[group], lbfgs(mine, prior, l2=0.3, mean=prior), atol=1e-6)
    assert_allclose(coef[5], prior)  # group 5 has no pairs: the prior mean


@pytest.mark.parametrize(
    "groups",
    [
        # Each group's pairs consecutive, dropped pairs between groups (as
        # UserKNNRanker gives them): no index of the kept pairs is built.
        np.repeat([0, -1, 2, -1, 3, 3], 15),
        # A group split by dropped pairs, and groups out of order.
        np.repeat([0, -1, 0, 3, -1, 2], 15),
    ],
)
def test_grouped_dropped_pairs_fit_as_left_out(groups):
    rng = np.random.RandomState(0)
    differences = rng.normal(size=(groups.size, 3))
    kept = groups >= 0
    coef = fit_bradley_terry(differences, groups, 5, l2=0.5)
    order = np.argsort(groups[kept], kind="stable")
    expected = fit_bradley_terry(
        differences[kept][order], groups[kept][order], 5, l2=0.5
    )
    assert_array_equal(coef, expected)


def test_grouped_batches_do_not_change_the_answer(monkeypatch):
    rng = np.random.RandomState(1)
    differences = rng.normal(size=(120, 2))
    groups = np.repeat(np.arange(6), [2, 5, 10, 20, 33, 50])
    whole = fit_bradley_terry(differences, groups, 6, l2=1.0)
    monkeypatch.setattr(_bradley_terry, "_GROUPED_CHUNK", 30)
    batched = fit_bradley_terry(differences, groups, 6, l2=1.0)
    assert_allclose(whole, batched, atol=1e-10)


def test_grouped_mixture_solves_each_component():
    rng = np.random.RandomState(2)
    differences = rng.normal(size=(30, 2))
    groups = np.repeat([0, 1], 15)
    means = np.array([[1.0, 0.0], [0.0, -1.0]])
    precisions = np.array([np.eye(2), 3.0 * np.eye(2)])
    coef = fit_bradley_terry(
        differences, groups, 2, prior_mean=means, prior_precision=precisions, tol=1e-15
    )
    assert coef.shape == (2, 2, 2)
    for group in range(2):
        for c in range(2):
            expected = lbfgs(
                differences[groups == group], means[c], mean=means[c],
                precision=precisions[c],
            )
            assert_allclose(coef[group, c], expected, atol=1e-6)


@pytest.mark.parametrize("weight", [1.0, 0.25])
def test_laplace_evidence_matches_numerical_integration(weight):
    # One dimension, 60 pairs: log of the marginal likelihood of the pairs under
    # a Gaussian prior N(mean, 1 / precision) on the weight.
    rng = np.random.RandomState(1)
    differences = rng.normal(size=(60, 1))
    differences[differences[:, 0] * 0.8 + rng.logistic(size=60) < 0] *= -1
    means, precisions = np.array([[0.0], [2.0]]), np.array([[[4.0]], [[1.0]]])
    _, log_evidence = fit_bradley_terry(
        differences, np.zeros(60, dtype=int), 1, prior_mean=means,
        prior_precision=precisions, weight=weight, return_log_evidence=True,
    )
    for c in range(2):
        def integrand(u, c=c):
            loglik = weight * special.log_expit(differences[:, 0] * u).sum()
            prior = -0.5 * precisions[c, 0, 0] * (u - means[c, 0]) ** 2
            return np.exp(loglik + prior + 60 * weight * np.log(2.0))

        value, _ = integrate.quad(integrand, -10, 10, points=[0.0, 1.0])
        exact = np.log(value * np.sqrt(precisions[c, 0, 0] / (2 * np.pi)))
        # Up to the constant 60 * weight * log 2 shared by every component.
        assert_allclose(log_evidence[0, c] + 60 * weight * np.log(2.0), exact, atol=0.02)


def test_shrinkage_limits():
    # One comparison saying feature 0 beats feature 1, against the prior.
    differences = np.array([[1.0, -1.0]])
    prior = np.array([-1.0, 1.0])
    strong = fit_bradley_terry(differences, np.array([0]), 1, l2=1e8, prior_mean=prior)
    assert_allclose(strong[0], prior, atol=1e-6)
    weak = fit_bradley_terry(differences, np.array([0]), 1, l2=1e-3, prior_mean=prior)
    assert weak[0] @ differences[0] > 0  # the comparison now wins over the prior


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="l2 must be > 0"):
        fit_bradley_terry(np.ones((1, 1)), l2=0.0)
    with pytest.raises(ValueError, match="exactly one of l2 and prior_precision"):
        fit_bradley_terry(np.ones((1, 1)))
    with pytest.raises(ValueError, match="n_groups is required"):
        fit_bradley_terry(np.ones((1, 1)), np.array([0]), l2=1.0)
    with pytest.raises(ValueError, match="one non-negative weight per pair"):
        fit_bradley_terry(np.ones((2, 1)), l2=1.0, sample_weight=np.array([1.0, -1.0]))


@pytest.mark.parametrize("grouped", [False, True])
def test_integer_sample_weights_repeat_pairs_and_zero_drops_them(grouped, monkeypatch):
    rng = np.random.RandomState(3)
    differences = rng.normal(size=(60, 3)) + 0.2
    groups = np.repeat([0, 1, 2], 20)
    counts = rng.randint(0, 4, size=60)  # 0 drops the pair, 3 counts it thrice
    repeated = np.repeat(np.arange(60), counts)
    if grouped:
        def fit(d, g, w=None):
            return fit_bradley_terry(d, g, 3, l2=0.5, sample_weight=w, tol=1e-15)

        weighted = fit(differences, groups, counts.astype(float))
        expected = fit(differences[repeated], groups[repeated])
    else:
        monkeypatch.setattr(_bradley_terry, "_POOLED_CHUNK", 8)  # chunks, warm start
        weighted = fit_bradley_terry(
            differences, l2=0.5, sample_weight=counts.astype(float), tol=1e-15
        )
        expected = fit_bradley_terry(differences[repeated], l2=0.5, tol=1e-15)
    assert_allclose(weighted, expected, atol=1e-7)


def test_sample_weight_log_evidence_matches_repeated_pairs():
    rng = np.random.RandomState(4)
    differences = rng.normal(size=(10, 2))
    counts = np.array([1, 2, 0, 1, 3, 1, 1, 2, 1, 1])
    repeated = np.repeat(np.arange(10), counts)
    means, precisions = np.zeros((2, 2)), np.array([np.eye(2), 4 * np.eye(2)])
    _, weighted = fit_bradley_terry(
        differences, np.zeros(10, dtype=int), 1, prior_mean=means,
        prior_precision=precisions, sample_weight=counts.astype(float),
        return_log_evidence=True,
    )
    _, expected = fit_bradley_terry(
        differences[repeated], np.zeros(repeated.size, dtype=int), 1, prior_mean=means,
        prior_precision=precisions, return_log_evidence=True,
    )
    # Unweighted evidence leaves out log 2 per padded row; weighted padding adds 0.
    assert_allclose(np.diff(weighted[0]), np.diff(expected[0]), atol=1e-6)


def test_grouped_threads_give_the_same_answer(monkeypatch):
    from threadpoolctl import threadpool_limits

    rng = np.random.RandomState(5)
    differences = rng.normal(size=(400, 3))
    groups = rng.randint(0, 40, size=400)
    monkeypatch.setattr(_bradley_terry, "_GROUPED_CHUNK", 200)  # many batches
    with threadpool_limits(limits=1, user_api="blas"):
        one = fit_bradley_terry(differences, groups, 40, l2=0.3)
    with threadpool_limits(limits=2, user_api="blas"):
        assert _bradley_terry._blas_threads() == 2
        two = fit_bradley_terry(differences, groups, 40, l2=0.3)
    assert_array_equal(one, two)


@pytest.mark.parametrize("grouped", [False, True])
def test_pair_differences_gathered_by_the_solver_give_the_same_fit(grouped, monkeypatch):
    # The solver gathers each batch's pairs from the vectors: the fit is the one of
    # the float64 differences, to the last bit, whatever the batches.
    rng = np.random.RandomState(6)
    vectors = rng.normal(size=(60, 3)).astype(np.float32).astype(np.float64)
    winners, losers = rng.randint(0, 60, size=300), rng.randint(0, 60, size=300)
    groups = rng.randint(0, 25, size=300) if grouped else None
    monkeypatch.setattr(_bradley_terry, "_GROUPED_CHUNK", 200)  # many batches
    expected = fit_bradley_terry(
        vectors[winners] - vectors[losers], groups, 25, l2=0.4, prior_mean=[0.1, 0, -0.2]
    )
    gathered = fit_bradley_terry(
        PairDifferences(vectors, winners, losers), groups, 25, l2=0.4,
        prior_mean=[0.1, 0, -0.2],
    )
    assert_array_equal(gathered, expected)


@pytest.mark.parametrize("kind", ["float32", "float64", "gathered"])
@pytest.mark.parametrize("weighted", [False, True])
def test_grouped_pairs_in_slices_give_the_fit_of_the_gathered_ones(
    monkeypatch, kind, weighted
):
    # Groups of one size, in order: each batch is a slice of the pairs (no gather,
    # no padding). The same pairs given with the groups out of order are gathered
    # and padded; the fit is the same to the bit, and so are the buffers reused
    # from batch to batch.
    rng = np.random.RandomState(8)
    vectors = rng.normal(size=(90, 3))
    winners, losers = rng.randint(0, 90, size=(2, 240))
    groups = np.repeat(np.arange(12), 20)
    sample_weight = rng.uniform(0.5, 2.0, size=240) if weighted else None
    out_of_order = np.argsort(-groups, kind="stable")

    def fit(pairs):
        if kind == "gathered":
            differences = PairDifferences(vectors, winners[pairs], losers[pairs])
        else:
            differences = (vectors[winners] - vectors[losers])[pairs].astype(kind)
        return fit_bradley_terry(
            differences, groups[pairs], 12, l2=0.3, prior_mean=[0.2, 0.0, -0.1],
            sample_weight=None if sample_weight is None else sample_weight[pairs],
        )

    monkeypatch.setattr(_bradley_terry, "_GROUPED_CHUNK", 200)  # batches of 3 groups
    in_slices = fit(np.arange(240))
    assert_array_equal(in_slices, fit(out_of_order))
    monkeypatch.setattr(_bradley_terry, "_GROUPED_CHUNK", 10_000)  # one batch
    assert_array_equal(in_slices, fit(np.arange(240)))


@pytest.mark.parametrize("weighted", [False, True])
def test_longer_steps_reach_the_same_optimum_in_fewer_newton_steps(monkeypatch, weighted):
    # Groups whose comparisons one direction almost satisfies, under a weak penalty:
    # the full Newton step undershoots there, and doubling it saves steps.
    rng = np.random.RandomState(0)
    truth = 4.0 * rng.normal(size=(4, 3))
    groups = np.repeat(np.arange(4), 80)
    differences = rng.normal(size=(320, 3))
    agrees = rng.rand(320) < special.expit(np.einsum("pd,pd->p", differences, truth[groups]))
    differences[~agrees] *= -1.0
    sample_weight = rng.uniform(0.5, 2.0, size=320) if weighted else None
    real_step = _bradley_terry._newton_step
    coef, n_steps = {}, {}
    for n_doublings in (0, 2):
        monkeypatch.setattr(_bradley_terry, "_EXTRAPOLATIONS", n_doublings)
        calls = []

        def counted_step(*args, calls=calls):
            calls.append(1)
            return real_step(*args)

        monkeypatch.setattr(_bradley_terry, "_newton_step", counted_step)
        coef[n_doublings] = fit_bradley_terry(
            differences, groups, 4, l2=0.005, sample_weight=sample_weight, tol=1e-15
        )
        n_steps[n_doublings] = len(calls)
    assert n_steps[2] < n_steps[0]
    assert_allclose(coef[2], coef[0], rtol=1e-6, atol=1e-6)
    if not weighted:
        for group in range(4):
            mine = differences[groups == group]
            assert_allclose(coef[2][group], lbfgs(mine, np.zeros(3), l2=0.005), atol=1e-5)


def test_grouped_coef_does_not_depend_on_asking_for_the_evidence(monkeypatch):
    # Without return_log_evidence the batches skip their Hessian at the optimum;
    # the weights are the same, to the bit, with groups given out of order.
    rng = np.random.RandomState(7)
    differences = rng.normal(size=(300, 3))
    groups = rng.randint(0, 30, size=300)
    monkeypatch.setattr(_bradley_terry, "_GROUPED_CHUNK", 200)  # many batches
    coef = fit_bradley_terry(differences, groups, 30, l2=0.2, prior_mean=[0.3, 0, 0])
    with_evidence, log_evidence = fit_bradley_terry(
        differences, groups, 30, l2=0.2, prior_mean=[0.3, 0, 0], return_log_evidence=True
    )
    assert_array_equal(coef, with_evidence)
    assert log_evidence.shape == (30,)
    order = np.argsort(groups, kind="stable")
    assert_array_equal(
        fit_bradley_terry(differences[order], groups[order], 30, l2=0.2, prior_mean=[0.3, 0, 0]),
        coef,
    )
