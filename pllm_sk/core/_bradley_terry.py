"""Penalised Bradley-Terry fits: one solver module behind one entry point.

Every preference estimator fits the Bradley-Terry (logistic) model of comparisons:
the winner of pair ``i`` is chosen with probability ``sigmoid(w . d_i)``, where
``d_i`` is the winner's item features minus the loser's. :func:`fit_bradley_terry`
is the one entry point, as ``ridge_regression`` is in scikit-learn's ``_ridge.py``;
it dispatches to one of two Newton solvers:

- pooled (``groups=None``): one weight vector for all pairs, the gradient and the
  Hessian summed over chunks of pairs, so millions of pairs fit in little memory
  (the population preference);
- grouped: one weight vector per group of pairs (a user), and per component of a
  Gaussian-mixture prior, all groups solved together in padded batches (per-user
  preferences, neighbour candidates, the fold-in of a user into a low-rank model).

Both minimise, per problem, ::

    weight * sum_i log(1 + exp(-d_i . w)) + 0.5 * (w - m) P (w - m)

with ``P = 2 * l2 * I`` for the isotropic penalty ``l2 * ||w - m||^2``.
"""

import math
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
from scipy.special import expit
from threadpoolctl import ThreadpoolController

from ._comparisons import PairDifferences

__all__ = ["fit_bradley_terry", "log_sigmoid"]

# Pairs per chunk of the pooled solver's gradient and Hessian sums.
_POOLED_CHUNK = 1 << 20
# Padded entries (groups x components x pairs x features) per batch of the grouped
# solver: 8 MB of float64, small enough to reuse freed heap memory (larger batches
# are mapped afresh each time, and their page faults cost more than the arithmetic).
_GROUPED_CHUNK = 1_000_000
# Doublings of a full Newton step tried at most (see _extrapolate).
_EXTRAPOLATIONS = 2


def fit_bradley_terry(
    differences,
    groups=None,
    n_groups=None,
    *,
    l2=None,
    prior_mean=None,
    prior_precision=None,
    weight=1.0,
    sample_weight=None,
    start=None,
    max_iter=50,
    tol=1e-10,
    return_log_evidence=False,
    return_n_iter=False,
):
    """Penalised Bradley-Terry weights: pooled over all pairs, or per group.

    Parameters
    ----------
    differences : ndarray of shape (n_pairs, n_features) or PairDifferences
        Winner features minus loser features (float32 or float64); with groups, a
        :class:`~pllm_sk.core.PairDifferences` gives them without the full
        float64 array (each batch gathers its own pairs).
    groups : ndarray of int, shape (n_pairs,), default=None
        Group of each pair, in ``[0, n_groups)``; a negative group drops the pair.
        None fits one weight vector to all pairs.
    n_groups : int, default=None
        Number of groups; required with ``groups``. A group without pairs gets the
        prior mean.
    l2 : float, default=None
        Strength of the isotropic penalty ``l2 * ||w - m||^2``, > 0. Give either
        ``l2`` or ``prior_precision``.
    prior_mean : ndarray of shape (n_features,) or (n_components, n_features), \
            default=None
        Centre ``m`` of the penalty; zeros when None. With groups, a 2-d prior mean
        is a mixture: each group is solved once per component.
    prior_precision : ndarray of shape (n_features, n_features) or \
            (n_components, n_features, n_features), default=None
        Symmetric positive definite ``P``, one per component of ``prior_mean``.
    weight : float, default=1.0
        Weight of every pair (1 / temperature).
    sample_weight : ndarray of shape (n_pairs,), default=None
        Non-negative weight of each pair, multiplying its log-likelihood (for
        example older feedback counting less); ones when None.
    start : ndarray, default=None
        Where Newton's method starts, of the shape of the returned ``coef``; the
        prior mean when None (the pooled solver starts from the fit to every 8th
        pair when there are many pairs).
    max_iter : int, default=50
        Newton steps at most.
    tol : float, default=1e-10
        Stop when half the Newton decrement of every problem is below
        ``tol * (1 + |loss|)``.
    return_log_evidence : bool, default=False
        Also return the Laplace approximation of each problem's log evidence (log
        marginal likelihood up to a constant shared by the components), which
        turns a mixture prior into a posterior over components. Grouped only.
    return_n_iter : bool, default=False
        Also return the Newton steps taken. Pooled only.

    Returns
    -------
    coef : ndarray
        ``(n_features,)`` pooled; ``(n_groups, n_features)`` per group with a 1-d
        prior mean; ``(n_groups, n_components, n_features)`` with a 2-d one.
    log_evidence : ndarray of shape (n_groups,) or (n_groups, n_components)
        With ``return_log_evidence=True``.
    n_iter : int
        With ``return_n_iter=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.core._bradley_terry import fit_bradley_terry
    >>> # Two pairs whose winners have the larger first feature, one the second.
    >>> differences = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> coef = fit_bradley_terry(differences, l2=0.5)
    >>> bool(coef[0] > coef[1] > 0)
    True
    >>> # Per group: w = 2 sigmoid(-w) for group 0's two pairs, w = sigmoid(-w) for 1's.
    >>> fit_bradley_terry(differences, np.array([0, 0, 1]), 2, l2=0.5).round(2)
    array([[0.67, 0.  ],
           [0.  , 0.4 ]])
    """
    if not isinstance(differences, PairDifferences):
        differences = np.asarray(differences)
    elif groups is None:
        differences = differences.take(slice(None))
    if (l2 is None) == (prior_precision is None):
        raise ValueError("Give exactly one of l2 and prior_precision.")
    if l2 is not None and not l2 > 0:
        raise ValueError(f"l2 must be > 0 for a strictly convex problem; got {l2!r}.")
    n_features = differences.shape[1]
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != (differences.shape[0],) or (sample_weight < 0).any():
            raise ValueError(
                "sample_weight must hold one non-negative weight per pair; got shape "
                f"{sample_weight.shape} for {differences.shape[0]} pairs."
            )
    if groups is None:
        if return_log_evidence:
            raise ValueError("return_log_evidence needs groups.")
        penalty = _Penalty(l2, prior_mean, prior_precision, n_features)
        coef, n_iter = _solve_pooled(
            differences, sample_weight, penalty, weight, start, max_iter, tol,
            _POOLED_CHUNK,
        )
        return (coef, n_iter) if return_n_iter else coef
    if return_n_iter:
        raise ValueError("return_n_iter is for the pooled solver (groups=None).")
    if n_groups is None:
        raise ValueError("n_groups is required with groups.")
    mixture = prior_mean is not None and np.ndim(prior_mean) == 2
    mean = (
        np.zeros((1, n_features))
        if prior_mean is None
        else np.asarray(prior_mean, dtype=np.float64).reshape(-1, n_features)
    )
    if prior_precision is None:
        precision = 2.0 * l2 * np.eye(n_features)[np.newaxis]
    else:
        precision = np.asarray(prior_precision, dtype=np.float64).reshape(
            -1, n_features, n_features
        )
    if start is not None and not mixture:
        start = np.asarray(start)[:, np.newaxis]
    coef, log_evidence = _solve_grouped(
        differences, sample_weight, np.asarray(groups, dtype=np.int64), int(n_groups),
        mean, np.broadcast_to(precision, (mean.shape[0], n_features, n_features)),
        weight, start, max_iter, tol, _GROUPED_CHUNK, return_log_evidence,
    )
    if not return_log_evidence:
        return coef if mixture else coef[:, 0]
    if not mixture:
        coef, log_evidence = coef[:, 0], log_evidence[:, 0]
    return coef, log_evidence


@cache
def _blas_controller():
    """threadpoolctl's controller of the BLAS libraries, found once (a few ms)."""
    return ThreadpoolController().select(user_api="blas")


def _blas_threads():
    """Threads BLAS may use in this process now (1 when it cannot be told)."""
    limits = [info["num_threads"] for info in _blas_controller().info()]
    return max(1, min(limits)) if limits else 1


def log_sigmoid(margin, dtype=None):
    """``log(sigmoid(margin))``, elementwise, in a new array of ``dtype``.

    ``min(m, 0) - log1p(exp(-|m|))``: stable for any margin, one exp and one
    log1p per entry (about 7 times faster than ``np.logaddexp`` on large blocks),
    computed in place in the copy, so float32 blocks stay float32 (``dtype=None``
    keeps ``margin``'s).
    """
    margin = np.array(margin, dtype=dtype)
    penalty = np.abs(margin)
    np.negative(penalty, out=penalty)
    np.exp(penalty, out=penalty)
    np.log1p(penalty, out=penalty)
    np.minimum(margin, 0, out=margin)
    margin -= penalty
    return margin


def _softplus_sum(margin, pair_weight=None):
    """``sum(w * log(1 + exp(-margin)))`` over the last axis; ``w`` ones when None."""
    log_likelihood = log_sigmoid(margin, np.float64)
    if pair_weight is None:
        return -log_likelihood.sum(axis=-1)
    return -(log_likelihood * pair_weight).sum(axis=-1)


# ------------------------------------------------------------------ pooled solver


class _Penalty:
    """The Gaussian penalty of the pooled problem: value, gradient and Hessian.

    The isotropic form keeps its own arithmetic (``l2 * s @ s``), so that fits with
    an ``l2`` are reproducible to the last bit across versions.
    """

    def __init__(self, l2, mean, precision, n_features):
        self.l2 = l2
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.precision = (
            None if precision is None else np.asarray(precision, dtype=np.float64)
        )
        self.n_features = n_features

    def scaled(self, factor):
        """The same penalty times ``factor`` (for the warm start on a subsample)."""
        if self.precision is None:
            return _Penalty(self.l2 * factor, self.mean, None, self.n_features)
        return _Penalty(None, self.mean, self.precision * factor, self.n_features)

    def start(self):
        return np.zeros(self.n_features) if self.mean is None else self.mean.copy()

    def _shift(self, coef):
        return coef if self.mean is None else coef - self.mean

    def value(self, coef):
        shift = self._shift(coef)
        if self.precision is None:
            return self.l2 * shift @ shift
        return 0.5 * shift @ self.precision @ shift

    def gradient(self, coef):
        if self.precision is None:
            return 2.0 * self.l2 * self._shift(coef)
        return self.precision @ self._shift(coef)

    def hessian(self):
        if self.precision is None:
            return 2.0 * self.l2 * np.eye(self.n_features)
        return self.precision.copy()


def _solve_pooled(
    differences, pair_weight, penalty, weight, start, max_iter, tol, chunk_size
):
    """Newton's method on all pairs at once, summed over chunks of pairs.

    Memory stays ``O(n_pairs + chunk_size * n_features)`` with millions of pairs.

    Returns
    -------
    coef : ndarray of shape (n_features,)
    n_iter : int
    """
    n_pairs = differences.shape[0]
    chunks = [slice(start, start + chunk_size) for start in range(0, n_pairs, chunk_size)]

    def margins_of(vector):
        return np.concatenate(
            [np.asarray(differences[chunk], dtype=np.float64) @ vector for chunk in chunks]
        )

    def objective(margin, coef):
        return weight * _softplus_sum(margin, pair_weight) + penalty.value(coef)

    if start is not None:
        coef = np.array(start, dtype=np.float64)
        margin = margins_of(coef)
        loss = objective(margin, coef)
    elif len(chunks) > 4:
        # Start from the fit to every 8th pair (its objective is about 1/8 of this
        # one): a few full passes then finish the job.
        coef, _ = _solve_pooled(
            differences[::8],
            None if pair_weight is None else pair_weight[::8],
            penalty.scaled(1 / 8),
            weight,
            None,
            max_iter,
            1e-6,
            chunk_size,
        )
        margin = margins_of(coef)
        loss = objective(margin, coef)
    else:
        coef = penalty.start()
        margin = margins_of(coef) if penalty.mean is not None else np.zeros(n_pairs)
        loss = (
            objective(margin, coef)
            if penalty.mean is not None or pair_weight is not None
            else weight * n_pairs * np.log(2.0) + penalty.value(coef)
        )
    n_iter = 0
    # The scaled rows of a chunk, in one array for every Newton step: a new one
    # each time would be memory new to the process.
    scratch = np.empty((min(chunk_size, n_pairs), differences.shape[1]))
    for _ in range(max_iter):
        gradient, hessian = _pooled_newton_system(
            differences, pair_weight, chunks, margin, coef, penalty, weight, scratch
        )
        step = np.linalg.solve(hessian, gradient)
        decrement = gradient @ step
        if decrement / 2.0 <= tol * (1.0 + abs(loss)):
            break
        delta = margins_of(step)
        size = 1.0
        for _ in range(40):
            candidate = coef - size * step
            new_loss = objective(margin - size * delta, candidate)
            if new_loss <= loss - 1e-4 * size * decrement:
                break
            size /= 2.0
        else:
            break  # round-off at the optimum
        coef, margin, loss = candidate, margin - size * delta, new_loss
        n_iter += 1
    return coef, n_iter


def _pooled_newton_system(
    differences, pair_weight, chunks, margin, coef, penalty, weight, scratch
):
    """Gradient and Hessian of the pooled objective at ``coef``, summed chunk by chunk.

    ``scratch``, float64 of at least a chunk's shape, receives each chunk's rows
    scaled by their curvature.
    """
    gradient = penalty.gradient(coef)
    hessian = penalty.hessian()
    for chunk in chunks:
        rows = np.asarray(differences[chunk], dtype=np.float64)
        p_loser = expit(-margin[chunk])
        weighted = p_loser * (1.0 if pair_weight is None else pair_weight[chunk])
        gradient -= weight * weighted @ rows
        scaled = np.multiply(
            rows,
            (weight * weighted * (1.0 - p_loser))[:, np.newaxis],
            out=scratch[: rows.shape[0]],
        )
        hessian += scaled.T @ rows
    return gradient, hessian


# ----------------------------------------------------------------- grouped solver


def _solve_grouped(
    differences, pair_weight, groups, n_groups, prior_mean, prior_precision, weight,
    start, max_iter, tol, chunk_size, evidence=True,
):
    """Newton's method per group and prior component, batched over groups.

    Groups are padded to their batch's largest pair count (groups sorted by count
    keep the padding small); the Armijo backtracking reuses the margins of the step,
    so a backtrack costs no matrix product. A batch is stored feature-major,
    ``(groups, features, pairs)``: every product over the pairs is then a batched
    BLAS product, and the curvature scales rows of pairs, two to three times faster
    than pair-major blocks (whose inner loops run over the few features).

    Returns
    -------
    coef : ndarray of shape (n_groups, n_components, n_features)
    log_evidence : ndarray of shape (n_groups, n_components), or None
        None with ``evidence=False``, which spares each batch its Hessian at the
        optimum.
    """
    n_components, d = prior_mean.shape
    if start is None:
        start = np.broadcast_to(prior_mean, (n_groups, n_components, d))
    coef = np.array(start, dtype=np.float64)
    log_evidence = np.zeros((n_groups, n_components)) if evidence else None
    order, starts, counts = _group_order(groups, n_groups)
    _, prior_logdet = np.linalg.slogdet(prior_precision)
    batches = _batches(counts, n_components * d, chunk_size)

    def solve(batch, buffers):
        block, block_weight, n_padding = _batch_block(
            differences, pair_weight, order, starts[batch], counts[batch], buffers
        )
        coef[batch], loss, hessian_logdet = _newton_gaussian(
            block, block_weight, coef[batch], prior_mean, prior_precision, weight,
            max_iter, tol, evidence, buffers,
        )
        if not evidence:
            return
        if block_weight is None:
            # Padding rows add weight * log 2 each to the loss, whatever u is.
            loss -= weight * np.log(2.0) * n_padding[:, np.newaxis]
        log_evidence[batch] = -loss - 0.5 * (hessian_logdet - prior_logdet)

    def solve_all(share):
        buffers = _Buffers()
        for batch in share:
            solve(batch, buffers)

    # Batches are independent and numpy releases the GIL on their large arrays:
    # threads, as many as BLAS may use here (loky workers and OMP_NUM_THREADS
    # lower it), give the same result as one thread. Each thread takes every
    # n_threads-th batch (batches of similar sizes come together).
    n_threads = min(len(batches), _blas_threads())
    if n_threads > 1:
        with ThreadPoolExecutor(n_threads) as executor:
            shares = [batches[first::n_threads] for first in range(n_threads)]
            list(executor.map(solve_all, shares))
    else:
        solve_all(batches)
    return coef, log_evidence


class _Buffers:
    """Flat arrays that the batches of one thread reuse, as views of any shape.

    A batch's large arrays allocated afresh would be memory new to the process
    at every batch (glibc returns large freed blocks to the OS), whose page faults
    cost more than the arithmetic on them.
    """

    def __init__(self):
        self._flat = {}

    def get(self, name, shape, dtype=np.float64):
        """An uninitialised array of ``shape``, sharing memory with the last ``name``."""
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = self._flat[name] = np.empty(size, dtype=dtype)
        return flat[:size].reshape(shape)


def _group_order(groups, n_groups):
    """The pairs of each group: their order, where they start, and how many.

    Returns
    -------
    order : ndarray of int64, shape (n_kept_pairs,), or None
        Pair indices grouped by group (pairs of a group in their order); None when
        the pairs of each group are consecutive, as the callers give them (ordered
        by group, dropped pairs between groups): then group ``g`` owns the pairs
        ``starts[g]:starts[g] + counts[g]``, and no index of the kept pairs (a
        full-size array) is built.
    starts : ndarray of int64, shape (n_groups,)
        Offset of each group's first pair into ``order``, or into the pairs when
        ``order`` is None; 0 for a group without pairs.
    counts : ndarray of int64, shape (n_groups,)
    """
    # Runs of equal groups: one run per group when its pairs are consecutive.
    new_run = np.ones(groups.size, dtype=bool)
    np.not_equal(groups[1:], groups[:-1], out=new_run[1:])
    run_starts = np.flatnonzero(new_run)
    run_groups = np.take(groups, run_starts)
    kept = run_groups >= 0
    if not (run_groups[kept][1:] <= run_groups[kept][:-1]).any():
        run_sizes = np.diff(np.append(run_starts, groups.size))
        starts = np.zeros(n_groups, dtype=np.int64)
        counts = np.zeros(n_groups, dtype=np.int64)
        starts[run_groups[kept]] = run_starts[kept]
        counts[run_groups[kept]] = run_sizes[kept]
        return None, starts, counts
    kept = groups >= 0
    kept_groups = groups[kept]
    counts = np.bincount(kept_groups, minlength=n_groups)
    order = np.flatnonzero(kept)
    if (kept_groups[1:] < kept_groups[:-1]).any():
        order = order[np.argsort(kept_groups, kind="stable")]
    return order, np.cumsum(counts) - counts, counts


def _batch_block(differences, pair_weight, order, starts, counts, buffers):
    """A batch's pairs, padded with zero rows, feature-major, and their weights.

    Parameters
    ----------
    differences, pair_weight
        As :func:`_solve_grouped` gets them.
    order : ndarray of int64 or None
        From :func:`_group_order`.
    starts, counts : ndarray of int64, shape (n_batch,)
        Offset into ``order`` (into the pairs when it is None) and pair count of
        each group of the batch.
    buffers : _Buffers
        Where ``block`` is written.

    Returns
    -------
    block : ndarray of float64, shape (n_batch, n_features, n_pad)
    block_weight : ndarray of shape (n_batch, 1, n_pad) or None
        None without ``pair_weight``; padding rows weigh 0, so they add nothing
        to the loss.
    n_padding : ndarray of int64, shape (n_batch,)
        Padding rows of each group.
    """
    n_batch, n_pad = counts.size, int(counts.max())
    d = differences.shape[1]
    contiguous = (
        order is None
        and (counts == n_pad).all()
        and (starts[1:] - starts[:-1] == n_pad).all()
    )
    if contiguous:
        # Consecutive groups of one count: a slice of the pairs, nothing to pad.
        pairs = slice(starts[0], starts[0] + n_batch * n_pad)
        slot = np.ones((n_batch, n_pad), dtype=bool)
    else:
        slot = np.arange(n_pad)[np.newaxis, :] < counts[:, np.newaxis]
        source = (starts[:, np.newaxis] + np.arange(n_pad)[np.newaxis, :]).ravel()
        # Padding slots gather some pair ("clip"), then are zeroed: one np.take of
        # whole padded rows is two times faster than a masked scatter.
        pairs = (
            np.minimum(source, differences.shape[0] - 1)
            if order is None
            else np.take(order, source, mode="clip")
        )
    if isinstance(differences, PairDifferences):
        rows = differences.take(pairs, buffers.get("rows", (n_batch * n_pad, d)))
    elif contiguous:
        rows = differences[pairs]
    else:
        rows = np.take(differences, pairs, axis=0)
    block = buffers.get("block", (n_batch, d, n_pad))
    block.transpose(0, 2, 1)[...] = rows.reshape(n_batch, n_pad, d)
    if not contiguous:
        block.transpose(0, 2, 1)[~slot] = 0.0
    block_weight = None
    if pair_weight is not None:
        block_weight = np.zeros((n_batch, 1, n_pad))
        block_weight[:, 0][slot] = pair_weight[pairs].reshape(-1)[slot.ravel()]
    return block, block_weight, n_pad - counts


def _batches(counts, entries_per_pair, chunk_size):
    """The groups with pairs in batches of similar counts, each of at most
    ``chunk_size`` padded entries (one group at least): a list of index arrays."""
    by_count = np.argsort(counts, kind="stable")
    by_count = by_count[counts[by_count] > 0]
    batches = []
    first = 0
    while first < by_count.size:
        # Groups of similar counts (within a factor of 2) keep the padding small.
        stop = first + 1
        while (
            stop < by_count.size
            and (stop - first + 1) * entries_per_pair * counts[by_count[stop]]
            <= chunk_size
            and counts[by_count[stop]] <= 2 * counts[by_count[first]] + 8
        ):
            stop += 1
        batches.append(by_count[first:stop])
        first = stop
    return batches


def _newton_gaussian(
    block, block_weight, coef, prior_mean, precision, weight, max_iter, tol,
    evidence=True, buffers=None,
):
    """Newton's method for a padded batch from ``coef``; returns the optimum, the
    loss there and log det(Hessian) (None with ``evidence=False``).

    ``block`` (n_batch, n_features, n_pad) holds the padded pairs feature-major;
    ``block_weight`` (n_batch, 1, n_pad) weighs each pair, or is None (ones, with
    padding rows at margin 0 adding a constant). Groups leave the batch once every
    one of their problems has converged: the arrays of the groups left are
    compacted when some leave, not gathered at every step; without ``evidence``
    (no Hessian at the optimum) they are compacted in place, so ``block`` and
    ``block_weight`` are overwritten. The float32 arrays of the Hessians are
    taken from ``buffers`` (a :class:`_Buffers`), new ones when None.
    """
    n_components = prior_mean.shape[0]
    coef = coef.copy()
    margin = np.matmul(coef, block)
    data_loss = _softplus_sum(margin, block_weight)
    loss = weight * data_loss + _penalty(coef - prior_mean, precision)
    # With several components, the pairs' outer products are shared by all of them;
    # with one, the Hessians are built in float32 from a copy of the block.
    outer = _outer_products(block) if n_components > 1 else None
    block32 = scratch = None
    if outer is None:
        buffers = _Buffers() if buffers is None else buffers
        block32 = buffers.get("block32", block.shape, np.float32)
        block32[...] = block
        scratch = buffers.get("scaled", block.shape, np.float32)
    compact = _compacted if evidence else _compacted_in_place
    active = np.arange(block.shape[0])
    # The pairs, outer products, float32 pairs and pair weights of the active groups.
    arrays = (block, outer, block32, block_weight)
    for _ in range(max_iter):
        rows, active_outer, rows32, active_weight = arrays
        step, decrement = _newton_step(
            rows, active_outer, rows32, margin[active], coef[active] - prior_mean,
            precision, weight, active_weight, scratch,
        )
        converged = (decrement / 2.0 <= tol * (1.0 + np.abs(loss[active]))).all(axis=1)
        keep = ~converged
        if not keep.any():
            break
        if converged.any():
            arrays = tuple(None if array is None else compact(array, keep) for array in arrays)
            rows, active_weight = arrays[0], arrays[3]
        active, step, decrement = active[keep], step[keep], decrement[keep]
        # Along the step, margins move linearly and the penalty is a parabola.
        delta = np.matmul(step, rows)
        old_margin, old_loss = margin[active], loss[active]
        linear = np.einsum("gcd,cde,gce->gc", coef[active] - prior_mean, precision, step)
        quadratic = 0.5 * np.einsum("gcd,cde,gce->gc", step, precision, step)
        old_penalty = old_loss - weight * data_loss[active]
        size, new_loss, new_data, todo = _backtrack(
            old_loss, old_margin, delta, active_weight, weight, old_penalty, linear,
            quadratic, decrement,
        )
        _extrapolate(
            size, new_loss, new_data, ~todo, old_margin, delta, active_weight,
            weight, old_penalty, linear, quadratic,
        )
        # A problem whose search failed (round-off at the optimum) keeps its coef.
        size[todo] = 0.0
        new_loss[todo], new_data[todo] = old_loss[todo], data_loss[active][todo]
        coef[active] -= size[..., np.newaxis] * step
        margin[active] = old_margin - size[..., np.newaxis] * delta
        loss[active], data_loss[active] = new_loss, new_data
    if not evidence:
        return coef, loss, None
    hessian = _data_hessian(
        block32, outer, _curvature(margin, weight, block_weight), scratch
    )
    _, hessian_logdet = np.linalg.slogdet(hessian + precision)
    return coef, loss, hessian_logdet


def _compacted(array, keep):
    """``array[keep]``, a new array."""
    return array[keep]


def _compacted_in_place(array, keep):
    """``array[keep]`` moved to ``array``'s own leading rows: a view, no new memory."""
    kept = np.flatnonzero(keep)
    for position, index in enumerate(kept.tolist()):
        if position != index:
            array[position] = array[index]
    return array[: kept.size]


def _backtrack(
    old_loss, old_margin, delta, pair_weight, weight, old_penalty, linear, quadratic,
    decrement,
):
    """Armijo backtracking of each problem of a batch along its Newton step.

    Along the step the margins move linearly (``old_margin - size * delta``) and
    the penalty is the parabola ``old_penalty - size * linear + size**2 *
    quadratic``, so a halving costs one softplus of the margins of the problems
    not yet accepted, and no matrix product.

    Returns
    -------
    size, new_loss, new_data : ndarray of shape (n_groups, n_components)
        Step size, loss and data loss of each problem at the last size tried.
    failed : ndarray of bool, shape (n_groups, n_components)
        Problems whose 40 halvings found no sufficient decrease.
    """
    size = np.ones(old_loss.shape)
    new_data = _softplus_sum(old_margin - delta, pair_weight)
    for _ in range(40):
        new_loss = weight * new_data + old_penalty - size * linear + size**2 * quadratic
        failed = new_loss > old_loss - 1e-4 * size * decrement
        if not failed.any():
            break
        size[failed] /= 2.0
        g, c = np.nonzero(failed)
        new_data[g, c] = _softplus_sum(
            old_margin[g, c] - size[g, c, np.newaxis] * delta[g, c],
            None if pair_weight is None else pair_weight[g, 0],
        )
    return size, new_loss, new_data, failed


def _extrapolate(
    size, new_loss, new_data, accepted, old_margin, delta, pair_weight, weight,
    old_penalty, linear, quadratic,
):
    """Double the steps taken in full while the loss falls (in place), twice at most.

    Far from the optimum of a nearly separable problem (a user whose comparisons
    one direction almost satisfies, under a weak penalty) the full Newton step
    undershoots: the decrement falls by a constant factor a step instead of
    quadratically. Along the step the margins move linearly, so a longer step
    costs one softplus of the margins and no matrix product.
    """
    grow = accepted & (size == 1.0)
    for _ in range(_EXTRAPOLATIONS):
        g, c = np.nonzero(grow)
        if g.size == 0:
            return
        longer = 2.0 * size[g, c]
        longer_data = _softplus_sum(
            old_margin[g, c] - longer[:, np.newaxis] * delta[g, c],
            None if pair_weight is None else pair_weight[g, 0],
        )
        longer_loss = (
            weight * longer_data
            + old_penalty[g, c]
            - longer * linear[g, c]
            + longer**2 * quadratic[g, c]
        )
        better = longer_loss < new_loss[g, c]
        g, c = g[better], c[better]
        size[g, c] = longer[better]
        new_loss[g, c], new_data[g, c] = longer_loss[better], longer_data[better]
        grow[:] = False
        grow[g, c] = True


def _penalty(shift, precision):
    return 0.5 * np.einsum("gcd,cde,gce->gc", shift, precision, shift)


def _curvature(margin, weight, pair_weight=None):
    p_loser = expit(-margin)
    if pair_weight is not None:
        return weight * (p_loser * pair_weight) * (1.0 - p_loser)
    return weight * p_loser * (1.0 - p_loser)


def _outer_products(block):
    """``d d^T`` of every padded pair, flattened: shape (n_batch, d * d, n_pad)."""
    n_batch, d, n_pad = block.shape
    return (block[:, :, np.newaxis, :] * block[:, np.newaxis, :, :]).reshape(
        n_batch, d * d, n_pad
    )


def _data_hessian(block32, outer, curvature, scratch=None):
    """``sum_pairs curvature * d d^T`` per group and component.

    With several components, from the pairs' outer products ``outer``; with one,
    from the float32 ``block32``: the Hessian only sets the Newton direction (the
    gradient and the loss, which decide convergence, stay in float64), and float32
    products cost half as much; the scaled pairs are written to the leading
    groups of ``scratch`` (at least ``block32``'s shape) when given.
    """
    if outer is not None:
        n_batch, d_squared, _ = outer.shape
        d = int(round(d_squared**0.5))
        return np.matmul(curvature, outer.transpose(0, 2, 1)).reshape(n_batch, -1, d, d)
    scaled = np.multiply(
        block32,
        np.sqrt(curvature, dtype=np.float32),
        out=None if scratch is None else scratch[: block32.shape[0]],
    )
    return np.matmul(scaled, scaled.transpose(0, 2, 1))[:, np.newaxis].astype(np.float64)


def _newton_step(
    block, outer, block32, margin, shift, precision, weight, pair_weight, scratch=None
):
    """Newton step and decrement of a batch (``scratch``: see :func:`_data_hessian`)."""
    p_loser = np.negative(margin)
    expit(p_loser, out=p_loser)
    weighted = p_loser if pair_weight is None else p_loser * pair_weight
    gradient = -weight * np.matmul(weighted, block.transpose(0, 2, 1)) + np.einsum(
        "cde,gce->gcd", precision, shift
    )
    curvature = weight * weighted
    curvature *= 1.0 - p_loser
    hessian = _data_hessian(block32, outer, curvature, scratch)
    step = np.linalg.solve(hessian + precision, gradient[..., np.newaxis])[..., 0]
    return step, np.einsum("gcd,gcd->gc", gradient, step)
