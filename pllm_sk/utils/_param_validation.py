"""Declarative parameter validation: scikit-learn's own machinery, wrapped in one place.

Estimators declare ``_parameter_constraints`` as scikit-learn's do, with the
constraint types re-exported here, and the base classes call
:func:`validate_params` at the start of ``fit``. scikit-learn keeps these in its
private ``sklearn.utils._param_validation`` module, which may move between
releases: this module is the only place pllm_sk imports it from.
"""

from sklearn.utils._param_validation import (
    HasMethods,
    Hidden,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
)

__all__ = [
    "HasMethods",
    "Hidden",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "validate_params",
]


def validate_params(estimator):
    """Check ``estimator``'s parameters against its ``_parameter_constraints``.

    Raises
    ------
    InvalidParameterError
        A subclass of both ``ValueError`` and ``TypeError``, with scikit-learn's
        message: "The 'alpha' parameter of PopulationRanker must be a float in the
        range [0.0, inf). Got -1 instead."
    """
    validate_parameter_constraints(
        estimator._parameter_constraints,
        estimator.get_params(deep=False),
        caller_name=type(estimator).__name__,
    )
