"""What an estimator knows about a candidate item: its feature columns, or its slot.

On the ids track ``X`` has no feature columns, and the only thing known about a
candidate of a prompt that no user has labeled is its response slot (which LLM
wrote it): the item features are then a one-hot encoding of ``response_id``. The
rankers that also learn per-item terms key items by (prompt_id, response_id).
"""

import numpy as np

__all__ = ["count_response_slots", "item_features", "item_keys"]


def count_response_slots(ids, features):
    """The number of one-hot response slots to encode: None when there are features.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
        The labeled rows of ``fit``.
    features : ndarray of shape (n_rows, n_features)

    Returns
    -------
    n_response_slots : int or None
        One more than the largest ``response_id`` on the ids track (no feature
        columns); None otherwise.
    """
    return int(ids[:, 2].max()) + 1 if features.shape[1] == 0 else None


def item_features(ids, features, n_response_slots):
    """The feature columns, or a one-hot of ``response_id`` on the ids track.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
    features : ndarray of shape (n_rows, n_features)
    n_response_slots : int or None
        From :func:`count_response_slots` in ``fit``; None returns ``features``.

    Returns
    -------
    items : ndarray of shape (n_rows, n_item_features)

    Raises
    ------
    ValueError
        On the ids track, for a ``response_id`` not seen in ``fit``: nothing is
        known about that slot, and predicting 0 for it would be silent.
    """
    if n_response_slots is None:
        return features
    unseen = ids[:, 2] >= n_response_slots
    if unseen.any():
        row = int(np.flatnonzero(unseen)[0])
        raise ValueError(
            f"response_id={ids[row, 2]} (row {row}) was not seen in fit, which saw the "
            f"response slots 0..{n_response_slots - 1}; on the ids track (no feature "
            "columns) a slot is all that is known about a candidate."
        )
    onehot = np.zeros((ids.shape[0], n_response_slots))
    onehot[np.arange(ids.shape[0]), ids[:, 2]] = 1.0
    return onehot


def item_keys(ids, n_response_keys):
    """One int64 key per (prompt_id, response_id); -1 where response_id is out of range.

    ``n_response_keys`` is one more than the largest ``response_id`` seen in ``fit``,
    so a key never collides with another item's.
    """
    keys = ids[:, 1] * n_response_keys + ids[:, 2]
    return np.where(ids[:, 2] < n_response_keys, keys, -1)
