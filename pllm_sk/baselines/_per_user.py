"""Each user's own comparisons, shrunk toward the population preference."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

from ..base import BaseRanker
from ..core import (
    UserComparisons,
    best_grid_value,
    calibration_split,
    fit_bradley_terry,
    fit_population,
    item_features,
    pair_differences,
    per_user_means,
    positions_in,
)
from ..utils import Interval, StrOptions, fill_docstring

__all__ = ["PerUserRanker"]

# Candidate values of shrinkage="auto", evenly spaced in log2.
SHRINKAGES = 2.0 ** np.arange(-6, 6)
# Users sampled for shrinkage="auto", and held-out prompts per user at most.
_CALIBRATION_USERS = 200
_HELD_OUT_PROMPTS = 10


@fill_docstring
class PerUserRanker(BaseRanker):
    """A Bradley-Terry preference per user, from that user's comparisons only.

    First the population weights ``population_coef_`` are fitted as in
    :class:`PopulationRanker`. Then each user ``u`` with labeled rows gets

    ``coef_[u] = argmin sum_{u's pairs} log(1 + exp(-w . (x_chosen - x_rejected)))
    + shrinkage * ||w - population_coef_||^2``,

    so nothing is learned across users except the population prior. Users are solved
    all at once by batched Newton steps (see
    :func:`~pllm_sk.core._bradley_terry.fit_bradley_terry`), whose time grows
    as ``n_pairs * n_item_features ** 2``: this suits the reward track, the ids
    track and embeddings reduced to a few dozen dimensions (10,000 users x 50
    best/worst prompts on the reward track: under half a minute).

    Item features are as in :class:`PopulationRanker`: the feature columns of ``X``,
    or a one-hot of ``response_id`` when ``X`` has none. A user without labeled rows
    in ``fit`` gets the population prediction.

    Shrinkage. The penalty is a Gaussian prior ``N(population_coef_, I / (2 *
    shrinkage))`` on each user's weights. ``shrinkage="auto"`` chooses it from the
    training users, as a cold-start test user would meet it: up to 200 sampled
    users reveal 1, 2, 3 or 5 of their prompts, are fitted on those alone at each
    of ``SHRINKAGES``, and their held-out comparisons whose winner is the prompt's
    top choice are scored by the share that the fitted weights order right. The
    best value is refined between its grid neighbours in ``log2``. Choices that
    the features explain exactly let a few comparisons move a user far (a small
    shrinkage); noisy choices keep users near the population (a large one). The
    marginal likelihood of the users' own comparisons would not do: with choices
    that the features separate it grows without bound as the shrinkage goes to 0.
    Nor the held-out log-likelihood that the neighbour and low-rank rankers use:
    a single Gaussian describes the population's preferences poorly, and the
    log-likelihood asked for about twice the shrinkage that ranks best (4.3
    against 1.8 on Bradley-Terry feedback in the low-rank world of
    ``benchmarks/robustness.py``: 0.67 against 0.96 of the Bayes limit's gap
    closed at one prompt).

    Parameters
    ----------
    shrinkage : "auto" or float, default="auto"
        Strength of the pull toward the population weights, > 0. Large values give
        the population model; small values follow each user's own comparisons.
        ``"auto"`` chooses it (see above).
    alpha : float, default=1.0
        L2 penalty of the population fit, > 0, as in :class:`PopulationRanker`.
    max_iter : int, default=100
        Newton steps at most, for the population and for each user.
    random_state : int, RandomState instance or None, default=None
        Draws the users and prompts of ``shrinkage="auto"``.

    Attributes
    ----------
    shrinkage_ : float
        The shrinkage used: ``shrinkage``, or the one chosen with ``"auto"``.
    coef_ : ndarray of shape (n_users, n_item_features)
        Weights of the users in ``users_``, in that order.
    {users_attribute}
    population_coef_ : ndarray of shape (n_item_features,)
        The population weights, the prior centre and the cold-user prediction.
    {n_response_slots_attribute}
    {input_attributes}

    See Also
    --------
    PopulationRanker : The shared preference this estimator shrinks toward.
    BayesRanker : The Bayes-optimal per-user estimate on the reward track.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.baselines import PerUserRanker
    >>> X = pd.DataFrame({"user_id": [0, 0, 1, 1], "prompt_id": [0, 0, 0, 0],
    ...                   "response_id": [0, 1, 0, 1], "a": [1.0, 0.0, 1.0, 0.0]})
    >>> y = np.array([1.0, 0.0, 0.0, 1.0])
    >>> ranker = PerUserRanker(shrinkage=0.1).fit(X, y)
    >>> utility = ranker.predict(X)
    >>> bool(utility[0] > utility[1]), bool(utility[2] < utility[3])
    (True, True)
    """

    _parameter_constraints = {
        "shrinkage": [
            StrOptions({"auto"}),
            Interval(numbers.Real, 0, None, closed="neither"),
        ],
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, shrinkage="auto", *, alpha=1.0, max_iter=100, random_state=None):
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, feedback):
        self.n_response_slots_ = feedback.n_response_slots
        self.population_coef_ = fit_population(feedback, self.alpha, self.max_iter)
        structure = feedback.comparisons()
        differences = pair_differences(
            feedback.items, structure.winners, structure.losers, np.float64
        )
        self.users_ = structure.users
        self.shrinkage_ = self._calibrate_shrinkage(feedback.ids, structure, differences)
        self.coef_ = fit_bradley_terry(
            differences,
            structure.group_user[structure.group_of_row[structure.winners]],
            self.users_.size,
            l2=self.shrinkage_,
            prior_mean=self.population_coef_,
            max_iter=self.max_iter,
        )

    def _calibrate_shrinkage(self, ids, structure, differences):
        """``shrinkage``, or the best held-out score of ``SHRINKAGES`` (see above)."""
        if self.shrinkage != "auto":
            return float(self.shrinkage)
        store = UserComparisons.from_comparisons(ids, structure, difference=differences)
        positions, support, held_out = calibration_split(
            store,
            np.arange(store.users.size),
            check_random_state(self.random_state),
            _CALIBRATION_USERS,
            n_held_out=_HELD_OUT_PROMPTS,
        )
        rows, owner = held_out
        is_top = store.columns["top"][rows]
        rows, owner = rows[is_top], owner[is_top]
        if rows.size == 0:
            return 1.0
        support_differences = store.columns["difference"][support[0]]
        held_out_differences = store.columns["difference"][rows]
        columns = []
        for shrinkage in SHRINKAGES:
            coef = fit_bradley_terry(
                support_differences,
                support[1],
                positions.size,
                l2=shrinkage,
                prior_mean=self.population_coef_,
                max_iter=self.max_iter,
            )
            margin = np.einsum("nf,nf->n", held_out_differences, coef[owner])
            # A tie (no comparison moved the user) counts half.
            columns.append(
                per_user_means(
                    ((margin > 0) + 0.5 * (margin == 0))[:, np.newaxis],
                    owner,
                    positions.size,
                )
            )
        return best_grid_value(np.hstack(columns), SHRINKAGES)

    def _predict(self, ids, features):
        position, known = positions_in(self.users_, ids[:, 0])
        coef = np.where(
            known[:, np.newaxis], self.coef_[position], self.population_coef_
        )
        items = item_features(ids, features, self.n_response_slots_)
        return np.einsum("nf,nf->n", items, coef)
