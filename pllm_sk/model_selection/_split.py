"""Cold-start splitting of users: few support prompts in, query candidates out."""

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state

from ..utils import (
    check_feedback,
    check_id_input,
    id_column,
)

__all__ = ["SUPPORT_STRATEGIES", "ColdStartSplit"]

# How a test user's support prompts are chosen; see ColdStartSplit._support_priority.
SUPPORT_STRATEGIES = ("random", "nearest")

# Candidate (user, prompt) x query-prompt comparisons per block of the "nearest"
# support: bounds the memory of the gathered embeddings.
_NEAREST_BLOCK = 65_536


class ColdStartSplit(BaseCrossValidator):
    """Split users into cold-start folds: a few support prompts in, query rows out.

    Rows of ``X`` are (user, prompt, response) candidates and ``y`` their feedback,
    NaN for unlabeled rows. A user's *labeled prompts* are the prompts with at least
    one labeled row of that user; the user's *query rows* are their unlabeled rows.
    In each split:

    - the **test users** are users with query rows; their query rows form the test
      fold;
    - each test user reveals exactly ``n_support`` of their labeled prompts: the
      labeled rows of those prompts are in the training fold, the rest of the user's
      labeled rows are in neither fold;
    - every labeled row of every other user is in the training fold; the other
      users' query rows are in neither fold.

    No test user's query row ever reaches the training fold, and no user's labeled
    rows outside their support set reach it while they are a test user.

    With ``test_size=None`` this is a k-fold over the users that have query rows,
    shuffled with ``random_state``: each such user is a test user in exactly one
    split (like :class:`~sklearn.model_selection.GroupKFold`). With ``test_size``
    set, each split draws its test users at random, independently of the other
    splits (like :class:`~sklearn.model_selection.GroupShuffleSplit`).

    Parameters
    ----------
    n_splits : int, default=5
        Number of splits; at least 2 for the k-fold (``test_size=None``), at least 1
        otherwise.
    test_size : float, int or None, default=None
        ``None`` for the k-fold over users; a float in (0, 1) for the share of the
        users with query rows drawn as test users in each split (rounded up), or an
        int for their number.
    n_support : int, default=5
        Labeled prompts each test user reveals in the training fold; 0 is the pure
        cold start (test users have no training rows).
    support : {"random", "nearest"}, default="random"
        How the support prompts are chosen among the user's labeled prompts:
        ``"random"`` draws them uniformly (the paper's setting 2); ``"nearest"``
        takes those nearest the user's query prompt by cosine similarity of
        ``prompt_embeddings`` (the paper's setting 1: relevant history), the
        nearest to any of them when a user has several query prompts; ties go to
        the lower ``prompt_id``.
    allow_fewer : bool, default=False
        What to do with a test user who has fewer than ``n_support`` labeled prompts:
        raise a ``ValueError`` naming the user (``False``) or use all they have.
    random_state : int, RandomState instance or None, default=None
        Shuffles the users of the k-fold, draws the test users of ``test_size`` mode
        and the support prompts. Pass an int for splits that are the same on every
        call of :meth:`split`.
    prompt_embeddings : array-like of shape (n_prompts, dim), default=None
        One vector per ``prompt_id`` (row ``p`` for prompt ``p``), for
        ``support="nearest"``, which requires it; for example
        ``TextEmbedder().fit_transform(corpus.prompts)``.

    Notes
    -----
    A user is identified by ``groups`` when it is given (metadata routing requests
    it by default), otherwise by the ``user_id`` column of ``X`` (the first column of
    an array). Prompts are identified by the ``prompt_id`` column of ``X`` (the
    second column of an array).

    A support prompt contributes its labeled rows; a row the user left unlabeled is
    a query row and always belongs to the test fold.

    See Also
    --------
    sklearn.model_selection.GroupKFold : K-fold over groups, without support sets.
    sklearn.model_selection.GroupShuffleSplit : Random group splits.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.model_selection import ColdStartSplit
    >>> # Two users, each with two labeled prompts (2 rows each) and one query prompt.
    >>> X = pd.DataFrame({
    ...     "user_id": [0] * 6 + [1] * 6,
    ...     "prompt_id": [0, 0, 1, 1, 2, 2] * 2,
    ...     "response_id": [0, 1] * 6,
    ... })
    >>> y = np.array([1, 0, 0, 1, np.nan, np.nan] * 2)
    >>> cv = ColdStartSplit(n_splits=2, n_support=1, random_state=0)
    >>> for train, test in cv.split(X, y):
    ...     print(sorted(set(X.user_id.iloc[test])), len(train), len(test))
    [1] 6 2
    [0] 6 2
    """

    # Routing requests ``groups`` by default, as GroupKFold does; ``split`` falls
    # back to the user_id column of X when none is passed.
    __metadata_request__split = {"groups": True}

    def __init__(
        self,
        n_splits=5,
        *,
        test_size=None,
        n_support=5,
        support="random",
        allow_fewer=False,
        random_state=None,
        prompt_embeddings=None,
    ):
        self.n_splits = n_splits
        self.test_size = test_size
        self.n_support = n_support
        self.support = support
        self.allow_fewer = allow_fewer
        self.random_state = random_state
        self.prompt_embeddings = prompt_embeddings

    def get_n_splits(self, X=None, y=None, groups=None):
        """Return the number of splits.

        Parameters
        ----------
        X, y, groups : object
            Always ignored, exist for API compatibility.

        Returns
        -------
        n_splits : int
        """
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Generate indices of the training and test rows of each split.

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_rows, 3 + n_features)
            Rows of (user_id, prompt_id, response_id, features...).
        y : array-like of shape (n_rows,)
            Feedback labels, NaN for unlabeled (query) rows. Required.
        groups : array-like of shape (n_rows,), default=None
            User label of each row; ``None`` uses the ``user_id`` column of ``X``.

        Yields
        ------
        train : ndarray of int
            Positions of the training rows: all labeled rows of the other users and
            the support rows of the test users.
        test : ndarray of int
            Positions of the test users' query rows.
        """
        self._validate_params()
        users, prompt_ids, y = self._extract(X, y, groups)
        user_codes = np.unique(users, return_inverse=True)
        user_labels, user_of_row = user_codes[0], user_codes[1].reshape(-1)
        n_users = user_labels.size

        labeled = ~np.isnan(y)
        labeled_rows = np.flatnonzero(labeled)
        query_rows = np.flatnonzero(~labeled)
        labeled_pairs, pair_of_labeled_row = _user_prompt_pairs(
            user_of_row[labeled_rows], prompt_ids[labeled_rows]
        )
        query_pairs, _ = _user_prompt_pairs(
            user_of_row[query_rows], prompt_ids[query_rows]
        )
        n_labeled_prompts = np.bincount(labeled_pairs[0], minlength=n_users)
        candidates = np.unique(query_pairs[0])
        if candidates.size == 0:
            raise ValueError(
                "y has no unlabeled (NaN) rows: ColdStartSplit needs query rows, the "
                "candidates a test user's fold is made of."
            )

        rng = check_random_state(self.random_state)
        for test_users in self._iter_test_users(candidates, rng):
            is_test_user = np.zeros(n_users, dtype=bool)
            is_test_user[test_users] = True
            self._check_enough_support(test_users, n_labeled_prompts, user_labels)
            is_support = self._choose_support(
                labeled_pairs, query_pairs, is_test_user, rng
            )
            in_train = ~is_test_user[user_of_row[labeled_rows]]
            in_train |= is_support[pair_of_labeled_row]
            train = labeled_rows[in_train]
            test = query_rows[is_test_user[user_of_row[query_rows]]]
            if train.size == 0:
                raise ValueError(
                    "A split has an empty training fold: the users outside its test "
                    "fold have no labeled rows and n_support=0. Add labeled users or "
                    "raise n_support."
                )
            yield train, test

    def _validate_params(self):
        kfold = self.test_size is None
        low = 2 if kfold else 1
        if (
            not isinstance(self.n_splits, numbers.Integral)
            or isinstance(self.n_splits, bool)
            or self.n_splits < low
        ):
            raise ValueError(
                f"n_splits must be an integer >= {low} "
                f"{'for the k-fold (test_size=None)' if kfold else 'with test_size set'}"
                f"; got {self.n_splits!r}."
            )
        if not kfold:
            size = self.test_size
            is_int = isinstance(size, numbers.Integral) and not isinstance(size, bool)
            is_float = isinstance(size, numbers.Real) and not is_int
            if not (is_int and size >= 1) and not (is_float and 0 < size < 1):
                raise ValueError(
                    "test_size must be None, a float in (0, 1) or an int >= 1; "
                    f"got {size!r}."
                )
        if (
            not isinstance(self.n_support, numbers.Integral)
            or isinstance(self.n_support, bool)
            or self.n_support < 0
        ):
            raise ValueError(
                f"n_support must be a non-negative integer; got {self.n_support!r}."
            )
        if self.support not in SUPPORT_STRATEGIES:
            raise ValueError(
                f"support must be one of {SUPPORT_STRATEGIES}; got {self.support!r}."
            )
        if self.support == "nearest":
            _unit_rows(self.prompt_embeddings)

    def _extract(self, X, y, groups):
        """User label, prompt id and label of each row, validated."""
        if y is None:
            raise ValueError(
                "ColdStartSplit.split needs y: NaN marks the unlabeled query rows that "
                "make up the test fold."
            )
        X = check_id_input(X)
        n_rows = X.shape[0]
        prompt_ids = id_column(X, "prompt_id")
        y = check_feedback(y, n_rows)
        if groups is None:
            users = id_column(X, "user_id")
        else:
            users = np.asarray(groups)
            if users.ndim != 1 or users.shape[0] != n_rows:
                raise ValueError(
                    f"groups must be 1-d with one user label per row of X ({n_rows}); "
                    f"got shape {users.shape}."
                )
        if self.support == "nearest" and prompt_ids.size:
            n_embedded = np.shape(self.prompt_embeddings)[0]
            if prompt_ids.max() >= n_embedded:
                raise ValueError(
                    f"prompt_id={prompt_ids.max()} has no row in prompt_embeddings, "
                    f"which has {n_embedded} rows (one per prompt_id)."
                )
        return users, prompt_ids, y

    def _iter_test_users(self, candidates, rng):
        """Test-user codes of each split, drawn from the users with query rows."""
        n_candidates = candidates.size
        if self.test_size is None:
            if self.n_splits > n_candidates:
                raise ValueError(
                    f"Cannot have n_splits={self.n_splits} greater than the number of "
                    f"users with query rows ({n_candidates})."
                )
            shuffled = candidates[rng.permutation(n_candidates)]
            yield from np.array_split(shuffled, self.n_splits)
            return
        if isinstance(self.test_size, numbers.Integral):
            n_test = int(self.test_size)
        else:
            n_test = int(np.ceil(self.test_size * n_candidates))
        if n_test > n_candidates:
            raise ValueError(
                f"test_size={self.test_size!r} asks for {n_test} test users, but only "
                f"{n_candidates} users have query rows."
            )
        for _ in range(self.n_splits):
            yield np.sort(rng.choice(candidates, n_test, replace=False))

    def _check_enough_support(self, test_users, n_labeled_prompts, user_labels):
        if self.allow_fewer:
            return
        short = test_users[n_labeled_prompts[test_users] < self.n_support]
        if short.size:
            user = short[0]
            label = user_labels[user]
            # A Python scalar, so that the message shows 13 or 'bob', not np.int64(13).
            label = label.item() if isinstance(label, np.generic) else label
            raise ValueError(
                f"Test user {label!r} has {n_labeled_prompts[user]} labeled "
                f"prompt(s), fewer than n_support={self.n_support} ({short.size} test "
                "user(s) in this split are short). Lower n_support or pass "
                "allow_fewer=True to use what they have."
            )

    def _choose_support(self, labeled_pairs, query_pairs, is_test_user, rng):
        """Mark the support pairs: the ``n_support`` best-priority pairs per test user.

        Parameters
        ----------
        labeled_pairs, query_pairs : tuple of two ndarrays of int64
            Distinct (user code, prompt id) pairs with labeled rows, and with query
            rows.
        is_test_user : ndarray of bool, shape (n_users,)
        rng : RandomState

        Returns
        -------
        is_support : ndarray of bool, shape (n_labeled_pairs,)
        """
        is_support = np.zeros(labeled_pairs[0].size, dtype=bool)
        if self.n_support == 0:
            return is_support
        candidates = np.flatnonzero(is_test_user[labeled_pairs[0]])
        pair_user = labeled_pairs[0][candidates]
        priority = self._support_priority(
            (pair_user, labeled_pairs[1][candidates]), query_pairs, rng
        )
        order = np.lexsort((priority, pair_user))
        sorted_users = pair_user[order]
        positions = np.arange(order.size)
        is_first = np.ones(order.size, dtype=bool)
        is_first[1:] = sorted_users[1:] != sorted_users[:-1]
        rank = positions - np.maximum.accumulate(np.where(is_first, positions, 0))
        is_support[candidates[order[rank < self.n_support]]] = True
        return is_support

    def _support_priority(self, candidate_pairs, query_pairs, rng):
        """Priority of each candidate support pair; a user's lowest ones are chosen.

        This is the extension point of the support strategies: ``"random"`` draws a
        uniform priority; ``"nearest"`` returns, for each (user, prompt) of
        ``candidate_pairs``, the cosine distance from the prompt to the nearest of
        the user's query prompts found in ``query_pairs``.

        Parameters
        ----------
        candidate_pairs : tuple of two ndarrays of int64, shape (n_candidates,)
            User codes and prompt ids of the test users' labeled prompts.
        query_pairs : tuple of two ndarrays of int64
            User codes and prompt ids of all (user, prompt) pairs with query rows.
        rng : RandomState

        Returns
        -------
        priority : ndarray of float, shape (n_candidates,)
        """
        if self.support == "nearest":
            return _nearest_query_distance(
                _unit_rows(self.prompt_embeddings), candidate_pairs, query_pairs
            )
        return rng.random_sample(candidate_pairs[0].size)


def _user_prompt_pairs(user_codes, prompt_ids):
    """Distinct (user, prompt) pairs, sorted by user, and the pair of each row."""
    # One int64 key per pair: a single sort of integers, far faster than a
    # lexsort or a unique over rows of a 2-d array.
    n_prompt_ids = int(prompt_ids.max()) + 1 if prompt_ids.size else 1
    keys, pair_of_row = np.unique(
        user_codes.astype(np.int64) * n_prompt_ids + prompt_ids, return_inverse=True
    )
    return (keys // n_prompt_ids, keys % n_prompt_ids), pair_of_row.reshape(-1)


def _unit_rows(prompt_embeddings):
    """``prompt_embeddings`` as float rows of unit norm (zero rows stay zero)."""
    if prompt_embeddings is None:
        raise ValueError(
            "support='nearest' needs prompt_embeddings: one vector per prompt_id, "
            "such as TextEmbedder().fit_transform(corpus.prompts)."
        )
    vectors = np.asarray(prompt_embeddings)
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.dtype.kind not in "iuf":
        raise ValueError(
            "prompt_embeddings must be a numeric array of shape (n_prompts, dim); got "
            f"shape {vectors.shape} and dtype {vectors.dtype}."
        )
    if not np.isfinite(vectors).all():
        raise ValueError("prompt_embeddings must be finite; it contains NaN or inf.")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _nearest_query_distance(unit_vectors, candidate_pairs, query_pairs):
    """Cosine distance from each candidate (user, prompt) to its user's nearest query.

    ``query_pairs`` is sorted by user (see ``_user_prompt_pairs``); every candidate's
    user has at least one query prompt (test users are users with query rows).
    """
    users, prompts = candidate_pairs
    query_users, query_prompts = query_pairs
    first = np.searchsorted(query_users, users, side="left")
    n_queries = np.searchsorted(query_users, users, side="right") - first
    # One comparison per (candidate, query prompt of its user), candidate-major.
    candidate_of = np.repeat(np.arange(users.size), n_queries)
    group_start = np.cumsum(n_queries) - n_queries
    query_of = (
        first[candidate_of] + np.arange(candidate_of.size) - group_start[candidate_of]
    )
    similarity = np.empty(candidate_of.size)
    for start in range(0, candidate_of.size, _NEAREST_BLOCK):
        block = slice(start, start + _NEAREST_BLOCK)
        similarity[block] = np.einsum(
            "ij,ij->i",
            unit_vectors[prompts[candidate_of[block]]],
            unit_vectors[query_prompts[query_of[block]]],
        )
    if similarity.size == 0:
        return np.zeros(users.size)
    return 1.0 - np.maximum.reduceat(similarity, group_start)
