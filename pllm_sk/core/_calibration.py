"""Choosing a setting on held-out cold users: one routine, its split, its rules.

A family that learns across users has a setting that only held-out users can
choose: how far a new user's few comparisons move them from the population (a
shrinkage, a likelihood temperature, a number of prior components, a share of
imputed labels). :func:`calibration_split` makes the held-out users: sampled
historical users reveal a few of their prompts, as a cold-start test user would,
and their other prompts are held out. The family writes a pure ``score(setting)``
that fits the revealed comparisons at ``setting`` and returns one score per
held-out user (greater is better); :func:`calibrate` scores the grid and returns a
:class:`CalibrationResult` (the choice and its table, as scikit-learn's
``RidgeCV`` and ``LogisticRegressionCV`` do), which the estimator assigns once.

Scores. The mean log predictive probability of the held-out comparisons
(:func:`log_likelihood_scores`) is a proper scoring rule, smooth in the setting,
so the choice barely moves with the sample of users; the share of held-out
choices ordered right (:func:`top_choice_accuracy`, :func:`per_user_means`) is a
step function of the setting, for a family whose predictive probability is
poor (each family's docstring says which it uses). Every user counts the same,
whatever their number of comparisons.

Rules (``rule=`` of :func:`calibrate`):

- ``"log2_parabola"`` (:func:`best_grid_value`), for a continuous setting on a grid
  evenly spaced in ``log2``: the grid value of best mean score, moved to the vertex
  of the parabola through the mean scores there and at its two neighbours, in
  ``log2`` of the value (by half a step at most; at an end of the grid, or where
  the mean is not concave, the grid value is kept). The choice moves continuously
  with the held-out users instead of jumping by a grid step.
- ``"argmax"``, for a discrete setting: the grid value of best mean score (the
  first on ties).
- ``"one_standard_error"``, for a discrete setting whose grid is sorted from the
  most cautious value: the first value whose mean score is within one standard
  error (of the paired per-user difference) of the best one's
  (:func:`within_one_standard_error`). It prefers the cautious value whenever the
  held-out users cannot tell it from the best: suited to a step-function score,
  whose best value is a noisy pick among near-ties; unsuited to a smooth proper
  score, whose best value is already stable.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import expit

__all__ = [
    "CALIBRATION_USERS",
    "HELD_OUT_PROMPTS",
    "TEMPERATURES",
    "CalibrationResult",
    "best_grid_value",
    "calibrate",
    "calibration_split",
    "laplace_predictive",
    "log_likelihood_scores",
    "per_user_means",
    "top_choice_accuracy",
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
# Users sampled by calibration_split at most, and held-out prompts per user at most.
CALIBRATION_USERS = 200
HELD_OUT_PROMPTS = 10

_RULES = ("log2_parabola", "argmax", "one_standard_error")


class CalibrationResult(NamedTuple):
    """The setting chosen by :func:`calibrate` and the table it was chosen from.

    Attributes
    ----------
    best : float
        The chosen setting: a grid value, or (``"log2_parabola"``) a value refined
        between grid values.
    index : int
        Index in ``grid`` of the grid value the rule chose (for
        ``"log2_parabola"``, the one it refined).
    table : ndarray of shape (n_users, n_grid)
        Per-user held-out scores of each setting, greater is better; NaN in the
        columns of settings not scored.
    grid : ndarray of shape (n_grid,)
    """

    best: float
    index: int
    table: np.ndarray
    grid: np.ndarray


def calibrate(
    score, grid, *, rule="log2_parabola", order=None, table=None, climb_from=None,
    vectorized=False, warm_start=False,
):
    """Score candidate settings on held-out users and choose one by ``rule``.

    The settings of ``order`` are scored first, in that order; then, with
    ``climb_from``, the search climbs the grid: from that index it scores the
    two neighbours of the current index (those not scored yet) and moves to the
    better one while it scores better than the current one (mean over users,
    ties to the lower index). Finally ``rule`` chooses among the scored settings
    (the rules are stated in the module's docstring). ``calibrate`` writes
    nothing but the table it returns, and ``score`` should leave the estimator
    unchanged: the estimator assigns the result once.

    Parameters
    ----------
    score : callable
        ``score(setting)`` returns the per-user held-out scores of one setting,
        shape (n_users,) or (n_users, 1), every call the same users in the same
        order. With ``vectorized=True``, ``score(settings)`` gets the array of
        settings of ``order`` and returns shape (n_users, len(settings)). With
        ``warm_start=True``, ``score(setting, previous)``, ``previous`` being the
        setting the search moves from (the one scored just before in ``order``,
        the current index while climbing; None for the first), whose solution
        can start the solver.
    grid : ndarray of shape (n_grid,)
        Candidate settings; evenly spaced in ``log2`` for ``"log2_parabola"``.
    rule : {"log2_parabola", "argmax", "one_standard_error"}, default="log2_parabola"
    order : array-like of int, default=None
        Grid indices to score, in this order; None scores the whole grid unless
        ``table`` or ``climb_from`` is given (then none).
    table : ndarray of shape (n_users, n_grid), default=None
        Scores of an earlier search to continue (NaN where not scored); copied.
    climb_from : int, default=None
        Grid index where the climb starts (scored first if it is not).
    vectorized, warm_start : bool, default=False
        How ``score`` is called (see ``score``).

    Returns
    -------
    result : CalibrationResult
        With no held-out user, ``best`` is 1.0 under ``"log2_parabola"`` and the
        first scored grid value otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.core import calibrate
    >>> held_out = np.array([[0.0], [1.0], [2.0]])
    >>> def score(setting):  # three users; the best setting is 2 for all
    ...     return -((np.log2(setting) - 1.0) ** 2) + held_out[:, 0]
    >>> result = calibrate(score, 2.0 ** np.arange(-2, 4))
    >>> result.best, result.index, result.table.shape
    (2.0, 3, (3, 6))
    """
    if rule not in _RULES:
        raise ValueError(f"rule must be one of {_RULES}; got {rule!r}.")
    grid = np.asarray(grid, dtype=np.float64)
    search = _Search(score, grid, table, vectorized, warm_start)
    if order is None:
        order = [] if table is not None or climb_from is not None else range(grid.size)
    search.sweep(np.asarray(order, dtype=np.int64))
    if climb_from is not None:
        search.climb(int(climb_from))
    return search.result(rule)


class _Search:
    """The table of one :func:`calibrate` call and the columns scored so far."""

    def __init__(self, score, grid, table, vectorized, warm_start):
        self.score, self.grid = score, grid
        self.vectorized, self.warm_start = vectorized, warm_start
        self.table = None if table is None else np.array(table, dtype=np.float64)
        self.scored = np.zeros(grid.size, dtype=bool)
        if self.table is not None and self.table.shape[0]:
            self.scored = ~np.isnan(self.table).all(axis=0)

    def sweep(self, order):
        """Score the settings at ``order``, in that order."""
        if order.size == 0:
            return
        if self.vectorized:
            self._store(order, self.score(self.grid[order]))
            return
        previous = None
        for index in order:
            self.score_at(index, previous)
            previous = index

    def score_at(self, index, previous):
        setting = self.grid[index]
        if self.warm_start:
            scores = self.score(setting, None if previous is None else self.grid[previous])
        else:
            scores = self.score(setting)
        self._store(np.array([index]), scores)

    def _store(self, indices, scores):
        scores = np.asarray(scores, dtype=np.float64).reshape(-1, indices.size)
        if self.table is None:
            self.table = np.full((scores.shape[0], self.grid.size), np.nan)
        self.table[:, indices] = scores
        self.scored[indices] = True

    def climb(self, at):
        if not self.scored[at]:
            self.score_at(at, None)
        while True:
            around = [i for i in (at - 1, at + 1) if 0 <= i < self.grid.size]
            if not around:
                return
            for index in around:
                if not self.scored[index]:
                    self.score_at(index, at)
            step = max(around, key=lambda i: self.table[:, i].mean())
            if self.table[:, step].mean() <= self.table[:, at].mean():
                return
            at = step

    def result(self, rule):
        table = self.table if self.table is not None else np.empty((0, self.grid.size))
        columns = np.flatnonzero(self.scored)
        if table.shape[0] == 0 or columns.size == 0:
            # No held-out user: nothing to choose from.
            index = int(columns[0]) if columns.size else 0
            best = 1.0 if rule == "log2_parabola" else float(self.grid[index])
            return CalibrationResult(best, index, table, self.grid)
        if rule == "one_standard_error":
            index = columns[int(within_one_standard_error(table[:, columns]).min())]
        else:
            index = columns[int(np.argmax(table[:, columns].mean(axis=0)))]
        best = float(self.grid[index])
        if rule == "log2_parabola":
            best = best_grid_value(table, self.grid)
        return CalibrationResult(best, int(index), table, self.grid)


def top_choice_accuracy(margins, prompts, owner, n_users):
    """Held-out top-1 accuracy of each user at each candidate setting.

    Parameters
    ----------
    margins : ndarray of shape (n_comparisons, n_settings)
        Predicted utility of the winner minus the loser, for the held-out
        comparisons whose winner is their prompt's top choice.
    prompts, owner : ndarray of int64, shape (n_comparisons,)
        Prompt id and calibration user of each comparison.
    n_users : int

    Returns
    -------
    scores : ndarray of shape (n_scored_users, n_settings)
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
    """The grid value of best mean score, refined off the grid: the ``"log2_parabola"`` rule.

    See the module docstring for the rule.

    Parameters
    ----------
    scores : ndarray of shape (n_users, n_grid)
        Per-user scores at each value of ``grid``; greater is better. A column
        of NaN is a value left out of the search.
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

    The ``"one_standard_error"`` rule (see the module docstring) takes the first.

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


def calibration_split(
    store, candidates, rng, n_users=CALIBRATION_USERS, *, n_held_out=HELD_OUT_PROMPTS
):
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
    n_users : int, default=CALIBRATION_USERS
        Users to sample at most.
    n_held_out : int or None, default=HELD_OUT_PROMPTS
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
