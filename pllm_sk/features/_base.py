"""What the corpus-backed feature steps share: id checks, text lookup, appending."""

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted, validate_data

from ..utils._validation import ID_COLUMNS, check_id_input, id_column, is_dataframe

__all__ = [
    "PARTS",
    "AppendFeaturesMixin",
    "center_by_group",
    "check_parts",
    "fitted_embedder",
    "part_embeddings",
]

# The texts of a row that can be embedded: its prompt and its response.
PARTS = ("prompt", "response")


class AppendFeaturesMixin:
    """``fit`` checks and ``transform`` output of steps that append feature columns.

    Subclasses implement ``_new_names()`` (the appended column names, known after
    ``fit``) and compute the appended block; :meth:`_append` joins it to ``X`` the
    way :class:`RewardFeatures` does: a DataFrame gets float32 columns appended, an
    array becomes a float64 array with the ids first.
    """

    def _check_fit_input(self, X):
        X = check_id_input(X)
        for name in ID_COLUMNS:
            id_column(X, name)
        if not all(
            hasattr(self.corpus, a) for a in ("prompts", "responses", "rewards")
        ):
            raise TypeError(
                f"corpus must be a pllm_sk Corpus; got {type(self.corpus).__name__}."
            )
        return X

    def _record_input(self, X):
        """Record ``n_features_in_`` / ``feature_names_in_``; refuse column clashes."""
        validate_data(self, X, skip_check_array=True, reset=True)
        clashes = set(self._new_names()) & set(getattr(self, "feature_names_in_", ()))
        if clashes:
            raise ValueError(
                f"X already has the column(s) {sorted(clashes)} that "
                f"{type(self).__name__} appends; were they appended twice?"
            )

    def _transform_ids(self, X):
        """Validated ``X`` and its (prompt_id, response_id) columns for ``transform``."""
        check_is_fitted(self)
        X = check_id_input(X)
        validate_data(self, X, skip_check_array=True, reset=False)
        prompt_ids, response_ids = self.corpus.check_ids(
            id_column(X, "prompt_id"), id_column(X, "response_id")
        )
        return X, prompt_ids, response_ids

    def _append(self, X, block):
        if is_dataframe(X):
            new = pd.DataFrame(
                block.astype(np.float32, copy=False),
                index=X.index,
                columns=self._new_names(),
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


def check_parts(parts):
    """``parts`` as a tuple of distinct names from :data:`PARTS`."""
    if isinstance(parts, str):
        raise TypeError(f"parts must be a sequence of names, such as [{parts!r}].")
    parts = tuple(parts)
    unknown = [part for part in parts if part not in PARTS]
    if not parts or unknown or len(set(parts)) != len(parts):
        raise ValueError(
            f"parts must be distinct names among {list(PARTS)}; got {list(parts)}."
        )
    return parts


def fitted_embedder(embedder):
    """A fitted clone of ``embedder``, or of the default :class:`TextEmbedder`."""
    from ._embedding import TextEmbedder

    return (TextEmbedder() if embedder is None else clone(embedder)).fit()


def part_embeddings(embedder, corpus, part, prompt_ids, response_ids):
    """Embeddings of the distinct texts of one part, and the text of each row.

    Each distinct prompt (or (prompt, response)) is embedded once, whatever the
    number of rows that refer to it.

    Returns
    -------
    vectors : ndarray of float32, shape (n_distinct_texts, dim)
    inverse : ndarray of int64, shape (n_rows,)
        Row ``i`` has the text ``vectors[inverse[i]]``.
    prompt_of : ndarray of int64, shape (n_distinct_texts,)
        The prompt id of each distinct text.
    """
    if part == "prompt":
        distinct, inverse = np.unique(prompt_ids, return_inverse=True)
        prompt_of = distinct
        texts = corpus.prompts[distinct]
    else:
        n_responses = corpus.responses.shape[1]
        distinct, inverse = np.unique(
            prompt_ids * n_responses + response_ids, return_inverse=True
        )
        prompt_of = distinct // n_responses
        texts = corpus.responses[prompt_of, distinct % n_responses]
    return embedder.transform(list(texts)), inverse.reshape(-1), prompt_of


def center_by_group(vectors, groups):
    """``vectors`` minus the mean vector of their group (rows sorted or not)."""
    _, group_of = np.unique(groups, return_inverse=True)
    group_of = group_of.reshape(-1)
    counts = np.bincount(group_of).astype(np.float64)
    sums = np.zeros((counts.size, vectors.shape[1]))
    order = np.argsort(group_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group_of[order]) != 0])
    sums[group_of[order][starts]] = np.add.reduceat(vectors[order], starts, axis=0)
    return vectors - (sums / counts[:, None])[group_of]
