"""The labeled rows of one ``fit`` or ``partial_fit`` call, prepared once for a family."""

from functools import cached_property

import numpy as np

from ._bradley_terry import fit_bradley_terry
from ._comparisons import (
    comparisons,
    pair_weights,
    pooled_differences,
    require_comparisons,
)
from ._items import count_response_slots, item_features

__all__ = ["Feedback", "fit_population"]


class Feedback:
    """What every family's ``_fit`` and ``_partial_fit`` receive: one object.

    :class:`~pllm_sk.base.BaseRanker` builds it from the labeled rows of ``X``
    (rows of zero ``sample_weight`` dropped like unlabeled ones); each derived
    array is computed on first use and kept, so that a family asks for what it
    needs and nothing is computed twice.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
        ``user_id``, ``prompt_id``, ``response_id`` of the labeled rows.
    features : ndarray of float64 or float32, shape (n_rows, n_features)
        Their feature columns, possibly none (the ids track). float32 columns
        (what feature steps append) are kept as given, and widened to float64
        on first use of :attr:`features` or :attr:`items`.
    y : ndarray of float64, shape (n_rows,)
        Their labels, none NaN.
    sample_weight : ndarray of float64, shape (n_rows,), default=None
        Their positive weights; None when ``fit`` was given none.
    n_response_slots : int, None or "count", default="count"
        One-hot response slots of the ids track (None with feature columns):
        ``"count"`` counts them from ``ids`` (in ``fit``); ``partial_fit`` passes
        the fitted estimator's.
    estimator_name : str, default="the estimator"
        Named in errors.

    Attributes
    ----------
    ids, y, sample_weight : ndarray or None
        As given.
    n_response_slots : int or None
    features : ndarray of float64, shape (n_rows, n_features)
        The feature columns.
    items : ndarray of float64, shape (n_rows, n_item_features)
        The item features of each row (see :func:`item_features`).
    compact_items : ndarray of shape (n_rows, n_item_features)
        ``items`` in the dtype of the given features: float32 feature columns
        stay float32, half the memory and no full-size copy (320 MB of float64 at
        PersonalLLM's full size). For the computations that widen what they read
        to float64 (:func:`pair_differences` in float64, :class:`PairDifferences`,
        :func:`pooled_differences`, products with float64 weights), it gives
        exactly the results of ``items``.
    pair_weight : ndarray of shape (n_comparisons,) or None
        Weight of each comparison of :meth:`comparisons` (see :func:`pair_weights`).
    """

    def __init__(
        self, ids, features, y, sample_weight=None, *, n_response_slots="count",
        estimator_name="the estimator",
    ):
        self.ids = ids
        self._features = features
        self.y = y
        self.sample_weight = sample_weight
        self.estimator_name = estimator_name
        self._given_slots = n_response_slots
        self._comparisons = {}

    @cached_property
    def n_response_slots(self):
        if isinstance(self._given_slots, str):  # "count"
            return count_response_slots(self.ids, self._features)
        return self._given_slots

    @cached_property
    def features(self):
        return np.asarray(self._features, dtype=np.float64)

    @cached_property
    def items(self):
        return item_features(self.ids, self.features, self.n_response_slots)

    @cached_property
    def compact_items(self):
        if self.n_response_slots is not None:  # the one-hot of the ids track
            return self.items
        return self._features

    def comparisons(self, *, transitive_reduction=False, required=True):
        """The within-(user, prompt) comparisons of the rows (see :func:`comparisons`).

        ``required=True`` raises a ``ValueError`` naming the estimator when there
        is none.
        """
        key = bool(transitive_reduction)
        if key not in self._comparisons:
            self._comparisons[key] = comparisons(self.ids, self.y, transitive_reduction=key)
        structure = self._comparisons[key]
        if required:
            require_comparisons(structure, self.estimator_name)
        return structure

    @cached_property
    def pair_weight(self):
        return pair_weights(self.comparisons(required=False), self.sample_weight)


def fit_population(feedback, l2, max_iter, **options):
    """The population's Bradley-Terry weights: one preference for every user.

    Every comparison of ``feedback`` pooled, with the penalty ``l2 * ||w||^2``:
    :class:`~pllm_sk.baselines.PopulationRanker`'s model, and the prior centre
    and cold-user prediction of the families that learn per user.

    Parameters
    ----------
    feedback : Feedback
    l2 : float
    max_iter : int
    **options
        Passed to :func:`fit_bradley_terry` (``tol``, ``return_n_iter``).

    Returns
    -------
    coef : ndarray of shape (n_item_features,)
        (and the Newton steps taken, with ``return_n_iter=True``).
    """
    pooled, counts = pooled_differences(
        feedback.ids, feedback.compact_items, feedback.comparisons()
    )
    return fit_bradley_terry(
        pooled, l2=float(l2), sample_weight=counts, max_iter=max_iter, **options
    )
