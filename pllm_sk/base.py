"""Base class shared by every personalization estimator.

The public ``fit`` / ``predict`` here validate ``X`` and ``y`` and extract the id
columns; subclasses implement the mathematics in ``_fit`` and ``_predict``.
"""

from collections import Counter

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from .utils._validation import check_feedback, check_id_input, split_ids_features

__all__ = ["BaseRanker", "IncrementalRankerMixin"]


class BaseRanker(BaseEstimator):
    """Base class for estimators that predict a utility per (user, prompt, response).

    Subclasses implement ``_fit(ids, features, y)``, which sees only labeled rows,
    and ``_predict(ids, features)``, which returns one float per row.

    ``ids`` is an int64 array of shape (n_rows, 3) with the columns ``user_id``,
    ``prompt_id`` and ``response_id``; ``features`` is a float64 array of shape
    (n_rows, n_features), possibly with zero columns (the ids track).

    Fitted attributes set here
    --------------------------
    n_features_in_ : int
        Number of columns of ``X`` in ``fit``, the three id columns included.
    feature_names_in_ : ndarray of str
        Column names of ``X`` in ``fit``, when it was a DataFrame.
    fallbacks_ : collections.Counter
        Running tally since the last ``fit`` of the predictions that fell back to the
        population because the user had no labeled rows in ``fit``: ``"rows"`` and
        ``"users"``, summed over ``predict`` calls (the tally is the only state that
        ``predict`` touches).
    """

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
        ids, features, y = self._validate_fit_data(X, y)
        labeled = ~np.isnan(y)
        if not labeled.any():
            raise ValueError(
                "y has no labeled rows (all NaN): fit needs some feedback to learn from."
            )
        self.fallbacks_ = Counter(rows=0, users=0)
        self._fit(ids[labeled], features[labeled], y[labeled])
        return self

    def predict(self, X):
        """Predict the utility of each candidate row for its user.

        Only the order within a (user, prompt) is meaningful. Users with no labeled
        rows in ``fit`` get the population prediction.

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

    def _validate_fit_data(self, X, y):
        X = check_id_input(X)
        ids, features, _ = split_ids_features(X)
        validate_data(self, X, skip_check_array=True, reset=True)
        y = check_feedback(y, ids.shape[0])
        return ids, features, y

    def _validate_predict_data(self, X):
        X = check_id_input(X)
        ids, features, _ = split_ids_features(X)
        validate_data(self, X, skip_check_array=True, reset=False)
        return ids, features

    def _record_fallbacks(self, user_ids, is_cold):
        """Add the rows and distinct users predicted from the population to the tally."""
        if is_cold.any():
            self.fallbacks_["rows"] += int(is_cold.sum())
            self.fallbacks_["users"] += int(np.unique(user_ids[is_cold]).size)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
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
        ids, features = self._validate_predict_data(X)
        y = check_feedback(y, ids.shape[0])
        labeled = ~np.isnan(y)
        if not labeled.any():
            raise ValueError(
                "y has no labeled rows (all NaN): partial_fit needs some feedback to add."
            )
        self._partial_fit(ids[labeled], features[labeled], y[labeled])
        return self
