"""The base class of the corpus-backed feature steps: public fit and transform."""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ..datasets import Corpus
from ..utils import ID_COLUMNS, check_id_input, id_column, is_dataframe, validate_params

__all__ = ["BaseCorpusFeatures"]


class BaseCorpusFeatures(TransformerMixin, BaseEstimator):
    """Base class for steps that append columns looked up by (prompt, response).

    The public :meth:`fit` and :meth:`transform` validate the parameters (against
    ``_parameter_constraints``), ``X`` and its id columns; subclasses implement

    - ``_fit(prompt_ids, response_ids)``: learn from the ids of the fit rows and set
      the fitted attributes;
    - ``_transform(prompt_ids, response_ids)``: the block of appended values, a
      new array of shape (n_rows, n_appended) (a DataFrame output takes it without a
      copy, so it must not be a view of anything the step keeps);
    - ``_new_names()``: the appended column names, known after ``_fit``.

    A DataFrame ``X`` gets float32 columns appended; an array ``X`` becomes a float64
    array with the ids first, unless ``set_output(transform="pandas")`` asks for a
    DataFrame. The id columns and any feature columns already in ``X`` are kept in
    place and are not checked beyond their presence: a step passes through what it
    does not read.

    The ids are categorical: scikit-learn's estimator checks then build ``X`` of
    non-negative integers, which is what ids must be.
    """

    _parameter_constraints: dict = {"corpus": [Corpus]}

    def fit(self, X, y=None):
        """Fit the step on the (prompt, response) pairs of ``X``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows of (user_id, prompt_id, response_id, features...), with ids inside
            the corpus.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted step.
        """
        self._fit_validated(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit the step on ``X`` and append its columns to ``X``.

        The same as ``fit(X).transform(X)``, parameters and return value included,
        with the ids of ``X`` validated once.
        """
        return self._append(*self._fit_validated(X))

    def _fit_validated(self, X):
        """``fit``'s body; returns ``X`` as validated and its pair ids."""
        validate_params(self)
        X, prompt_ids, response_ids = self._validate_ids(X, reset=True)
        self._fit(prompt_ids, response_ids)
        clashes = set(self._new_names()) & set(getattr(self, "feature_names_in_", ()))
        if clashes:
            raise ValueError(
                f"X already has the column(s) {sorted(clashes)} that "
                f"{type(self).__name__} appends; were they appended twice?"
            )
        return X, prompt_ids, response_ids

    def transform(self, X):
        """Append this step's columns to ``X``.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            The same columns as in ``fit``; ids inside the corpus.

        Returns
        -------
        X_out : DataFrame or ndarray of shape (n_rows, 3 + n_features + n_appended)
            ``X`` with the appended columns (float32 in a DataFrame, float64 in an
            array).
        """
        check_is_fitted(self)
        return self._append(*self._validate_ids(X, reset=False))

    def _append(self, X, prompt_ids, response_ids):
        """``X`` with the block of ``_transform`` appended (see :meth:`transform`)."""
        block = np.asarray(self._transform(prompt_ids, response_ids))
        if is_dataframe(X):
            # The block is new: the DataFrame takes it without a copy (pandas
            # copies a 2-d array by default, a second full-size block).
            new = pd.DataFrame(
                block.astype(np.float32, copy=False),
                index=X.index,
                columns=self._new_names(),
                copy=False,
            )
            return pd.concat([X, new], axis=1)
        return np.hstack([X.astype(np.float64, copy=False), block.astype(np.float64)])

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: the input columns, then the appended ones.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Input column names; ``None`` uses ``feature_names_in_``, or, after a fit
            on an array, ``user_id``, ``prompt_id``, ``response_id``, ``x3``, ...

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        if input_features is None:
            input_features = getattr(self, "feature_names_in_", None)
        if input_features is None:
            input_features = list(ID_COLUMNS) + [
                f"x{j}" for j in range(len(ID_COLUMNS), self.n_features_in_)
            ]
        input_features = [str(name) for name in input_features]
        if len(input_features) != self.n_features_in_:
            raise ValueError(
                f"input_features has {len(input_features)} names; X had "
                f"{self.n_features_in_} columns in fit."
            )
        if hasattr(self, "feature_names_in_") and not np.array_equal(
            input_features, self.feature_names_in_
        ):
            raise ValueError(
                "input_features is not equal to feature_names_in_: "
                f"{input_features} != {list(self.feature_names_in_)}."
            )
        return np.asarray(input_features + list(self._new_names()), dtype=object)

    def _validate_ids(self, X, *, reset):
        """``X`` checked (and its columns recorded or compared), and its pair ids.

        Every id column must hold non-negative integers, the user's included though
        no step reads it; prompt and response ids must lie inside the corpus.
        """
        # After fit, the width is compared with fit's (at least the 3 ids) first,
        # as scikit-learn does.
        X = check_id_input(X, min_features=len(ID_COLUMNS) if reset else 1)
        validate_data(self, X, skip_check_array=True, reset=reset)
        ids = {name: id_column(X, name) for name in ID_COLUMNS}
        prompt_ids, response_ids = self.corpus.check_ids(
            ids["prompt_id"], ids["response_id"]
        )
        return X, prompt_ids, response_ids

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # The id columns are integer codes; see the class docstring.
        tags.input_tags.categorical = True
        return tags
