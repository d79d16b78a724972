"""Declarative parameter validation: scikit-learn's own machinery, wrapped in one place.

Estimators declare ``_parameter_constraints`` as scikit-learn's do, with the
constraint types re-exported here, and the base classes call
:func:`validate_params` at the start of ``fit``. scikit-learn keeps these in its
private ``sklearn.utils._param_validation`` module, which may move between
releases: this module is the only place pllm_sk imports it from.
"""

import functools

from sklearn import config_context, get_config
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
    "fit_context",
    "validate_arguments",
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
    validate_arguments(
        estimator._parameter_constraints,
        estimator.get_params(deep=False),
        type(estimator).__name__,
    )


def validate_arguments(constraints, arguments, caller_name):
    """Check ``arguments`` (a dict) against ``constraints``, as for a method or function.

    Nothing is checked inside ``sklearn.config_context(skip_parameter_validation=True)``
    (or after ``sklearn.set_config(skip_parameter_validation=True)``), as in
    scikit-learn itself.

    Parameters
    ----------
    constraints : dict
        ``{name: [constraint, ...]}`` in scikit-learn's declarative form.
    arguments : dict
        ``{name: value}``; names without a constraint are not checked.
    caller_name : str
        Named in the error message, e.g. ``"ColdStartSplit"`` or ``"sample_y"``.
    """
    if get_config()["skip_parameter_validation"]:
        return
    validate_parameter_constraints(constraints, arguments, caller_name=caller_name)


def fit_context(method):
    """Decorate ``fit``-like methods: validate the parameters, then run the method.

    The counterpart of scikit-learn's private ``_fit_context``: parameters are
    checked once at the start (unless validation is skipped by the global
    configuration), and estimators fitted inside the method do not check theirs
    again.
    """

    @functools.wraps(method)
    def wrapper(estimator, *args, **kwargs):
        validate_params(estimator)
        with config_context(skip_parameter_validation=True):
            return method(estimator, *args, **kwargs)

    return wrapper
