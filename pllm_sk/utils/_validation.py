"""Validation of id-carrying ``X`` and feedback ``y``, shared by every estimator."""

import numbers

import numpy as np

__all__ = [
    "ID_COLUMNS",
    "check_feedback",
    "check_id_input",
    "id_column",
    "split_ids_features",
]

ID_COLUMNS = ("user_id", "prompt_id", "response_id")


def _is_dataframe(X):
    return hasattr(X, "columns") and hasattr(X, "iloc")


def _check_id_values(values, name):
    """Return ``values`` as int64, or raise naming the column and the bad value."""
    values = np.asarray(values)
    if values.dtype.kind == "b":
        raise TypeError(f"Column {name!r} must hold integer ids; got booleans.")
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
                f"Column {name!r} must hold integer ids; got {values[row]!r} at row {row}."
            )
    elif values.dtype.kind not in "iu":
        if not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values
        ):
            raise TypeError(
                f"Column {name!r} must hold integer ids; got dtype {values.dtype}."
            )
    values = values.astype(np.int64)
    if values.size and values.min() < 0:
        row = int(np.argmin(values))
        raise ValueError(
            f"Column {name!r} must hold non-negative ids; got {values[row]} at row {row}."
        )
    return values


def split_ids_features(X):
    """Split ``X`` into its id columns and its numeric feature columns.

    ``X`` is a pandas DataFrame with integer columns ``user_id``, ``prompt_id`` and
    ``response_id`` (in any position) plus numeric feature columns, or a 2-d array
    whose first three columns are those ids in that order.

    Returns
    -------
    ids : ndarray of int64, shape (n_rows, 3)
        ``user_id``, ``prompt_id``, ``response_id`` per row.
    features : ndarray of float64, shape (n_rows, n_features)
        The remaining columns; ``n_features`` may be 0 (the ids track).
    feature_names : list of str or None
        Names of the feature columns when ``X`` is a DataFrame.
    """
    if _is_dataframe(X):
        missing = [c for c in ID_COLUMNS if c not in X.columns]
        if missing:
            raise ValueError(
                f"X is missing the id column(s) {missing}; a DataFrame X needs the "
                f"columns {list(ID_COLUMNS)} plus any numeric feature columns."
            )
        ids = np.column_stack(
            [_check_id_values(X[c].to_numpy(), c) for c in ID_COLUMNS]
        )
        feature_names = [c for c in X.columns if c not in ID_COLUMNS]
        features = np.empty((len(X), len(feature_names)), dtype=np.float64)
        for j, column in enumerate(feature_names):
            values = X[column].to_numpy()
            if values.dtype.kind not in "biuf":
                raise TypeError(
                    f"Feature column {column!r} must be numeric; got dtype {values.dtype}."
                )
            features[:, j] = values
        _check_finite_features(features, feature_names)
        return ids, features, [str(c) for c in feature_names]

    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(
            f"X must be a pandas DataFrame or a 2-d array; got {type(X).__name__}."
        )
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            f"X must be 2-d (rows of user_id, prompt_id, response_id, features...); "
            f"got an array of shape {X.shape}."
        )
    if X.shape[1] < len(ID_COLUMNS):
        raise ValueError(
            f"X has {X.shape[1]} column(s); an array X needs the id columns "
            f"{list(ID_COLUMNS)} first, then any feature columns."
        )
    ids = np.column_stack(
        [_check_id_values(X[:, j], c) for j, c in enumerate(ID_COLUMNS)]
    )
    try:
        features = X[:, len(ID_COLUMNS) :].astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Feature columns of X must be numeric: {exc}") from None
    names = [f"x{j}" for j in range(len(ID_COLUMNS), X.shape[1])]
    _check_finite_features(features, names)
    return ids, features, None


def _check_finite_features(features, names):
    bad = ~np.isfinite(features)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(
            f"Feature column {names[column]!r} contains NaN or inf (first at row {row}); "
            "features must be finite."
        )


def check_feedback(y, n_rows):
    """Validate feedback labels: numeric, 1-d, ``n_rows`` long, NaN allowed (unlabeled).

    Returns
    -------
    y : ndarray of float64, shape (n_rows,)
    """
    if y is None:
        raise ValueError("y is required: feedback labels, NaN for unlabeled rows.")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-d; got an array of shape {y.shape}.")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"y must be numeric feedback labels; got dtype {y.dtype}.")
    y = y.astype(np.float64)
    if y.shape[0] != n_rows:
        raise ValueError(
            f"X and y have different lengths: X has {n_rows} rows, y has {y.shape[0]}."
        )
    if np.isinf(y).any():
        raise ValueError("y contains inf; use NaN for unlabeled rows.")
    return y


def check_id_input(X):
    """``X`` as given if a DataFrame, else as a 2-d array with room for the ids."""
    if _is_dataframe(X):
        return X
    if isinstance(X, (str, bytes)) or not hasattr(X, "__len__"):
        raise TypeError(
            f"X must be a pandas DataFrame or a 2-d array; got {type(X).__name__}."
        )
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] < len(ID_COLUMNS):
        raise ValueError(
            f"X must be a DataFrame or a 2-d array whose first columns are "
            f"{list(ID_COLUMNS)}; got an array of shape {X.shape}."
        )
    return X


def id_column(X, name):
    """One id column as int64: by name in a DataFrame, by position in an array."""
    if _is_dataframe(X):
        if name not in X.columns:
            raise ValueError(
                f"X is missing the id column {name!r}; a DataFrame X needs the columns "
                f"{list(ID_COLUMNS)}."
            )
        return _check_id_values(X[name].to_numpy(), name)
    return _check_id_values(X[:, ID_COLUMNS.index(name)], name)
