"""Per-user comparison stores and the calibration of a likelihood temperature.

Shared by the rankers that learn across users (:mod:`pllm_sk.neighbors`,
:mod:`pllm_sk.collaborative`). Each keeps every user's comparisons grouped by user,
so that ``partial_fit`` can add new or returning users and ``predict`` can adapt to
any user it has seen, and each calibrates how much one comparison counts as evidence
about a user (the temperature) on held-out prompts of its historical users.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import expit

__all__ = [
    "TEMPERATURES",
    "UserComparisons",
    "calibration_split",
    "fit_pooled_preference",
    "fit_user_preferences",
    "float32_differences",
    "item_keys",
    "log_sigmoid_",
    "best_temperature",
    "comparisons",
    "temperature_scores",
    "within_one_standard_error",
]

# Candidate temperatures of ``temperature="auto"``: the log-likelihood of a user's
# comparisons is divided by T. Below 1 sharpens (choices that the features explain
# exactly, as on the reward track); above 1 softens (choices that the features only
# partly explain, and the many correlated pairs that one best/worst choice yields).
TEMPERATURES = 2.0 ** np.arange(-3, 6)

# Support sizes (prompts) cycled over the calibration users.
_CALIBRATION_SUPPORT = (1, 3, 5, 10)


class UserComparisons:
    """Comparisons grouped by user: ``columns[name][offsets[u]:offsets[u + 1]]``.

    Parameters
    ----------
    users : ndarray of int64
        Every user the store knows, sorted and distinct; a user may own no
        comparison (labeled rows that were all tied).
    owner : ndarray of int64, shape (n_comparisons,)
        User id of each comparison; every one must be in ``users``.
    **columns : ndarray with first axis of length n_comparisons
        Per-comparison data, for example feature differences and prompt ids.
    """

    def __init__(self, users, owner, **columns):
        owner = np.asarray(owner)
        self.users = np.asarray(users, dtype=np.int64)
        if (owner[1:] < owner[:-1]).any():
            order = np.argsort(owner, kind="stable")
            owner = owner[order]
            columns = {name: np.asarray(value)[order] for name, value in columns.items()}
        self.columns = {name: np.asarray(value) for name, value in columns.items()}
        counts = np.bincount(
            np.searchsorted(self.users, owner), minlength=self.users.size
        )
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def counts(self):
        """Number of comparisons of each user of ``users``."""
        return np.diff(self.offsets)

    def owner(self):
        """Position in ``users`` of the owner of each comparison."""
        return np.repeat(np.arange(self.users.size), self.counts)

    def merged(self, other):
        """A new store with the users and comparisons of both; ``self``'s come first."""
        return UserComparisons(
            np.union1d(self.users, other.users),
            np.concatenate([self.users[self.owner()], other.users[other.owner()]]),
            **{
                name: np.concatenate([value, other.columns[name]])
                for name, value in self.columns.items()
            },
        )

    def positions(self, user_ids):
        """Positions of ``user_ids`` in ``users`` and whether each is known."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if self.users.size == 0:
            return np.zeros(user_ids.shape, dtype=np.int64), np.zeros(user_ids.shape, bool)
        position = np.minimum(np.searchsorted(self.users, user_ids), self.users.size - 1)
        return position, self.users[position] == user_ids

    def rows(self, positions):
        """Comparison indices of the users at ``positions``, concatenated in that order.

        Returns
        -------
        rows : ndarray of int64
        counts : ndarray of int64, shape (len(positions),)
        """
        positions = np.asarray(positions, dtype=np.int64)
        starts, counts = self.offsets[positions], self.counts[positions]
        total = int(counts.sum())
        block_start = np.repeat(np.cumsum(counts) - counts, counts)
        rows = np.repeat(starts, counts) + (np.arange(total) - block_start)
        return rows, counts


def item_keys(ids, n_response_keys):
    """One int64 key per (prompt_id, response_id); -1 where response_id is out of range.

    ``n_response_keys`` is one more than the largest ``response_id`` seen in ``fit``, so
    a key never collides with another item's.
    """
    keys = ids[:, 1] * n_response_keys + ids[:, 2]
    return np.where(ids[:, 2] < n_response_keys, keys, -1)


class Comparisons(NamedTuple):
    """Within-(user, prompt) comparisons of labeled rows and their label levels."""

    users: np.ndarray  # distinct user ids, sorted
    group_of_row: np.ndarray  # (user, prompt) group of each row, groups sorted
    group_user: np.ndarray  # position in ``users`` of each group's user
    level: np.ndarray  # dense rank of each row's label in its group, 0 = lowest
    n_levels: np.ndarray  # distinct labels of each group
    winners: np.ndarray  # row of the chosen side of each pair
    losers: np.ndarray  # row of the rejected side of each pair
    top: np.ndarray  # whether each pair's winner has its group's top label


def comparisons(ids, y):
    """Every pair of rows of the same (user, prompt) with different labels.

    The pairs are those of :func:`~pllm_sk.utils._preferences.comparison_pairs`, in
    the same order (by user, then prompt, then decreasing winner label), computed with
    one sort that also gives the label levels that the rankers need.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
        ``user_id``, ``prompt_id``, ``response_id`` of labeled rows.
    y : ndarray of shape (n_rows,)
        Their labels, none NaN.

    Returns
    -------
    comparisons : Comparisons
    """
    users, user_of_row = np.unique(ids[:, 0], return_inverse=True)
    n_prompt_keys = int(ids[:, 1].max()) + 1 if ids.shape[0] else 1
    key = user_of_row.reshape(-1).astype(np.int64) * n_prompt_keys + ids[:, 1]
    order = np.lexsort((-y, key))
    sorted_key, sorted_y = key[order], y[order]
    n_rows = order.size
    new_group = np.ones(n_rows, dtype=bool)
    new_group[1:] = sorted_key[1:] != sorted_key[:-1]
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, n_rows))
    # Rank of each label from the top of its group: +1 at each distinct label.
    step = np.ones(n_rows, dtype=np.int64)
    step[1:] = sorted_y[1:] != sorted_y[:-1]
    step[new_group] = 0
    cumulative = np.cumsum(step)
    rank_from_top = cumulative - np.repeat(cumulative[starts], sizes)
    n_levels = rank_from_top[starts + sizes - 1] + 1
    # Pair each sorted position with every later position of its group.
    position = np.arange(n_rows)
    n_later = np.repeat(starts + sizes, sizes) - position - 1
    first = np.repeat(position, n_later)
    offset = np.arange(first.size) - np.repeat(np.cumsum(n_later) - n_later, n_later)
    second = first + 1 + offset
    keep = sorted_y[first] > sorted_y[second]
    first, second = first[keep], second[keep]
    level = np.empty(n_rows, dtype=np.int64)
    level[order] = np.repeat(n_levels, sizes) - 1 - rank_from_top
    group_of_row = np.empty(n_rows, dtype=np.int64)
    group_of_row[order] = np.repeat(np.arange(starts.size), sizes)
    return Comparisons(
        users=users,
        group_of_row=group_of_row,
        group_user=sorted_key[starts] // n_prompt_keys,
        level=level,
        n_levels=n_levels,
        winners=order[first],
        losers=order[second],
        top=rank_from_top[first] == 0,
    )


def temperature_scores(margins, prompts, owner, n_users):
    """Held-out top-1 accuracy of each user at each candidate temperature.

    Parameters
    ----------
    margins : ndarray of shape (n_comparisons, n_temperatures)
        Predicted utility of the winner minus the loser, for the held-out
        comparisons whose winner is their prompt's top choice.
    prompts, owner : ndarray of int64, shape (n_comparisons,)
        Prompt id and calibration user of each comparison.
    n_users : int

    Returns
    -------
    scores : ndarray of shape (n_scored_users, n_temperatures)
        For each user with held-out prompts, the share of them whose chosen row the
        prediction puts above every row it was compared with.
    """
    n_prompt_keys = int(prompts.max()) + 1 if prompts.size else 1
    keys, prompt_group = np.unique(owner * n_prompt_keys + prompts, return_inverse=True)
    wrong = np.zeros((keys.size, margins.shape[1]))
    np.add.at(wrong, prompt_group.reshape(-1), (margins <= 0).astype(float))
    user_of_group = keys // n_prompt_keys
    per_user = np.zeros((n_users, margins.shape[1]))
    np.add.at(per_user, user_of_group, (wrong == 0).astype(float))
    n_prompts = np.bincount(user_of_group, minlength=n_users)
    scored = n_prompts > 0
    return per_user[scored] / n_prompts[scored, np.newaxis]


def best_temperature(scores):
    """The largest temperature within one standard error of the best (the 1-SE rule).

    The largest is the most cautious: the closest to the population. A temperature
    qualifies when its mean score over users falls short of the best one's by at
    most the standard error of that paired difference.

    Parameters
    ----------
    scores : ndarray of shape (n_users, n_temperatures)
        Per-user scores, from :func:`temperature_scores`; greater is better.
    """
    if scores.shape[0] == 0:
        return 1.0
    return float(TEMPERATURES[within_one_standard_error(scores).max()])


def within_one_standard_error(scores):
    """Indices of the settings whose mean score is within one SE of the best one's.

    Parameters
    ----------
    scores : ndarray of shape (n_users, n_settings)
        Per-user scores, greater is better; at least one user.

    Returns
    -------
    qualified : ndarray of int64
        Column indices, increasing; the best column is always among them. The
        standard error is that of the paired per-user difference to the best.
    """
    mean = scores.mean(axis=0)
    best = int(np.argmax(mean))
    difference = scores - scores[:, [best]]
    error = difference.std(axis=0) / np.sqrt(scores.shape[0])
    return np.flatnonzero(mean >= mean[best] - error)


def calibration_split(store, candidates, rng, n_users):
    """Support and held-out comparisons of a sample of users, for calibration.

    Each sampled user (with at least two prompts) reveals the comparisons of a few
    random prompts, 1, 3, 5 or 10 in turn (at most all but one), as a cold-start test
    user would; the comparisons of their other prompts are held out.

    Parameters
    ----------
    store : UserComparisons
        With a ``"prompt"`` column.
    candidates : ndarray of int64
        Positions in ``store.users`` to sample from.
    rng : RandomState
    n_users : int
        Users to sample at most.

    Returns
    -------
    positions : ndarray of int64, shape (n_sampled,)
        The sampled users' positions in ``store.users``.
    support, held_out : tuple of two ndarrays of int64
        Comparison indices into the store and the index of their user in
        ``positions``, grouped by user.
    """
    prompts = store.columns["prompt"]
    candidates = np.asarray(candidates, dtype=np.int64)
    candidates = candidates[rng.permutation(candidates.size)]
    positions, support, held_out = [], [], []
    for position in candidates:
        if len(positions) == n_users:
            break
        rows = np.arange(store.offsets[position], store.offsets[position + 1])
        user_prompts = np.unique(prompts[rows])
        if user_prompts.size < 2:
            continue
        n_support = min(
            _CALIBRATION_SUPPORT[len(positions) % len(_CALIBRATION_SUPPORT)],
            user_prompts.size - 1,
        )
        revealed = rng.choice(user_prompts, n_support, replace=False)
        in_support = np.isin(prompts[rows], revealed)
        positions.append(position)
        support.append(rows[in_support])
        held_out.append(rows[~in_support])

    def grouped(parts):
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        owner = np.repeat(np.arange(len(parts)), [part.size for part in parts])
        return np.concatenate(parts), owner

    return np.asarray(positions, dtype=np.int64), grouped(support), grouped(held_out)


def float32_differences(vectors, winners, losers):
    """``vectors[winners] - vectors[losers]`` in float32, without float64 temporaries."""
    differences = vectors[winners].astype(np.float32)
    differences -= vectors[losers]
    return differences


def log_sigmoid_(margin):
    """``log(sigmoid(margin))`` computed in place (float32 friendly), and returned.

    ``min(m, 0) - log1p(exp(-|m|))``: stable for any margin, and one exp and one
    log1p per entry, about 7 times faster than ``np.logaddexp`` on large blocks.
    """
    penalty = np.abs(margin)
    np.negative(penalty, out=penalty)
    np.exp(penalty, out=penalty)
    np.log1p(penalty, out=penalty)
    np.minimum(margin, 0, out=margin)
    margin -= penalty
    return margin


def fit_pooled_preference(differences, *, l2, max_iter=50, tol=1e-10, chunk_size=1 << 20):
    """One penalised Bradley-Terry weight vector for all pairs: the population's.

    Minimises ``sum_i log(1 + exp(-differences[i] @ w)) + l2 * ||w||^2``, the
    objective of :class:`~pllm_sk.baselines.PopulationRanker`, by Newton's method
    with the gradient and the Hessian summed over chunks of ``chunk_size`` pairs, so
    that memory stays ``O(n_pairs + chunk_size * d)`` with millions of pairs.

    Returns
    -------
    coef : ndarray of shape (d,)
    """
    n_pairs, d = differences.shape
    chunks = [slice(start, start + chunk_size) for start in range(0, n_pairs, chunk_size)]
    if len(chunks) > 4:
        # Start from the fit to every 8th pair (its objective is about 1/8 of this
        # one): a few full passes then finish the job.
        coef = fit_pooled_preference(
            differences[::8], l2=l2 / 8, max_iter=max_iter, tol=1e-6, chunk_size=chunk_size
        )
        margin = np.concatenate(
            [np.asarray(differences[chunk], dtype=np.float64) @ coef for chunk in chunks]
        )
        loss = _softplus_sum(margin) + l2 * coef @ coef
    else:
        coef = np.zeros(d)
        margin = np.zeros(n_pairs)
        loss = n_pairs * np.log(2.0)
    for _ in range(max_iter):
        gradient = 2.0 * l2 * coef
        hessian = 2.0 * l2 * np.eye(d)
        for chunk in chunks:
            rows = np.asarray(differences[chunk], dtype=np.float64)
            p_loser = expit(-margin[chunk])
            gradient -= p_loser @ rows
            hessian += (rows * (p_loser * (1.0 - p_loser))[:, np.newaxis]).T @ rows
        step = np.linalg.solve(hessian, gradient)
        decrement = gradient @ step
        if decrement / 2.0 <= tol * (1.0 + abs(loss)):
            break
        delta = np.concatenate(
            [np.asarray(differences[chunk], dtype=np.float64) @ step for chunk in chunks]
        )
        size = 1.0
        for _ in range(40):
            candidate = coef - size * step
            new_loss = _softplus_sum(margin - size * delta) + l2 * candidate @ candidate
            if new_loss <= loss - 1e-4 * size * decrement:
                break
            size /= 2.0
        else:
            break  # round-off at the optimum
        coef, margin, loss = candidate, margin - size * delta, new_loss
    return coef


def fit_user_preferences(
    differences,
    groups,
    n_groups,
    *,
    prior_mean,
    prior_precision,
    weight=1.0,
    start=None,
    max_iter=50,
    tol=1e-10,
    chunk_size=4_000_000,
):
    """Penalised Bradley-Terry weights per group and per Gaussian prior component.

    For group ``g`` and component ``c`` this minimises::

        weight * sum_{pairs of g} log(1 + exp(-differences[i] @ u))
        + 0.5 * (u - prior_mean[c]) @ prior_precision[c] @ (u - prior_mean[c])

    An isotropic penalty ``l2 * ||u - m||^2`` is ``prior_precision = 2 * l2 * I``.
    The Laplace approximation of each problem's log evidence (log marginal likelihood
    up to a constant shared by the components) comes with it, so a mixture prior can
    be turned into a posterior over components.

    Newton's method, batched over groups padded to their largest pair count (groups
    sorted by count keep the padding small); the Armijo backtracking reuses the
    margins of the step, so a backtrack costs no matrix product. A group without
    pairs gets the prior mean.

    Parameters
    ----------
    differences : ndarray of shape (n_pairs, d)
        Winner features minus loser features.
    groups : ndarray of int, shape (n_pairs,)
        Group of each pair, in ``[0, n_groups)``; a negative group drops the pair.
    n_groups : int
    prior_mean : ndarray of shape (n_components, d)
    prior_precision : ndarray of shape (n_components, d, d)
        Symmetric positive definite.
    weight : float, default=1.0
        Weight of every pair (1 / temperature).
    start : ndarray of shape (n_groups, n_components, d), default=None
        Where Newton's method starts; the prior means when None.
    max_iter : int, default=50
    tol : float, default=1e-10
        Stop when half the Newton decrement of every problem is below
        ``tol * (1 + |loss|)``.
    chunk_size : int, default=4_000_000
        Padded entries (groups x components x pairs x d) per batch.

    Returns
    -------
    coef : ndarray of shape (n_groups, n_components, d)
    log_evidence : ndarray of shape (n_groups, n_components)
    """
    differences = np.asarray(differences, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.int64)
    prior_mean = np.asarray(prior_mean, dtype=np.float64)
    prior_precision = np.asarray(prior_precision, dtype=np.float64)
    n_components, d = prior_mean.shape
    if start is None:
        start = np.broadcast_to(prior_mean, (n_groups, n_components, d))
    coef = np.array(start, dtype=np.float64)
    log_evidence = np.zeros((n_groups, n_components))
    kept = groups >= 0
    counts = np.bincount(groups[kept], minlength=n_groups)
    order = np.flatnonzero(kept)[np.argsort(groups[kept], kind="stable")]
    offsets = np.concatenate([[0], np.cumsum(counts)])
    by_count = np.argsort(counts, kind="stable")
    by_count = by_count[counts[by_count] > 0]
    _, prior_logdet = np.linalg.slogdet(prior_precision)
    start = 0
    while start < by_count.size:
        # Groups of similar counts (within a factor of 2) keep the padding small.
        stop = start + 1
        while (
            stop < by_count.size
            and (stop - start + 1) * n_components * counts[by_count[stop]] * d
            <= chunk_size
            and counts[by_count[stop]] <= 2 * counts[by_count[start]] + 8
        ):
            stop += 1
        batch = by_count[start:stop]
        n_pad = int(counts[batch].max())
        block = np.zeros((batch.size, n_pad, d))
        slot = np.arange(n_pad)[np.newaxis, :] < counts[batch][:, np.newaxis]
        source = offsets[batch][:, np.newaxis] + np.arange(n_pad)[np.newaxis, :]
        block[slot] = differences[order[source[slot]]]
        coef[batch], loss, hessian_logdet = _newton_gaussian(
            block, coef[batch], prior_mean, prior_precision, weight, max_iter, tol
        )
        # Padding rows add weight * log 2 each to the loss, whatever u is.
        loss -= weight * np.log(2.0) * (n_pad - counts[batch])[:, np.newaxis]
        log_evidence[batch] = -loss - 0.5 * (hessian_logdet - prior_logdet)
        start = stop
    return coef, log_evidence


def _newton_gaussian(block, coef, prior_mean, precision, weight, max_iter, tol):
    """Newton's method for a padded batch from ``coef``; returns the optimum, the
    loss there and log det(Hessian).

    Groups leave the batch once every one of their problems has converged.
    """
    n_components = prior_mean.shape[0]
    coef = coef.copy()
    margin = np.einsum("gpd,gcd->gcp", block, coef)
    data_loss = _softplus_sum(margin)
    loss = weight * data_loss + _penalty(coef - prior_mean, precision)
    # With several components, the pairs' outer products are shared by all of them.
    outer = _outer_products(block) if n_components > 1 else None
    active = np.arange(block.shape[0])
    for _ in range(max_iter):
        rows = block[active]
        step, decrement = _newton_step(
            rows,
            None if outer is None else outer[active],
            margin[active],
            coef[active] - prior_mean,
            precision,
            weight,
        )
        converged = (decrement / 2.0 <= tol * (1.0 + np.abs(loss[active]))).all(axis=1)
        keep = ~converged
        active, rows, step, decrement = (
            active[keep], rows[keep], step[keep], decrement[keep]
        )
        if active.size == 0:
            break
        # Along the step, margins move linearly and the penalty is a parabola.
        old_margin, old_loss = margin[active], loss[active]
        delta = np.einsum("gpd,gcd->gcp", rows, step)
        linear = np.einsum("gcd,cde,gce->gc", coef[active] - prior_mean, precision, step)
        quadratic = 0.5 * np.einsum("gcd,cde,gce->gc", step, precision, step)
        old_penalty = old_loss - weight * data_loss[active]
        size = np.ones(old_loss.shape)
        new_data = _softplus_sum(old_margin - delta)
        todo = np.zeros(old_loss.shape, dtype=bool)
        for _ in range(40):
            new_loss = (
                weight * new_data + old_penalty - size * linear + size**2 * quadratic
            )
            todo = new_loss > old_loss - 1e-4 * size * decrement
            if not todo.any():
                break
            size[todo] /= 2.0
            g, c = np.nonzero(todo)
            new_data[g, c] = _softplus_sum(
                old_margin[g, c] - size[g, c, np.newaxis] * delta[g, c]
            )
        # A problem whose search failed (round-off at the optimum) keeps its coef.
        size[todo] = 0.0
        new_loss[todo], new_data[todo] = old_loss[todo], data_loss[active][todo]
        coef[active] -= size[..., np.newaxis] * step
        margin[active] = old_margin - size[..., np.newaxis] * delta
        loss[active], data_loss[active] = new_loss, new_data
    hessian = _data_hessian(block, outer, _curvature(margin, weight))
    _, hessian_logdet = np.linalg.slogdet(hessian + precision)
    return coef, loss, hessian_logdet


def _softplus_sum(margin):
    """``sum(log(1 + exp(-margin)))`` over the last axis."""
    return -log_sigmoid_(np.array(margin, dtype=np.float64)).sum(axis=-1)


def _penalty(shift, precision):
    return 0.5 * np.einsum("gcd,cde,gce->gc", shift, precision, shift)


def _curvature(margin, weight):
    p_loser = expit(-margin)
    return weight * p_loser * (1.0 - p_loser)


def _outer_products(block):
    """``d d^T`` of every padded pair, flattened: shape (n_batch, n_pad, d * d)."""
    n_batch, n_pad, d = block.shape
    return (block[:, :, :, np.newaxis] * block[:, :, np.newaxis, :]).reshape(
        n_batch, n_pad, d * d
    )


def _data_hessian(block, outer, curvature):
    """``sum_pairs curvature * d d^T`` per group and component."""
    n_batch, _, d = block.shape
    if outer is not None:
        return np.matmul(curvature, outer).reshape(n_batch, -1, d, d)
    return np.matmul(
        block.transpose(0, 2, 1)[:, np.newaxis] * curvature[:, :, np.newaxis, :],
        block[:, np.newaxis],
    )


def _newton_step(block, outer, margin, shift, precision, weight):
    """Newton step and decrement of a batch."""
    p_loser = expit(-margin)
    gradient = -weight * np.einsum("gcp,gpd->gcd", p_loser, block) + np.einsum(
        "cde,gce->gcd", precision, shift
    )
    hessian = _data_hessian(block, outer, weight * p_loser * (1.0 - p_loser))
    step = np.linalg.solve(hessian + precision, gradient[..., np.newaxis])[..., 0]
    return step, np.einsum("gcd,gcd->gc", gradient, step)
