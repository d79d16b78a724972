"""Zero-shot reference: one Bradley-Terry preference shared by every user."""

import numbers

import numpy as np
from scipy.optimize import minimize
from sklearn.utils import check_scalar

from ..base import BaseRanker
from ..utils._items import item_features
from ..utils._preferences import bradley_terry_loss, comparison_pairs

__all__ = ["PopulationRanker"]


class PopulationRanker(BaseRanker):
    """One preference for every user, learned from all users' comparisons (zero-shot).

    Every labeled (user, prompt) gives comparison pairs: two of its rows with
    different labels, the higher-labeled one chosen. The population weight vector
    ``coef_`` is the L2-penalised Bradley-Terry (logistic) fit on the item-feature
    differences of all pairs, chosen minus rejected::

        sum_pairs log(1 + exp(-coef . (x_chosen - x_rejected))) + alpha * ||coef||^2

    Only the order of labels within a (user, prompt) is used, never their magnitude,
    so pairwise, best/worst, ranked and graded feedback all work. The predicted
    utility of a row is ``coef_ . x``, the same for every user.

    Item features are the feature columns of ``X``. When ``X`` has no feature columns
    (the ids track), the item features are a one-hot encoding of ``response_id``:
    the response slot, i.e. which LLM wrote the response, is the only thing known
    about a candidate of a prompt that no user has labeled. A slot not seen in
    ``fit`` gets utility 0.

    Parameters
    ----------
    alpha : float, default=1.0
        Strength of the L2 penalty on ``coef_``, >= 0 (0 only when the pairs are not
        separable).
    max_iter : int, default=200
        Iterations of the L-BFGS solver at most.
    tol : float, default=1e-6
        Tolerance of the solver on the gradient of the mean pair loss.

    Attributes
    ----------
    coef_ : ndarray of shape (n_item_features,)
        Population weights on the item features.
    n_response_slots_ : int or None
        Number of one-hot encoded response slots on the ids track; None when ``X``
        has feature columns.
    n_iter_ : int
        Iterations run by the solver.
    users_ : ndarray of int64
        Users with labeled rows in ``fit``; the others are counted in ``fallbacks_``
        (for this estimator every user gets the population prediction anyway).
    n_features_in_ : int
        Number of columns of ``X`` in ``fit``, the three id columns included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.
    fallbacks_ : collections.Counter
        Rows and users predicted since ``fit`` for users without labeled rows.

    See Also
    --------
    PerUserRanker : Each user's own comparisons, shrunk toward this population fit.
    OracleRanker : The users' true rewards (the ceiling).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.baselines import PopulationRanker
    >>> X = pd.DataFrame({"user_id": [0, 0, 1, 1], "prompt_id": [0, 0, 1, 1],
    ...                   "response_id": [0, 1, 0, 1], "quality": [1.0, 0.0, 0.5, 2.0]})
    >>> y = np.array([1.0, 0.0, 0.0, 1.0])
    >>> ranker = PopulationRanker().fit(X, y)
    >>> bool(ranker.coef_[0] > 0)
    True
    """

    def __init__(self, alpha=1.0, max_iter=200, tol=1e-6):
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol

    def _fit(self, ids, features, y):
        check_scalar(self.alpha, "alpha", target_type=numbers.Real, min_val=0.0)
        check_scalar(self.max_iter, "max_iter", target_type=numbers.Integral, min_val=1)
        check_scalar(self.tol, "tol", target_type=numbers.Real, min_val=0.0)
        self.n_response_slots_ = (
            int(ids[:, 2].max()) + 1 if features.shape[1] == 0 else None
        )
        items = item_features(ids, features, self.n_response_slots_)
        self.coef_, self.n_iter_ = fit_population(
            items, ids, y, alpha=self.alpha, max_iter=self.max_iter, tol=self.tol
        )
        self.users_ = np.unique(ids[:, 0])

    def _predict(self, ids, features):
        return item_features(ids, features, self.n_response_slots_) @ self.coef_


def fit_population(items, ids, y, *, alpha, max_iter, tol):
    """Population Bradley-Terry weights on all within-(user, prompt) comparisons.

    Returns
    -------
    coef : ndarray of shape (n_item_features,)
    n_iter : int
    """
    winners, losers = comparison_pairs(ids[:, :2], y)
    if winners.size == 0:
        raise ValueError(
            "y holds no comparison: no (user, prompt) has two labeled rows with "
            "different labels, and this estimator learns from within-(user, prompt) "
            "comparisons only."
        )
    differences = items[winners] - items[losers]
    n_pairs = differences.shape[0]

    # The mean pair loss keeps the solver's tolerances independent of the data size.
    def objective(coef):
        loss, gradient = bradley_terry_loss(coef, differences, l2=alpha)
        return loss / n_pairs, gradient / n_pairs

    result = minimize(
        objective,
        np.zeros(items.shape[1]),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol},
    )
    return result.x, int(result.nit)
