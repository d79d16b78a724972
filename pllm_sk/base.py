"""Base classes shared by every personalization estimator.

The public ``fit`` / ``predict`` here validate the parameters, ``X`` and ``y`` and
extract the id columns; subclasses implement the mathematics in ``_fit`` and
``_predict``.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from .core import Feedback, positions_in
from .utils import (
    Interval,
    check_feedback,
    check_id_input,
    split_ids_features,
    validate_arguments,
    validate_params,
)

__all__ = [
    "BaseRanker",
    "IncrementalRankerMixin",
    "PosteriorSamplingMixin",
    "SampleWeightMixin",
    "UserPreferenceMixin",
]


class BaseRanker(BaseEstimator):
    """Base class for estimators that predict a utility per (user, prompt, response).

    Subclasses declare ``_parameter_constraints`` (scikit-learn's declarative
    constraints, checked at the start of ``fit``) and implement
    ``_fit(feedback)``, which sees only labeled rows (a :class:`~pllm_sk.core.Feedback`), and
    ``_predict(ids, features)``, which returns one float per row and leaves the
    estimator unchanged.

    ``ids`` is an int64 array of shape (n_rows, 3) with the columns ``user_id``,
    ``prompt_id`` and ``response_id``; ``features`` is a float64 array of shape
    (n_rows, n_features), possibly with zero columns (the ids track). In ``fit``,
    float32 feature columns reach the :class:`~pllm_sk.core.Feedback` as they are
    (no full-size float64 copy, unless a family asks for ``feedback.features``).

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
        return self._fit_labeled(X, y)

    def _fit_labeled(self, X, y, sample_weight=None):
        """``fit``'s body; rows of zero ``sample_weight`` are dropped like unlabeled ones."""
        validate_params(self)
        ids, features, y = self._validate_fit_data(X, y)
        feedback = self._feedback(ids, features, y, sample_weight, "fit")
        self._fit(feedback)
        return self

    def _feedback(self, ids, features, y, sample_weight, method, n_response_slots="count"):
        """The labeled rows of positive weight as a :class:`~pllm_sk.core.Feedback`."""
        labeled = ~np.isnan(y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, labeled.size)
            if labeled.any() and not (sample_weight[labeled] > 0).any():
                raise ValueError(
                    "sample_weight is zero on every labeled row: with zero weight a row "
                    "is dropped, so there is no feedback left to learn from."
                )
            labeled &= sample_weight > 0
        if not labeled.any():
            raise ValueError(
                f"y has no labeled rows (all NaN): {method} needs some feedback to "
                "learn from."
            )
        if not labeled.all():  # no copy of a large X without unlabeled rows
            ids, features, y = ids[labeled], features[labeled], y[labeled]
            sample_weight = None if sample_weight is None else sample_weight[labeled]
        return Feedback(
            ids, features, y, sample_weight, n_response_slots=n_response_slots,
            estimator_name=type(self).__name__,
        )

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
        if not hasattr(self, "users_"):
            raise AttributeError(
                f"{type(self).__name__} sets no users_ in _fit: set it to the sorted "
                "ids of the users with labeled rows, or override _has_feedback."
            )
        return np.isin(user_ids, self.users_)

    def _validate_fit_data(self, X, y):
        # y first, as scikit-learn's validate_data does for estimators requiring y.
        if y is None:
            check_feedback(y, 0, estimator_name=type(self).__name__)
        # A ranking needs two candidates to compare.
        X = check_id_input(X, min_samples=2)
        validate_data(self, X, skip_check_array=True, reset=True)
        ids, features, _ = split_ids_features(X, dtype=[np.float64, np.float32])
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

    Subclasses implement ``_partial_fit(feedback)``, which sees only the
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
        return self._partial_fit_labeled(X, y)

    def _partial_fit_labeled(self, X, y, sample_weight=None):
        """``partial_fit``'s body; rows of zero ``sample_weight`` are dropped."""
        if not hasattr(self, self._completed_fit_attribute):
            return self._fit_labeled(X, y, sample_weight)
        if y is None:
            check_feedback(y, 0, estimator_name=type(self).__name__)
        ids, features = self._validate_predict_data(X)
        y = check_feedback(y, ids.shape[0], estimator_name=type(self).__name__)
        feedback = self._feedback(
            ids, features, y, sample_weight, "partial_fit",
            n_response_slots=getattr(self, "n_response_slots_", "count"),
        )
        self._partial_fit(feedback)
        return self


class UserPreferenceMixin:
    """``user_preference``: each user's fitted preference, one name in every family.

    The ids are validated and cold users handled here, once; a family implements
    ``_user_preference(positions)`` for users of ``users_`` (sorted distinct
    indices into it), returning an array of shape (len(positions), n_dims), and
    may override ``_cold_user_preference()`` (default: ``population_coef_``).
    What the vector is (weights on the item features, a factor, a learned
    vector) is said by each family's ``_user_preference``.
    """

    def user_preference(self, user_ids):
        """The preference of each user; the population's for users without feedback.

        Parameters
        ----------
        user_ids : array-like of int, shape (n_users,)

        Returns
        -------
        preference : ndarray of shape (n_users, n_dims)
            Row ``i`` is ``user_ids[i]``'s preference as this estimator represents
            it (see the estimator's ``_user_preference``); users without labeled
            rows in ``fit`` or ``partial_fit`` get the cold-user preference, the
            one ``predict`` uses for them.
        """
        check_is_fitted(self)
        user_ids = np.asarray(user_ids).reshape(-1)
        if user_ids.size and user_ids.dtype.kind not in "iu":
            raise TypeError(
                f"user_ids must be integers; got an array of dtype {user_ids.dtype}."
            )
        unique, inverse = np.unique(user_ids.astype(np.int64), return_inverse=True)
        positions, known = positions_in(self.users_, unique)
        preference = np.tile(self._cold_user_preference(), (unique.size, 1))
        if known.any():
            preference[known] = self._user_preference(positions[known])
        return preference[inverse.reshape(-1)]

    def _cold_user_preference(self):
        """The preference of a user without feedback, shape (n_dims,)."""
        return self.population_coef_


# ------------------------------------------------------------- continual learning


class SampleWeightMixin:
    """``fit`` with a ``sample_weight`` per row.

    For rankers whose ``_fit`` uses ``feedback.sample_weight`` (the weights of the
    labeled rows; a row of zero weight is dropped like an unlabeled one). A
    comparison's weight is the mean of its two rows' weights
    (:func:`~pllm_sk.core.pair_weights`) and multiplies its log-likelihood, so an
    integer weight counts the comparison that many times. Like every mixin, it
    comes before :class:`BaseRanker` among the bases; an incremental ranker that
    takes weights in ``partial_fit`` too says so in its own ``partial_fit``.
    """

    def fit(self, X, y, sample_weight=None):
        """Fit the estimator on the labeled rows of ``X``, each row weighted.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows of (user_id, prompt_id, response_id, features...).
        y : array-like of shape (n_rows,)
            Feedback labels; NaN marks an unlabeled row, which ``fit`` ignores.
        sample_weight : array-like of shape (n_rows,), default=None
            Non-negative weight of each row; None weighs every row 1. A comparison
            weighs the mean of its two rows' weights: 0 drops it, 2 counts it twice.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit_labeled(X, y, sample_weight)


class PosteriorSamplingMixin:
    """``sample_y``: utility draws from the posterior over each user's preference.

    As scikit-learn's ``GaussianProcessRegressor.sample_y``, but jointly over a
    user: each draw takes one value of the user's parameters from the posterior
    given the user's feedback (for a user without feedback, from the prior or the
    population) and scores every row of that user with it, so that draws of two
    candidates of one user are consistent. Subclasses implement
    ``_sample_y(ids, features, n_samples, rng)``, which, like ``_predict``, leaves
    the estimator unchanged.
    """

    _sample_y_constraints = {
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def sample_y(self, X, n_samples=1, random_state=None):
        """Draw utilities of each row from the posterior of its user's preference.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows as given to ``predict``.
        n_samples : int, default=1
            Draws per row, >= 1.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; an int gives the same draws at every call.

        Returns
        -------
        y_samples : ndarray of shape (n_rows, n_samples)
            Column ``s`` holds the utilities of every row under draw ``s`` of the
            row's user; the draws' mean estimates ``predict(X)``.
        """
        check_is_fitted(self)
        validate_arguments(
            self._sample_y_constraints,
            {"n_samples": n_samples, "random_state": random_state},
            f"{type(self).__name__}.sample_y",
        )
        ids, features = self._validate_predict_data(X)
        rng = check_random_state(random_state)
        draws = self._sample_y(ids, features, int(n_samples), rng)
        return np.asarray(draws, dtype=np.float64).reshape(ids.shape[0], n_samples)


def _check_sample_weight(sample_weight, n_rows):
    """``sample_weight`` as a float64 array of ``n_rows`` finite non-negative values."""
    sample_weight = np.asarray(sample_weight)
    if sample_weight.dtype.kind not in "biuf":
        raise TypeError(
            f"sample_weight must hold numbers; got dtype {sample_weight.dtype}."
        )
    sample_weight = sample_weight.astype(np.float64)
    if sample_weight.ndim != 1:
        raise ValueError(
            "sample_weight must be 1-d, one weight per row of X; got shape "
            f"{sample_weight.shape}."
        )
    if sample_weight.shape[0] != n_rows:
        raise ValueError(
            f"sample_weight has {sample_weight.shape[0]} weights for {n_rows} rows of X."
        )
    bad = ~np.isfinite(sample_weight) | (sample_weight < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            "sample_weight must be finite and non-negative; got "
            f"{sample_weight[row]!r} at row {row}."
        )
    return sample_weight
