"""Zero-shot reference: one Bradley-Terry preference shared by every user."""

import numbers

from ..base import BaseRanker
from ..core import fit_population, item_features
from ..utils import Interval, fill_docstring

__all__ = ["PopulationRanker"]


@fill_docstring
class PopulationRanker(BaseRanker):
    """One preference for every user, learned from all users' comparisons (zero-shot).

    Every labeled (user, prompt) gives comparison pairs: two of its rows with
    different labels, the higher-labeled one chosen. The population weight vector
    ``population_coef_`` is the L2-penalised Bradley-Terry (logistic) fit on the
    item-feature differences of all pairs, chosen minus rejected::

        sum_pairs log(1 + exp(-w . (x_chosen - x_rejected))) + alpha * ||w||^2

    solved by Newton's method (see
    :func:`~pllm_sk.core._bradley_terry.fit_bradley_terry`). Only the order of
    labels within a (user, prompt) is used, never their magnitude, so pairwise,
    best/worst, ranked and graded feedback all work. The predicted utility of a row
    is ``population_coef_ . x``, the same for every user.

    Item features are the feature columns of ``X``. When ``X`` has no feature columns
    (the ids track), the item features are a one-hot encoding of ``response_id``:
    the response slot, i.e. which LLM wrote the response, is the only thing known
    about a candidate of a prompt that no user has labeled. A slot not seen in
    ``fit`` is an error in ``predict``.

    Parameters
    ----------
    alpha : float, default=1.0
        Strength of the L2 penalty, > 0 (it makes the problem strictly convex, also
        on the ids track, whose one-hot differences sum to zero).
    max_iter : int, default=50
        Newton steps at most.
    tol : float, default=1e-10
        Stop when half the Newton decrement is below ``tol * (1 + loss)``.

    Attributes
    ----------
    population_coef_ : ndarray of shape (n_item_features,)
        Population weights on the item features: every user's prediction.
    n_iter_ : int
        Newton steps run.
    {n_response_slots_attribute}
    {users_attribute}
    {input_attributes}

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
    >>> bool(ranker.population_coef_[0] > 0)
    True
    """

    _parameter_constraints = {
        "alpha": [Interval(numbers.Real, 0, None, closed="neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, alpha=1.0, *, max_iter=50, tol=1e-10):
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol

    def _fit(self, feedback):
        self.n_response_slots_ = feedback.n_response_slots
        self.population_coef_, self.n_iter_ = fit_population(
            feedback, self.alpha, self.max_iter, tol=self.tol, return_n_iter=True
        )
        self.users_ = feedback.comparisons().users

    def _predict(self, ids, features):
        items = item_features(ids, features, self.n_response_slots_)
        return items @ self.population_coef_

