"""Validation and docstring helpers shared by every subpackage; nothing else."""

from ._docstrings import fill_docstring
from ._param_validation import (
    HasMethods,
    Hidden,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    fit_context,
    validate_arguments,
    validate_params,
)
from ._validation import (
    ID_COLUMNS,
    check_feedback,
    check_id_input,
    check_id_values,
    id_column,
    is_dataframe,
    split_ids_features,
)

__all__ = [
    "ID_COLUMNS",
    "HasMethods",
    "Hidden",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "check_feedback",
    "check_id_input",
    "check_id_values",
    "fill_docstring",
    "fit_context",
    "id_column",
    "is_dataframe",
    "split_ids_features",
    "validate_arguments",
    "validate_params",
]
