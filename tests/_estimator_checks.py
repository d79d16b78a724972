"""Checks that the tests of every ranker family run alike, written once."""

import pickle

import numpy as np
import pandas as pd
import pytest
from _helpers import shuffled_within_prompts
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)


def check_parameter_conventions(name, estimator):
    """scikit-learn's conventions for ``__init__``, ``get_params``, ``set_params``."""
    check_no_attributes_set_in_init(name, estimator)
    check_parameters_default_constructible(name, estimator)
    check_get_params_invariance(name, estimator)
    check_set_params(name, estimator)


def check_input_errors(
    estimator, X, y, *, missing, non_integer, feature, bad_row, bad_value=np.nan
):
    """Bad input raises an error that names the problem.

    ``predict`` before ``fit``; ``fit`` without the id column ``missing``, with
    non-integer ids in the id column ``non_integer``, and with ``bad_value`` (NaN
    or infinite) in row ``bad_row`` of the feature column ``feature``. Leaves
    ``estimator`` unfitted.
    """
    with pytest.raises(NotFittedError):
        estimator.predict(X)
    with pytest.raises(ValueError, match=missing):
        estimator.fit(X.drop(columns=missing), y)
    with pytest.raises(TypeError, match=non_integer):
        estimator.fit(X.assign(**{non_integer: X[non_integer] + 0.5}), y)
    bad_column = np.where(np.arange(len(X)) == bad_row, bad_value, 0.0)
    with pytest.raises(ValueError, match=feature):
        estimator.fit(X.assign(**{feature: bad_column}), y)


def check_clone_pickle_and_determinism(estimator, X, y, fitted_attribute):
    """Clones, pickles and refits of ``estimator`` fitted on ``(X, y)`` agree.

    A clone of the fitted estimator keeps its parameters and drops
    ``fitted_attribute``; a pickled copy and a second fit predict the same.
    Returns the fitted clone.
    """
    fitted = clone(estimator).fit(X, y)
    assert clone(fitted).get_params() == estimator.get_params()
    assert not hasattr(clone(fitted), fitted_attribute)
    restored = pickle.loads(pickle.dumps(fitted))
    assert_array_equal(restored.predict(X), fitted.predict(X))
    assert_array_equal(clone(estimator).fit(X, y).predict(X), fitted.predict(X))
    return fitted


def check_partial_fit_of_unfitted_fits(estimator, X, y):
    """``partial_fit`` of an unfitted clone predicts as ``fit`` does."""
    partial = clone(estimator).partial_fit(X, y)
    full = clone(estimator).fit(X, y)
    assert_array_equal(partial.predict(X), full.predict(X))


def check_partial_fit_changes_only_that_user(
    model, X, new, returning, population_state
):
    """``partial_fit`` moves the predictions of its own user's rows only.

    ``model`` is fitted on ``X``; ``new`` and ``returning`` are ``(X_user, y_user)``
    of one user each, a user absent from ``X`` and one in it, passed to
    ``partial_fit`` in turn. Predictions are compared on the rows of ``X`` and of
    the new user. The new user leaves ``population_state(model)`` (the fitted
    population, pickled) as it was.
    """
    everyone = pd.concat([X, new[0]])
    users = everyone["user_id"]
    before = model.predict(everyone)
    state = population_state(model)
    model.partial_fit(*new)
    after = model.predict(everyone)
    _assert_only_user_changed(before, after, users, new[0]["user_id"].iloc[0])
    assert population_state(model) == state
    model.partial_fit(*returning)
    again = model.predict(everyone)
    _assert_only_user_changed(after, again, users, returning[0]["user_id"].iloc[0])


def _assert_only_user_changed(before, after, users, user):
    """Predictions changed for the rows of ``user`` and for no one else's."""
    is_user = (users == user).to_numpy()
    assert_allclose(after[~is_user], before[~is_user], rtol=1e-8, atol=1e-8)
    assert not np.allclose(after[is_user], before[is_user])


def check_temperature_softer_on_shuffled_labels(estimator, X, y, seed):
    """The automatic temperature grows when labels are shuffled within prompts."""
    exact = clone(estimator).fit(X, y)
    noisy = clone(estimator).fit(X, shuffled_within_prompts(X, y, seed))
    assert noisy.temperature_ > exact.temperature_
