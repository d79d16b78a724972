"""Validation of id-carrying ``X`` and feedback ``y``, shared by every estimator.

The checks run in scikit-learn's order and, where scikit-learn has one, with its
wording (sparse input, complex data, empty input, too few columns, ``y=None``), so
that a user who knows scikit-learn's messages recognises ours, and so that its
estimator checks reach the point they are testing.
"""


import warnings

import numpy as np
from scipy import sparse
from sklearn.exceptions import DataConversionWarning

__all__ = [
    "ID_COLUMNS",
    "check_feedback",
    "check_id_input",
    "id_column",
    "check_id_values",
    "is_dataframe",
    "split_ids_features",
]

ID_COLUMNS = ("user_id", "prompt_id", "response_id")


def is_dataframe(X):
    """Whether ``X`` is a pandas DataFrame (duck-typed, pandas is not imported)."""
    return hasattr(X, "columns") and hasattr(X, "iloc")


def check_id_input(X, *, min_samples=1, min_features=3):
    """``X`` as given if a DataFrame, else a 2-d array with room for the id columns.

    Parameters
    ----------
    X : object
        Candidate input.
    min_samples : int, default=1
        Rows that ``X`` needs at least.
    min_features : int, default=3
        Columns that an array ``X`` needs at least. After ``fit`` pass 1 and let
        ``validate_data(..., reset=False)`` compare the width with fit's (at least
        the 3 ids), as scikit-learn compares it before any other column check.

    Returns
    -------
    X : DataFrame or ndarray
        A DataFrame is returned as is (its id columns checked to be present); any
        other input as a 2-d ndarray of at least ``min_features`` columns.

    Raises
    ------
    TypeError
        For sparse input, a string or scalar, or a DataFrame without its id columns.
    ValueError
        For complex data, an array that is not 2-d, too few rows, or fewer than 3
        columns.
    """
    if sparse.issparse(X):
        raise TypeError(
            "Sparse input is not supported: X must be a pandas DataFrame or a dense "
            f"2-d array whose first columns are {list(ID_COLUMNS)}; use X.toarray() "
            "to densify."
        )
    if is_dataframe(X):
        missing = [c for c in ID_COLUMNS if c not in X.columns]
        if missing:
            raise ValueError(
                f"X is missing the id column(s) {missing}; a DataFrame X needs the "
                f"columns {list(ID_COLUMNS)} plus any numeric feature columns."
            )
        _check_n_samples(X.shape, min_samples)
        return X
    if isinstance(X, (str, bytes)) or not (
        hasattr(X, "__len__") or hasattr(X, "__array__")
    ):
        raise TypeError(
            f"X must be a pandas DataFrame or a 2-d array; got {type(X).__name__}."
        )
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: X must hold integer ids and real features.")
    if X.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {X.ndim}D array instead (shape {X.shape}): X holds "
            f"rows of {', '.join(ID_COLUMNS)}, then any feature columns. Reshape your "
            "data with X.reshape(1, -1) if it is a single row."
        )
    _check_n_samples(X.shape, min_samples)
    if X.shape[1] < min_features:
        raise ValueError(
            f"Found array with {X.shape[1]} feature(s) (shape={X.shape}) while a "
            f"minimum of {min_features} is required: an array X needs the id "
            f"columns {list(ID_COLUMNS)} first, then any feature columns."
        )
    return X


def _check_n_samples(shape, min_samples):
    if shape[0] < min_samples:
        raise ValueError(
            f"Found array with {shape[0]} sample(s) (shape={tuple(shape)}) while a "
            f"minimum of {min_samples} is required."
        )


def check_id_values(values, name):
    """Return ``values`` as int64, or raise naming the column and the bad value.

    int64 ``values`` are returned as they are, not copied (a column of a DataFrame
    then comes back as a view of it, which no caller writes into).
    """
    values = np.asarray(values)
    if values.dtype.kind == "b":
        raise TypeError(f"Column {name!r} must hold integer ids; got booleans.")
    if values.dtype.kind == "O":
        # Python ints in an object array are fine; anything else fails here with
        # numpy's own "argument must be a string or a number" message.
        values = values.astype(np.float64)
    if values.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: column {name!r} holds complex ids.")
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            raise ValueError(
                f"Column {name!r} must hold integer ids; got NaN or inf at row "
                f"{int(np.flatnonzero(~finite)[0])}."
            )
        fractional = values != np.round(values)
        if fractional.any():
            row = int(np.flatnonzero(fractional)[0])
            raise TypeError(
                f"Column {name!r} must hold integer ids; got {values[row].item()!r} at "
                f"row {row}."
            )
    elif values.dtype.kind not in "iu":
        raise TypeError(f"Column {name!r} must hold integer ids; got dtype {values.dtype}.")
    values = values.astype(np.int64, copy=False)
    if values.size and values.min() < 0:
        row = int(np.argmin(values))
        raise ValueError(
            f"Column {name!r} must hold non-negative ids; got {values[row]} at row {row}."
        )
    return values


def split_ids_features(X, *, dtype=np.float64):
    """Split ``X`` into its id columns and its numeric feature columns.

    ``X`` is a pandas DataFrame with integer columns ``user_id``, ``prompt_id`` and
    ``response_id`` (in any position) plus numeric feature columns, or a 2-d array
    whose first three columns are those ids in that order, as returned by
    :func:`check_id_input`.

    Parameters
    ----------
    X : DataFrame or ndarray
    dtype : dtype or list of dtypes, default=np.float64
        Data type of ``features``, as in scikit-learn's ``check_array``: with a
        list, features whose common type is in the list keep it, and the others
        are converted to its first entry. ``[np.float64, np.float32]`` keeps the
        float32 columns that feature steps append in float32: at PersonalLLM's
        full size that saves a 320 MB float64 copy, and no copy at all when they
        are one block of a DataFrame.

    Returns
    -------
    ids : ndarray of int64, shape (n_rows, 3)
        ``user_id``, ``prompt_id``, ``response_id`` per row.
    features : ndarray of shape (n_rows, n_features)
        The remaining columns, C-contiguous, possibly a read-only view of ``X``;
        ``n_features`` may be 0 (the ids track).
    feature_names : list of str or None
        Names of the feature columns when ``X`` is a DataFrame.
    """
    if is_dataframe(X):
        ids = np.column_stack(
            [check_id_values(X[c].to_numpy(), c) for c in ID_COLUMNS]
        )
        feature_names = [c for c in X.columns if c not in ID_COLUMNS]
        if all(X[c].dtype.kind in "biuf" for c in feature_names):
            # One block conversion: pandas keeps same-dtype columns together, and
            # the cast and the row-major copy are one pass (no float64 temporary);
            # a kept dtype whose block is already row-major is not copied at all.
            block = X[feature_names].to_numpy()
            features = np.asarray(
                block, dtype=_feature_dtype(block.dtype, dtype), order="C"
            ).reshape(len(X), len(feature_names))
        else:
            features = np.empty((len(X), len(feature_names)), dtype=np.float64)
            for j, column in enumerate(feature_names):
                features[:, j] = _numeric_column(X[column].to_numpy(), column)
        _check_finite_features(features, feature_names)
        return ids, features, [str(c) for c in feature_names]
    ids = np.column_stack(
        [check_id_values(X[:, j], c) for j, c in enumerate(ID_COLUMNS)]
    )
    names = [f"x{j}" for j in range(len(ID_COLUMNS), X.shape[1])]
    features = np.empty((X.shape[0], len(names)), dtype=_feature_dtype(X.dtype, dtype))
    for j, name in enumerate(names):
        features[:, j] = _numeric_column(X[:, len(ID_COLUMNS) + j], name)
    _check_finite_features(features, names)
    return ids, features, None


def _feature_dtype(found, dtype):
    """``dtype``, or ``found`` when ``dtype`` is a list that holds it (as check_array)."""
    if isinstance(dtype, (list, tuple)):
        return found if found in dtype else dtype[0]
    return dtype


def _numeric_column(values, name):
    if values.dtype.kind == "O":
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError) as error:  # numpy's message names the element
            raise type(error)(
                f"Feature column {name!r} must be numeric: {error}."
            ) from error
    if values.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: feature column {name!r}.")
    if values.dtype.kind not in "biuf":
        raise TypeError(f"Feature column {name!r} must be numeric; got dtype {values.dtype}.")
    return values


def _check_finite_features(features, names):
    # A sum is finite when every entry is (barring overflow, checked in full).
    if np.isfinite(features.sum()):
        return
    bad = ~np.isfinite(features)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"Feature column {names[column]!r} contains NaN or inf (first at row {row}); "
            "features must be finite."
        )


def check_feedback(y, n_rows, *, estimator_name="This estimator"):
    """Validate feedback labels: numeric, 1-d, ``n_rows`` long, NaN allowed (unlabeled).

    Parameters
    ----------
    y : array-like of shape (n_rows,) or None
    n_rows : int
        Rows of ``X``.
    estimator_name : str, default="This estimator"
        Named in the error for ``y=None``.

    Returns
    -------
    y : ndarray of float64, shape (n_rows,)
    """
    if y is None:
        raise ValueError(
            f"{estimator_name} requires y to be passed, but the target y is None: "
            "give feedback labels, NaN for unlabeled rows."
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected; change the "
            "shape of y to (n_rows,), for example with ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y should be a 1d array; got an array of shape {y.shape}.")
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported: y must hold real feedback labels.")
    if y.dtype.kind == "O":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "Unknown label type: y must hold numeric feedback labels (NaN for "
                "unlabeled rows)."
            ) from None
    if y.dtype.kind not in "biuf":
        raise ValueError(
            f"Unknown label type: y must hold numeric feedback labels; got dtype {y.dtype}."
        )
    y = y.astype(np.float64)
    if y.shape[0] != n_rows:
        raise ValueError(
            f"X and y have different lengths: X has {n_rows} rows, y has {y.shape[0]}."
        )
    if np.isinf(y).any():
        raise ValueError("y contains inf; use NaN for unlabeled rows.")
    return y


def id_column(X, name):
    """One id column as int64: by name in a DataFrame, by position in an array.

    ``X`` is as returned by :func:`check_id_input`. An int64 column is not copied
    (see :func:`check_id_values`).
    """
    if is_dataframe(X):
        return check_id_values(X[name].to_numpy(), name)
    return check_id_values(X[:, ID_COLUMNS.index(name)], name)
