"""Validation of id-carrying X: the id columns and the feature dtype."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import DataConversionWarning

from pllm_sk.utils import check_feedback, check_id_values, split_ids_features


def _frame(feature_dtype):
    return pd.DataFrame(
        {
            "user_id": [0, 0, 1],
            "prompt_id": [4, 4, 5],
            "response_id": [0, 1, 0],
            "a": np.array([0.5, -1.25, 2.0], dtype=feature_dtype),
            "b": np.array([1, 2, 3], dtype=feature_dtype),
        }
    )


@pytest.mark.parametrize(
    "given, dtype, expected",
    [
        (np.float32, np.float64, np.float64),
        (np.float32, [np.float64, np.float32], np.float32),
        (np.float64, [np.float64, np.float32], np.float64),
        (np.int64, [np.float64, np.float32], np.float64),
    ],
)
def test_feature_dtype_as_check_array(given, dtype, expected):
    # A list keeps a dtype it holds and converts the others to its first entry.
    X = _frame(given)
    for data in (X, X.to_numpy(dtype=given)):
        ids, features, _ = split_ids_features(data, dtype=dtype)
        assert features.dtype == expected
        assert features.flags.c_contiguous
        assert_array_equal(features, X[["a", "b"]].to_numpy(dtype=np.float64))
        assert ids.dtype == np.int64
        assert_array_equal(ids, [[0, 4, 0], [0, 4, 1], [1, 5, 0]])


def test_int64_ids_are_not_copied():
    values = np.array([3, 0, 7], dtype=np.int64)
    assert check_id_values(values, "user_id") is values
    converted = check_id_values(values.astype(np.int32), "user_id")
    assert converted.dtype == np.int64
    assert_array_equal(converted, values)


def test_non_finite_float32_features_are_refused():
    X = _frame(np.float32)
    X.loc[1, "b"] = np.inf
    with pytest.raises(ValueError, match="'b' contains NaN or inf .first at row 1"):
        split_ids_features(X, dtype=[np.float64, np.float32])


def test_a_non_numeric_feature_column_is_named():
    X = _frame(np.float64).astype({"b": object})
    X.loc[1, "b"] = "high"
    with pytest.raises(ValueError, match=r"Feature column 'b' must be numeric: .*'high'"):
        split_ids_features(X)
    with pytest.raises(ValueError, match=r"Feature column 'x4' must be numeric"):
        split_ids_features(X.to_numpy())


def test_a_column_vector_y_warns_as_in_scikit_learn():
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        y = check_feedback(np.array([[1.0], [0.0], [np.nan]]), 3)
    assert_array_equal(y, [1.0, 0.0, np.nan])
