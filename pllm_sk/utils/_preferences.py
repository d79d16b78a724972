"""Comparison pairs and the Bradley-Terry model: small pure functions on arrays.

Every preference estimator learns from within-group comparisons (a group is one
(user, prompt)): the pairs of rows of the same group whose labels differ. This module
extracts those pairs from graded labels and fits the Bradley-Terry (logistic) model on
their feature differences, for one weight vector or for many groups at once.
"""

import numpy as np
from scipy.special import expit

__all__ = [
    "bradley_terry_loss",
    "comparison_pairs",
    "fit_bradley_terry_groups",
]


def comparison_pairs(groups, y, *, transitive_reduction=False):
    """Every (winner, loser) pair of rows of the same group with ``y[winner] > y[loser]``.

    Rows with a NaN label are ignored; tied labels give no pair.

    Parameters
    ----------
    groups : array-like of int, shape (n_rows,) or (n_rows, n_keys)
        Group key of each row, for example the ``(user_id, prompt_id)`` columns.
    y : array-like of float, shape (n_rows,)
        Labels; larger is better within a group.
    transitive_reduction : bool, default=False
        Keep only the pairs whose labels are consecutive distinct levels of their
        group: the smallest set of pairs that implies all the others by transitivity.
        Labels (1, 0.5, 0.5, 0) give the 4 pairs 1 > 0.5 and 0.5 > 0 instead of 5.

    Returns
    -------
    winners, losers : ndarray of int64, shape (n_pairs,)
        Row indices into ``y``, ordered by group (in sorted key order), then by
        decreasing winner label.

    Examples
    --------
    >>> from pllm_sk.utils._preferences import comparison_pairs
    >>> winners, losers = comparison_pairs([0, 0, 0, 1, 1], [1.0, 0.0, 0.5, 0.0, 1.0])
    >>> winners.tolist(), losers.tolist()
    ([0, 0, 2, 4], [2, 1, 1, 3])
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    groups = np.asarray(groups)
    if groups.ndim == 1:
        groups = groups[:, np.newaxis]
    if groups.ndim != 2 or groups.shape[0] != y.shape[0]:
        raise ValueError(
            f"groups must have one key row per label; got groups of shape "
            f"{groups.shape} for {y.shape[0]} labels."
        )
    rows = np.flatnonzero(~np.isnan(y))
    if rows.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    keys, labels = groups[rows], y[rows]
    # Sort by group, then by decreasing label: a winner always precedes its losers.
    order = np.lexsort((-labels, *keys.T[::-1]))
    rows, keys, labels = rows[order], keys[order], labels[order]
    new_group = np.ones(rows.size, dtype=bool)
    new_group[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, rows.size))
    # Pair each sorted position with every later position of its group.
    position = np.arange(rows.size)
    group_end = np.repeat(starts + sizes, sizes)
    n_later = group_end - position - 1
    first = np.repeat(position, n_later)
    block_start = np.repeat(np.cumsum(n_later) - n_later, n_later)
    second = first + 1 + (np.arange(first.size) - block_start)
    keep = labels[first] > labels[second]
    if transitive_reduction:
        # Level of a row within its group: 0 for the best label, +1 per distinct drop.
        drop = np.ones(rows.size, dtype=np.int64)
        drop[1:] = labels[1:] != labels[:-1]
        drop[new_group] = 0
        cumulative = np.cumsum(drop)
        level = cumulative - np.repeat(cumulative[starts], sizes)
        keep &= level[second] == level[first] + 1
    return rows[first[keep]], rows[second[keep]]


def bradley_terry_loss(
    coef, differences, *, l2=0.0, prior_mean=None, sample_weight=None
):
    """Bradley-Terry negative log-likelihood with an L2 penalty, and its gradient.

    The probability that the winner of pair ``i`` is chosen is
    ``sigmoid(differences[i] @ coef)``, so the objective is::

        sum_i s_i * log(1 + exp(-differences[i] @ coef)) + l2 * ||coef - prior_mean||^2

    Parameters
    ----------
    coef : ndarray of shape (n_features,)
    differences : ndarray of shape (n_pairs, n_features)
        Winner features minus loser features.
    l2 : float, default=0.0
        Strength of the penalty.
    prior_mean : ndarray of shape (n_features,), default=None
        Centre of the penalty; zeros when None.
    sample_weight : ndarray of shape (n_pairs,), default=None
        Weight ``s_i`` of each pair; ones when None.

    Returns
    -------
    loss : float
    gradient : ndarray of shape (n_features,)

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.utils._preferences import bradley_terry_loss
    >>> loss, gradient = bradley_terry_loss(np.zeros(2), np.array([[1.0, 0.0]]))
    >>> round(loss, 4), gradient.tolist()
    (0.6931, [-0.5, 0.0])
    """
    coef = np.asarray(coef, dtype=np.float64)
    differences = np.asarray(differences, dtype=np.float64)
    margin = differences @ coef
    weight = (
        np.ones_like(margin) if sample_weight is None else np.asarray(sample_weight)
    )
    shift = coef if prior_mean is None else coef - np.asarray(prior_mean)
    loss = weight @ np.logaddexp(0.0, -margin) + l2 * (shift @ shift)
    gradient = -(weight * expit(-margin)) @ differences + 2.0 * l2 * shift
    return float(loss), gradient


def fit_bradley_terry_groups(
    differences,
    groups,
    n_groups,
    *,
    l2,
    prior_mean,
    max_iter=50,
    tol=1e-8,
    chunk_size=2_000_000,
):
    """Fit one penalised Bradley-Terry weight vector per group, all groups at once.

    Group ``g`` minimises :func:`bradley_terry_loss` over its own pairs with penalty
    ``l2 * ||coef_g - prior_mean_g||^2``. A group without pairs gets its prior mean.
    The solver is Newton's method with a backtracking line search, run on batches of
    groups whose pairs are padded to a dense ``(n_groups, n_pairs, n_features)``
    block, so every step is a batched matrix product. Memory is ``O(chunk_size)``
    floats per batch and time ``O(n_pairs * n_features ** 2)`` per step, which suits
    up to a few dozen features.

    Parameters
    ----------
    differences : ndarray of shape (n_pairs, n_features)
        Winner features minus loser features.
    groups : ndarray of int, shape (n_pairs,)
        Group of each pair, in ``[0, n_groups)``.
    n_groups : int
    l2 : float
        Penalty strength, > 0 (it makes every group's problem strictly convex).
    prior_mean : ndarray of shape (n_features,) or (n_groups, n_features)
        Centre of each group's penalty and the start of Newton's method.
    max_iter : int, default=50
        Newton steps at most.
    tol : float, default=1e-8
        Stop when no coefficient's Newton step exceeds ``tol`` in absolute value.
    chunk_size : int, default=2_000_000
        Padded pair-feature entries per batch of groups.

    Returns
    -------
    coef : ndarray of shape (n_groups, n_features)
    """
    differences = np.asarray(differences, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    n_features = differences.shape[1]
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0 for a strictly convex problem; got {l2!r}.")
    prior = np.broadcast_to(
        np.asarray(prior_mean, dtype=np.float64), (n_groups, n_features)
    )
    coef = prior.copy()
    counts = np.bincount(groups, minlength=n_groups)
    order = np.argsort(groups, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # Batches of groups with similar pair counts keep the padding small.
    by_count = np.argsort(counts, kind="stable")
    by_count = by_count[counts[by_count] > 0]
    start = 0
    while start < by_count.size:
        # Groups are sorted by count, so the last group of a batch sets its padding.
        stop = start + 1
        while (
            stop < by_count.size
            and (stop - start + 1) * counts[by_count[stop]] * n_features <= chunk_size
        ):
            stop += 1
        batch = by_count[start:stop]
        n_pad = int(counts[batch].max())
        block = np.zeros((batch.size, n_pad, n_features))
        slot = np.arange(n_pad)[np.newaxis, :] < counts[batch][:, np.newaxis]
        source = offsets[batch][:, np.newaxis] + np.arange(n_pad)[np.newaxis, :]
        block[slot] = differences[order[source[slot]]]
        coef[batch] = _newton_bradley_terry(block, l2, prior[batch], max_iter, tol)
        start = stop
    return coef


def _newton_bradley_terry(block, l2, prior, max_iter, tol):
    """Newton's method for a batch of groups; zero rows of ``block`` are padding.

    A padding row has margin 0 whatever the coefficients: it adds the constant
    log 2 to the loss and nothing to the gradient or the Hessian.
    """
    n_batch, _, n_features = block.shape
    coef = prior.copy()
    ridge = 2.0 * l2 * np.eye(n_features)

    def objective(candidate, index):
        margin = np.einsum("gpf,gf->gp", block[index], candidate)
        shift = candidate - prior[index]
        return np.logaddexp(0.0, -margin).sum(axis=1) + l2 * (shift * shift).sum(axis=1)

    everyone = np.arange(n_batch)
    loss = objective(coef, everyone)
    for _ in range(max_iter):
        margin = np.einsum("gpf,gf->gp", block, coef)
        p_loser = expit(-margin)
        gradient = -np.einsum("gp,gpf->gf", p_loser, block) + 2.0 * l2 * (coef - prior)
        curvature = p_loser * (1.0 - p_loser)
        hessian = np.matmul(block.transpose(0, 2, 1) * curvature[:, None, :], block)
        step = np.linalg.solve(hessian + ridge, gradient[..., np.newaxis])[..., 0]
        if np.abs(step).max() <= tol:
            # Inside the region of quadratic convergence: the full step is exact.
            coef = coef - step
            break
        decrement = np.einsum("gf,gf->g", gradient, step)
        # Backtracking (Armijo) line search, group by group.
        size = np.ones(n_batch)
        candidate = coef - step
        new_loss = objective(candidate, everyone)
        for _ in range(30):
            failed = np.flatnonzero(new_loss > loss - 1e-4 * size * decrement)
            if failed.size == 0:
                break
            size[failed] /= 2.0
            candidate[failed] = coef[failed] - size[failed, None] * step[failed]
            new_loss[failed] = objective(candidate[failed], failed)
        # A group whose search failed (round-off at the optimum) keeps its coef.
        stuck = new_loss > loss
        candidate[stuck], new_loss[stuck] = coef[stuck], loss[stuck]
        coef, loss = candidate, new_loss
    return coef
