"""Calibration on held-out prompts of historical users: temperatures and the 1-SE rule.

The rankers that learn across users calibrate how much one comparison counts as
evidence about a user (a likelihood temperature) by revealing a few prompts of
sampled historical users, as a cold-start test user would, and scoring their
predictions on the held-out prompts. A temperature is scored by the held-out
comparisons' log predictive probability (a proper scoring rule, the cross-validated
log marginal likelihood of the tempered model): unlike the share of prompts whose
choice is predicted, it is smooth in the temperature, so the chosen value barely
moves with the sample of calibration users, and it favours no side of the
bias-variance trade-off (the 1-SE rule on top-1 accuracy chose the most cautious
temperature within a noisy band, and pulled one-shot users toward the population).
"""

import numpy as np
from scipy.special import expit

__all__ = [
    "TEMPERATURES",
    "best_grid_value",
    "calibration_split",
    "laplace_predictive",
    "log_likelihood_scores",
    "per_user_means",
    "temperature_scores",
    "within_one_standard_error",
]

# Candidate temperatures of ``temperature="auto"``: the log-likelihood of a user's
# comparisons is divided by T. Below 1 sharpens (choices that the features explain
# exactly, as on the reward track); above 1 softens (choices that the features only
# partly explain, and the many correlated pairs that one best/worst choice yields).
TEMPERATURES = 2.0 ** np.arange(-4, 6)

# Support sizes (prompts) cycled over the calibration users: the few-shot regime,
# where the prior matters; with more prompts the temperature matters less (the
# held-out scores barely move with it) and the support costs the most to fold in.
_CALIBRATION_SUPPORT = (1, 2, 3, 5)


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


def log_likelihood_scores(probability, owner, n_users):
    """Mean log predictive probability of each user's held-out comparisons.

    Parameters
    ----------
    probability : ndarray of shape (n_comparisons, n_settings)
        Predicted probability that each held-out comparison's winner is chosen over
        its loser, at each candidate setting (a temperature, a shrinkage).
    owner : ndarray of int64, shape (n_comparisons,)
        Calibration user of each comparison.
    n_users : int

    Returns
    -------
    scores : ndarray of shape (n_scored_users, n_settings)
        For each user with held-out comparisons, their mean log probability; every
        user counts the same, whatever their number of comparisons.
    """
    return per_user_means(np.log(np.clip(probability, 1e-300, None)), owner, n_users)


def per_user_means(values, owner, n_users):
    """Mean of ``values`` (n_comparisons, n_settings) over each user's comparisons.

    Returns
    -------
    means : ndarray of shape (n_scored_users, n_settings)
        Users without comparisons are left out.
    """
    counts = np.bincount(owner, minlength=n_users)
    total = np.zeros((n_users, values.shape[1]))
    np.add.at(total, owner, values)
    scored = counts > 0
    return total[scored] / counts[scored, np.newaxis]


def best_grid_value(scores, grid=TEMPERATURES):
    """The grid value of highest mean held-out log-likelihood, refined off the grid.

    The best value of ``grid`` (``TEMPERATURES`` by default; any grid evenly
    spaced in ``log2``) is refined by the vertex of the parabola through the mean
    scores there and at its two neighbours, in ``log2`` of the value: the chosen
    value moves continuously with the calibration users rather than jumping by a
    grid step. At either end of the grid (or of the values scored) the best grid
    value is kept.

    Parameters
    ----------
    scores : ndarray of shape (n_users, n_grid)
        Per-user scores at each value of ``grid``, from
        :func:`log_likelihood_scores`; greater is better. A column of NaN is a
        value left out of the search.
    grid : ndarray of shape (n_grid,), default=TEMPERATURES

    Returns
    -------
    value : float
        1.0 when there is no calibration user.
    """
    if scores.shape[0] == 0:
        return 1.0
    mean = scores.mean(axis=0)
    best = int(np.nanargmax(mean))
    exponent = np.log2(grid[best])
    if 0 < best < mean.size - 1:
        left, middle, right = mean[best - 1 : best + 2]
        curvature = left - 2.0 * middle + right
        if curvature < 0:
            step = np.log2(grid[best + 1]) - exponent
            exponent += step * float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    return float(2.0**exponent)


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


def calibration_split(store, candidates, rng, n_users, *, n_held_out=None):
    """Support and held-out comparisons of a sample of users, for calibration.

    Each sampled user (with at least two prompts) reveals the comparisons of a few
    random prompts, 1, 2, 3 or 5 in turn (at most all but one), as a cold-start test
    user would; the comparisons of their other prompts (at most ``n_held_out`` of
    them, drawn at random) are held out.

    Parameters
    ----------
    store : UserComparisons
        With a ``"prompt"`` column.
    candidates : ndarray of int64
        Positions in ``store.users`` to sample from.
    rng : RandomState
    n_users : int
        Users to sample at most.
    n_held_out : int or None, default=None
        Held-out prompts per user at most; None holds out all the others.

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
        shuffled = rng.permutation(user_prompts)
        revealed = shuffled[:n_support]
        in_support = np.isin(prompts[rows], revealed)
        in_held_out = ~in_support
        if n_held_out is not None:
            in_held_out &= np.isin(prompts[rows], shuffled[n_support : n_support + n_held_out])
        positions.append(position)
        support.append(rows[in_support])
        held_out.append(rows[in_held_out])

    def grouped(parts):
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        owner = np.repeat(np.arange(len(parts)), [part.size for part in parts])
        return np.concatenate(parts), owner

    return np.asarray(positions, dtype=np.int64), grouped(support), grouped(held_out)


def laplace_predictive(
    vectors, owner, support_vectors, support_owner, coef, posterior, prior_precisions,
    weight, *, support_weight=None,
):
    """Posterior predictive probability of comparisons under the Laplace mixture.

    Each user's posterior is approximated per prior component ``c`` by a Gaussian
    at the component's MAP factor ``u_c`` with precision ``H_c = P_c + weight *
    sum_support s (1 - s) v v^T`` (the prior precision plus the tempered
    Bradley-Terry curvature), and the components are weighted by their posterior
    probabilities. A comparison ``v`` is then won with probability
    ``sum_c pi_c sigmoid(u_c . v / sqrt(1 + pi / 8 * v' H_c^-1 v))`` (the probit
    approximation of the logistic-Gaussian integral), which keeps the uncertainty
    of a user with few comparisons that the plug-in ``sigmoid(u . v)`` ignores.

    Parameters
    ----------
    vectors : ndarray of shape (n_comparisons, rank)
    owner : ndarray of int64, sorted
        User (group) of each comparison.
    support_vectors : ndarray of shape (n_support, rank)
    support_owner : ndarray of int64
        User of each support comparison.
    coef : ndarray of shape (n_users, n_components, rank)
        MAP factor per user and component, on the support comparisons.
    posterior : ndarray of shape (n_users, n_components)
    prior_precisions : ndarray of shape (n_components, rank, rank)
    weight : float
        ``1 / temperature``.
    support_weight : ndarray of shape (n_support,), default=None
        Weight of each support comparison in the likelihood (its curvature is
        scaled by it); None for unit weights.

    Returns
    -------
    probability : ndarray of shape (n_comparisons,)
    """
    n_users, n_components, rank = coef.shape
    support, _ = _padded(support_vectors, support_owner, n_users)
    margin = np.matmul(support[:, np.newaxis], coef[:, :, :, np.newaxis])[..., 0]
    # Padded rows are zero vectors: their curvature adds nothing.
    curvature = weight * expit(margin) * expit(-margin)  # (users, components, pad)
    if support_weight is not None:
        pair_weight, _ = _padded(support_weight[:, np.newaxis], support_owner, n_users)
        curvature = curvature * pair_weight[:, np.newaxis, :, 0]
    transposed = support.transpose(0, 2, 1)[:, np.newaxis]
    precision = np.matmul(transposed * curvature[:, :, np.newaxis], support[:, np.newaxis])
    covariance = np.linalg.inv(precision + prior_precisions)
    padded, slot = _padded(vectors, owner, n_users)
    spread = np.matmul(covariance, padded.transpose(0, 2, 1)[:, np.newaxis])
    variance = np.einsum("gcrn,gnr->gnc", spread, padded)
    mean = np.einsum("gnr,gcr->gnc", padded, coef)
    probability = expit(mean / np.sqrt(1.0 + np.pi / 8.0 * variance))
    return np.einsum("gnc,gc->gn", probability, posterior)[owner, slot]


def _padded(values, owner, n_users):
    """Rows of ``values`` grouped by their sorted ``owner``, zero-padded.

    Returns
    -------
    padded : ndarray of shape (n_users, n_pad, n_columns)
    slot : ndarray of int64
        Position of each row within its owner's block.
    """
    bounds = np.searchsorted(owner, np.arange(n_users + 1))
    slot = np.arange(owner.size) - bounds[owner]
    padded = np.zeros((n_users, int(slot.max(initial=-1)) + 1, values.shape[1]))
    padded[owner, slot] = values
    return padded, slot
