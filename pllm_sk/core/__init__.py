"""The preference core every family stands on.

Comparisons from labels and the per-user store, the Bradley-Terry solvers, the
calibration of priors on held-out users, item encodings: module-level functions
that take arrays and return arrays.
"""

from ._bradley_terry import (
    fit_bradley_terry,
    log_sigmoid,
)
from ._calibration import (
    CALIBRATION_USERS,
    HELD_OUT_PROMPTS,
    TEMPERATURES,
    CalibrationResult,
    best_grid_value,
    calibrate,
    calibration_split,
    laplace_predictive,
    log_likelihood_scores,
    per_user_means,
    top_choice_accuracy,
    within_one_standard_error,
)
from ._comparisons import (
    Comparisons,
    PairDifferences,
    UserComparisons,
    comparisons,
    expand_ranges,
    pair_differences,
    pair_weights,
    pooled_differences,
    positions_in,
    require_comparisons,
)
from ._feedback import Feedback, fit_population
from ._items import (
    count_response_slots,
    item_features,
    item_keys,
)

__all__ = [
    "Feedback",
    "fit_population",
    "CALIBRATION_USERS",
    "CalibrationResult",
    "Comparisons",
    "HELD_OUT_PROMPTS",
    "PairDifferences",
    "TEMPERATURES",
    "UserComparisons",
    "best_grid_value",
    "calibrate",
    "calibration_split",
    "comparisons",
    "count_response_slots",
    "expand_ranges",
    "fit_bradley_terry",
    "item_features",
    "item_keys",
    "laplace_predictive",
    "log_likelihood_scores",
    "log_sigmoid",
    "pair_differences",
    "pair_weights",
    "per_user_means",
    "pooled_differences",
    "positions_in",
    "require_comparisons",
    "top_choice_accuracy",
    "within_one_standard_error",
]
