"""Each user's own comparisons, shrunk toward the population preference."""

import numbers

import numpy as np
from sklearn.utils import check_scalar

from ..base import BaseRanker
from ..utils._items import item_features
from ..utils._preferences import comparison_pairs, fit_bradley_terry_groups
from ._population import fit_population

__all__ = ["PerUserRanker"]


class PerUserRanker(BaseRanker):
    """A Bradley-Terry preference per user, from that user's comparisons only.

    First the population weights ``population_coef_`` are fitted as in
    :class:`PopulationRanker`. Then each user ``u`` with labeled rows gets

    ``coef_[u] = argmin sum_{u's pairs} log(1 + exp(-w . (x_chosen - x_rejected)))
    + shrinkage * ||w - population_coef_||^2``,

    so nothing is learned across users except the population prior. Users are solved
    all at once by batched Newton steps (see
    :func:`~pllm_sk.utils._preferences.fit_bradley_terry_groups`), whose time grows
    as ``n_pairs * n_item_features ** 2``: this suits the reward track, the ids
    track and embeddings reduced to a few dozen dimensions (10,000 users x 50
    best/worst prompts on the reward track: under half a minute).

    Item features are as in :class:`PopulationRanker`: the feature columns of ``X``,
    or a one-hot of ``response_id`` when ``X`` has none. A user without labeled rows
    in ``fit`` gets the population prediction, counted in ``fallbacks_``.

    Parameters
    ----------
    shrinkage : float, default=1.0
        Strength of the pull toward the population weights, > 0. Large values give
        the population model; small values follow each user's own comparisons.
    alpha : float, default=1.0
        L2 penalty of the population fit, as in :class:`PopulationRanker`.
    max_iter : int, default=100
        Iterations at most of each solver (L-BFGS for the population, Newton per
        user).

    Attributes
    ----------
    coef_ : ndarray of shape (n_users, n_item_features)
        Weights of the users in ``users_``, in that order.
    users_ : ndarray of int64
        Users with labeled rows in ``fit``, sorted.
    population_coef_ : ndarray of shape (n_item_features,)
        The population weights, the prior centre and the cold-user prediction.
    n_response_slots_ : int or None
        Number of one-hot encoded response slots on the ids track; None otherwise.
    n_features_in_ : int
        Number of columns of ``X`` in ``fit``, the three id columns included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.
    fallbacks_ : collections.Counter
        Rows and users predicted since ``fit`` for users without labeled rows.

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

    def __init__(self, shrinkage=1.0, alpha=1.0, max_iter=100):
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.max_iter = max_iter

    def _fit(self, ids, features, y):
        check_scalar(
            self.shrinkage,
            "shrinkage",
            target_type=numbers.Real,
            min_val=0.0,
            include_boundaries="neither",
        )
        check_scalar(self.alpha, "alpha", target_type=numbers.Real, min_val=0.0)
        check_scalar(self.max_iter, "max_iter", target_type=numbers.Integral, min_val=1)
        self.n_response_slots_ = (
            int(ids[:, 2].max()) + 1 if features.shape[1] == 0 else None
        )
        items = item_features(ids, features, self.n_response_slots_)
        self.population_coef_, _ = fit_population(
            items, ids, y, alpha=self.alpha, max_iter=self.max_iter, tol=1e-6
        )
        self.users_, user_index = np.unique(ids[:, 0], return_inverse=True)
        winners, losers = comparison_pairs(ids[:, :2], y)
        self.coef_ = fit_bradley_terry_groups(
            items[winners] - items[losers],
            user_index[winners],
            self.users_.size,
            l2=float(self.shrinkage),
            prior_mean=self.population_coef_,
            max_iter=self.max_iter,
        )

    def _predict(self, ids, features):
        position = np.minimum(
            np.searchsorted(self.users_, ids[:, 0]), self.users_.size - 1
        )
        known = self.users_[position] == ids[:, 0]
        coef = np.where(
            known[:, np.newaxis], self.coef_[position], self.population_coef_
        )
        items = item_features(ids, features, self.n_response_slots_)
        return np.einsum("nf,nf->n", items, coef)
