"""Each user's own comparisons, shrunk toward the population preference."""

import numbers

import numpy as np

from ..base import BaseRanker
from ..utils._bradley_terry import fit_bradley_terry
from ..utils._comparisons import (
    comparisons,
    pooled_differences,
    positions_in,
    require_comparisons,
)
from ..utils._docstrings import fill_docstring
from ..utils._items import count_response_slots, item_features
from ..utils._param_validation import Interval

__all__ = ["PerUserRanker"]


@fill_docstring
class PerUserRanker(BaseRanker):
    """A Bradley-Terry preference per user, from that user's comparisons only.

    First the population weights ``population_coef_`` are fitted as in
    :class:`PopulationRanker`. Then each user ``u`` with labeled rows gets

    ``coef_[u] = argmin sum_{u's pairs} log(1 + exp(-w . (x_chosen - x_rejected)))
    + shrinkage * ||w - population_coef_||^2``,

    so nothing is learned across users except the population prior. Users are solved
    all at once by batched Newton steps (see
    :func:`~pllm_sk.utils._bradley_terry.fit_bradley_terry`), whose time grows
    as ``n_pairs * n_item_features ** 2``: this suits the reward track, the ids
    track and embeddings reduced to a few dozen dimensions (10,000 users x 50
    best/worst prompts on the reward track: under half a minute).

    Item features are as in :class:`PopulationRanker`: the feature columns of ``X``,
    or a one-hot of ``response_id`` when ``X`` has none. A user without labeled rows
    in ``fit`` gets the population prediction.

    Parameters
    ----------
    shrinkage : float, default=1.0
        Strength of the pull toward the population weights, > 0. Large values give
        the population model; small values follow each user's own comparisons.
    alpha : float, default=1.0
        L2 penalty of the population fit, > 0, as in :class:`PopulationRanker`.
    max_iter : int, default=100
        Newton steps at most, for the population and for each user.

    Attributes
    ----------
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
        "shrinkage": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(self, shrinkage=1.0, *, alpha=1.0, max_iter=100):
        self.shrinkage = shrinkage
        self.alpha = alpha
        self.max_iter = max_iter

    def _fit(self, ids, features, y):
        self.n_response_slots_ = count_response_slots(ids, features)
        items = item_features(ids, features, self.n_response_slots_)
        structure = comparisons(ids, y)
        require_comparisons(structure, type(self).__name__)
        pooled, counts = pooled_differences(ids, items, structure)
        self.population_coef_ = fit_bradley_terry(
            pooled, l2=float(self.alpha), sample_weight=counts, max_iter=self.max_iter
        )
        differences = items[structure.winners] - items[structure.losers]
        self.users_ = structure.users
        self.coef_ = fit_bradley_terry(
            differences,
            structure.group_user[structure.group_of_row[structure.winners]],
            self.users_.size,
            l2=float(self.shrinkage),
            prior_mean=self.population_coef_,
            max_iter=self.max_iter,
        )

    def _predict(self, ids, features):
        position, known = positions_in(self.users_, ids[:, 0])
        coef = np.where(
            known[:, np.newaxis], self.coef_[position], self.population_coef_
        )
        items = item_features(ids, features, self.n_response_slots_)
        return np.einsum("nf,nf->n", items, coef)
