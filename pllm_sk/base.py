"""Base classes shared by every personalization estimator.

The public ``fit`` / ``predict`` here validate the parameters, ``X`` and ``y`` and
extract the id columns; subclasses implement the mathematics in ``_fit`` and
``_predict``.
"""

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from .utils._param_validation import validate_params
from .utils._validation import (
    check_feedback,
    check_id_input,
    split_ids_features,
)

__all__ = ["BaseRanker", "IncrementalRankerMixin"]


class BaseRanker(BaseEstimator):
    """Base class for estimators that predict a utility per (user, prompt, response).

    Subclasses declare ``_parameter_constraints`` (scikit-learn's declarative
    constraints, checked at the start of ``fit``) and implement
    ``_fit(ids, features, y)``, which sees only labeled rows, and
    ``_predict(ids, features)``, which returns one float per row and leaves the
    estimator unchanged.

    ``ids`` is an int64 array of shape (n_rows, 3) with the columns ``user_id``,
    ``prompt_id`` and ``response_id``; ``features`` is a float64 array of shape
    (n_rows, n_features), possibly with zero columns (the ids track).

    A user without labeled rows in ``fit`` (or ``partial_fit``) gets the population
    prediction; :meth:`count_fallbacks` says how many rows and users of an ``X``
    that is. Subclasses set ``users_``, the users with labeled rows, or override
    ``_has_feedback``.

    Fitted attributes set here
    --------------------------
    n_features_in_ : int
        Number of columns of ``X`` in ``fit``, the three id columns included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.
    """

    _parameter_constraints: dict = {}

    def fit(self, X, y):
        """Fit the estimator on the labeled rows of ``X``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows of (user_id, prompt_id, response_id, features...).
        y : array-like of shape (n_rows,)
            Feedback labels; larger is better within a (user, prompt). NaN marks an
            unlabeled row, which ``fit`` ignores.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        validate_params(self)
        ids, features, y = self._validate_fit_data(X, y)
        labeled = ~np.isnan(y)
        if not labeled.any():
            raise ValueError(
                "y has no labeled rows (all NaN): fit needs some feedback to learn from."
            )
        if labeled.all():
            self._fit(ids, features, y)
        else:
            self._fit(ids[labeled], features[labeled], y[labeled])
        return self

    def predict(self, X):
        """Predict the utility of each candidate row for its user.

        Only the order within a (user, prompt) is meaningful. Users with no labeled
        rows in ``fit`` get the population prediction (see :meth:`count_fallbacks`).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows of (user_id, prompt_id, response_id, features...), with the same
            feature columns as in ``fit``.

        Returns
        -------
        utility : ndarray of shape (n_rows,)
        """
        check_is_fitted(self)
        ids, features = self._validate_predict_data(X)
        return np.asarray(self._predict(ids, features), dtype=np.float64)

    def count_fallbacks(self, X):
        """Rows and users of ``X`` that :meth:`predict` gives the population prediction.

        A user falls back when the estimator holds no labeled row of theirs (from
        ``fit`` or ``partial_fit``). Counting is separate from ``predict``, which
        leaves the estimator unchanged, so the count of a fold is the same however
        many scorers predict on it.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows as given to :meth:`predict`.

        Returns
        -------
        counts : dict
            ``{"rows": int, "users": int}``.
        """
        check_is_fitted(self)
        ids, _ = self._validate_predict_data(X)
        cold = ~self._has_feedback(ids[:, 0])
        return {"rows": int(cold.sum()), "users": int(np.unique(ids[cold, 0]).size)}

    def _has_feedback(self, user_ids):
        """Whether each user has labeled rows in the fitted estimator."""
        return np.isin(user_ids, self.users_)

    def _validate_fit_data(self, X, y):
        # y first, as scikit-learn's validate_data does for estimators requiring y.
        if y is None:
            check_feedback(y, 0, estimator_name=type(self).__name__)
        # A ranking needs two candidates to compare.
        X = check_id_input(X, min_samples=2)
        validate_data(self, X, skip_check_array=True, reset=True)
        ids, features, _ = split_ids_features(X)
        y = check_feedback(y, ids.shape[0], estimator_name=type(self).__name__)
        return ids, features, y

    def _validate_predict_data(self, X):
        # The width is compared with fit's (at least the 3 ids) first, as in sklearn.
        X = check_id_input(X, min_features=1)
        validate_data(self, X, skip_check_array=True, reset=False)
        ids, features, _ = split_ids_features(X)
        return ids, features

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # The id columns are categorical (integer codes); scikit-learn's checks then
        # build X of non-negative integers, which is what the ids must be.
        tags.input_tags.categorical = True
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        return tags


class IncrementalRankerMixin:
    """``partial_fit`` for rankers that add users without refitting the population.

    Subclasses implement ``_partial_fit(ids, features, y)``, which sees only the
    labeled rows of the call, checked against ``fit``; its docstring says what stays
    fixed. ``_completed_fit_attribute`` names a fitted attribute that ``fit`` sets
    only once it has completed.
    """

    _completed_fit_attribute = "users_"

    def partial_fit(self, X, y):
        """Add the feedback of new or returning users; the population part stays fixed.

        Only the users in ``X`` change: their predictions update and no other
        user's do. On an unfitted estimator this is ``fit``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows of (user_id, prompt_id, response_id, features...), with the same
            feature columns as in ``fit``.
        y : array-like of shape (n_rows,)
            Feedback labels; NaN marks an unlabeled row, which is ignored.

        Returns
        -------
        self : object
        """
        if not hasattr(self, self._completed_fit_attribute):
            return self.fit(X, y)
        if y is None:
            check_feedback(y, 0, estimator_name=type(self).__name__)
        ids, features = self._validate_predict_data(X)
        y = check_feedback(y, ids.shape[0], estimator_name=type(self).__name__)
        labeled = ~np.isnan(y)
        if not labeled.any():
            raise ValueError(
                "y has no labeled rows (all NaN): partial_fit needs some feedback to add."
            )
        self._partial_fit(ids[labeled], features[labeled], y[labeled])
        return self
