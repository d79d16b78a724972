"""Splitters: new users (few support prompts in, query candidates out), and seen users."""

import numbers

import numpy as np
from sklearn.model_selection import BaseCrossValidator
from sklearn.utils import check_random_state

from ..utils import (
    Interval,
    StrOptions,
    check_feedback,
    check_id_input,
    id_column,
    validate_arguments,
)

__all__ = ["SUPPORT_STRATEGIES", "ColdStartSplit", "SeenUserSplit"]

# How a test user's support prompts are chosen; see ColdStartSplit._support_priority.
SUPPORT_STRATEGIES = ("random", "nearest")

# Candidate (user, prompt) x query-prompt comparisons per block of the "nearest"
# support: bounds the memory of the gathered embeddings.
_NEAREST_BLOCK = 65_536

# The parameters both splitters draw their folds with (see _iter_test_groups).
_FOLD_CONSTRAINTS = {
    "n_splits": [Interval(numbers.Integral, 1, None, closed="left")],
    "test_size": [
        Interval(numbers.Real, 0, 1, closed="neither"),
        Interval(numbers.Integral, 1, None, closed="left"),
        None,
    ],
}


class _UserFeedbackSplit(BaseCrossValidator):
    """The interface that ColdStartSplit and SeenUserSplit share.

    Subclasses define ``_parameter_constraints``, ``_validate_params`` and
    ``_split``, which yields the folds of valid parameters.
    """

    # Routing requests ``groups`` by default, as GroupKFold does; ``split`` falls
    # back to the user_id column of X when none is passed.
    __metadata_request__split = {"groups": True}

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
            Feedback labels, NaN for unlabeled rows. Required: training folds hold
            labeled rows only.
        groups : array-like of shape (n_rows,), default=None
            User label of each row; ``None`` uses the ``user_id`` column of ``X``.

        Yields
        ------
        train : ndarray of int
            Positions of the training rows, as the class description says.
        test : ndarray of int
            Positions of the test rows, as the class description says.
        """
        self._validate_params()
        yield from self._split(X, y, groups)


class ColdStartSplit(_UserFeedbackSplit):
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

    _parameter_constraints = {
        **_FOLD_CONSTRAINTS,
        "n_support": [Interval(numbers.Integral, 0, None, closed="left")],
        "support": [StrOptions(set(SUPPORT_STRATEGIES))],
        "allow_fewer": ["boolean"],
        "random_state": ["random_state"],
        "prompt_embeddings": ["array-like", None],
    }

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

    def _split(self, X, y, groups):
        """The folds: (labeled rows of the others and support rows, query rows)."""
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
        _check_parameters(self)
        if self.test_size is None and self.n_splits < 2:
            raise ValueError(
                "n_splits must be at least 2 for the k-fold (test_size=None); got "
                f"{self.n_splits!r}."
            )
        if self.support == "nearest":
            _unit_rows(self.prompt_embeddings)

    def _extract(self, X, y, groups):
        """User label, prompt id and label of each row, validated."""
        _, users, prompt_ids, y = _extract_rows(
            X, y, groups, "ColdStartSplit", "the unlabeled query rows that make up the test fold"
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
        yield from _iter_test_groups(
            candidates, self.n_splits, self.test_size, rng, ("users", "have query rows")
        )

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


class SeenUserSplit(_UserFeedbackSplit):
    """Split prompts for users already seen: test prompts out of every training row.

    The counterpart of :class:`ColdStartSplit` for *seen* users: a group k-fold
    over prompts rather than users. Rows of ``X`` are (user, prompt, response)
    candidates and ``y`` their feedback, NaN for unlabeled rows. In each split a
    set of *test prompts* is held out:

    - the training fold is every labeled row of every other prompt, all users
      included;
    - the test fold is every row, labeled or not, of each *test pair*: a (user,
      prompt) of a test prompt whose rows hold every candidate (every
      ``response_id`` of ``X``; the personal scorers rank all K of them), of a
      user in ``test_users`` (all users by default) who has training rows in the
      split (a seen user);
    - the other rows of the test prompts (other users', unseen users', pairs
      with only some candidates) are in neither fold.

    No row of a test prompt ever reaches the training fold, whoever its user;
    the test users are in both folds.

    The test prompts are drawn from the *eligible* prompts, those with at least
    one (user, prompt) with every candidate among ``test_users``. With
    ``test_prompts`` given there is one split, on those prompts. Otherwise, with
    ``test_size=None`` this is a k-fold over the eligible prompts, shuffled with
    ``random_state`` (like :class:`~sklearn.model_selection.GroupKFold` over
    prompts); with ``test_size`` set, each split draws its test prompts at
    random, independently of the other splits (like
    :class:`~sklearn.model_selection.GroupShuffleSplit`).

    Parameters
    ----------
    n_splits : int, default=5
        Number of splits; at least 2 for the k-fold (``test_size=None``), at least 1
        otherwise. Not used with ``test_prompts``.
    test_size : float, int or None, default=None
        ``None`` for the k-fold over prompts; a float in (0, 1) for the share of the
        eligible prompts drawn as test prompts in each split (rounded up), or an
        int for their number.
    test_prompts : array-like of int, default=None
        The prompt ids of a single split's test prompts, for example
        ``corpus.prompt_ids("test")`` to evaluate on the corpus's test split; the
        ids absent from ``X`` are skipped. Not combined with ``test_size``.
    test_users : array-like, default=None
        The users whose pairs may be in the test fold (labels as in ``groups``,
        else ``user_id`` values); ``None`` for every user. Training rows come from
        all users either way.
    random_state : int, RandomState instance or None, default=None
        Shuffles the prompts of the k-fold and draws the test prompts of
        ``test_size`` mode. Pass an int for splits that are the same on every call
        of :meth:`split`.

    Notes
    -----
    A user is identified by ``groups`` when it is given (metadata routing requests
    it by default, as for :class:`ColdStartSplit`, so that the same ``groups``
    serve both splitters), otherwise by the ``user_id`` column of ``X`` (the first
    column of an array). Prompts and responses are identified by the
    ``prompt_id`` and ``response_id`` columns of ``X``.

    A k-fold split whose test prompts only have pairs of unseen users (or of
    users outside ``test_users``) has an empty test fold and raises a
    ``ValueError``, as does a split without training rows.

    See Also
    --------
    ColdStartSplit : New users, with a few support prompts.
    sklearn.model_selection.GroupKFold : K-fold over groups.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from pllm_sk.model_selection import SeenUserSplit
    >>> # Two users; prompts 0-2 labeled by both (2 candidates each), prompt 3 by
    >>> # user 0 only.
    >>> X = pd.DataFrame({
    ...     "user_id": [0] * 8 + [1] * 6,
    ...     "prompt_id": [0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1, 2, 2],
    ...     "response_id": [0, 1] * 7,
    ... })
    >>> y = np.array([1.0, 0.0] * 7)
    >>> cv = SeenUserSplit(test_prompts=[2])
    >>> train, test = next(cv.split(X, y))
    >>> sorted(set(X.prompt_id.iloc[train])), sorted(set(X.user_id.iloc[test]))
    ([0, 1, 3], [0, 1])
    """

    _parameter_constraints = {
        **_FOLD_CONSTRAINTS,
        "test_prompts": ["array-like", None],
        "test_users": ["array-like", None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_splits=5,
        *,
        test_size=None,
        test_prompts=None,
        test_users=None,
        random_state=None,
    ):
        self.n_splits = n_splits
        self.test_size = test_size
        self.test_prompts = test_prompts
        self.test_users = test_users
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Return the number of splits: 1 with ``test_prompts``, else ``n_splits``.

        ``X``, ``y`` and ``groups`` are ignored, as by every splitter.
        """
        return 1 if self.test_prompts is not None else self.n_splits

    def _split(self, X, y, groups):
        """The folds: (labeled rows off the test prompts, rows of the test pairs)."""
        X, users, prompt_ids, y = _extract_rows(
            X, y, groups, "SeenUserSplit", "the unlabeled rows, which no training fold holds"
        )
        eligible = _has_every_candidate(users, prompt_ids, id_column(X, "response_id"))
        if self.test_users is not None:
            eligible &= np.isin(users, np.asarray(self.test_users))
        candidates = np.unique(prompt_ids[eligible])
        if candidates.size == 0:
            raise ValueError(
                "No (user, prompt) of X holds every candidate response"
                + ("" if self.test_users is None else " among test_users")
                + ": SeenUserSplit's test fold is made of such pairs, which the "
                "personal scorers rank."
            )
        labeled = ~np.isnan(y)
        rng = check_random_state(self.random_state)
        for test_prompts in self._iter_test_prompts(candidates, rng):
            is_test_prompt = np.isin(prompt_ids, test_prompts)
            train = np.flatnonzero(labeled & ~is_test_prompt)
            if train.size == 0:
                raise ValueError(
                    "A split has an empty training fold: no labeled row is outside "
                    "its test prompts."
                )
            seen = np.isin(users, users[train])
            test = np.flatnonzero(is_test_prompt & eligible & seen)
            if test.size == 0:
                raise ValueError(
                    "A split has an empty test fold: none of its test prompts has a "
                    "(user, prompt) with every candidate, of a user in test_users "
                    "with training rows (unseen users: evaluate them with "
                    "ColdStartSplit)."
                )
            yield train, test

    def _validate_params(self):
        _check_parameters(self)
        if self.test_prompts is not None:
            if self.test_size is not None:
                raise ValueError(
                    "test_prompts fixes the test prompts of a single split; it does "
                    f"not combine with test_size={self.test_size!r}."
                )
            return
        if self.test_size is None and self.n_splits < 2:
            raise ValueError(
                "n_splits must be at least 2 for the k-fold (test_size=None); got "
                f"{self.n_splits!r}."
            )

    def _iter_test_prompts(self, candidates, rng):
        """Test prompt ids of each split, drawn from the eligible prompts."""
        if self.test_prompts is not None:
            yield np.asarray(self.test_prompts).reshape(-1)
            return
        yield from _iter_test_groups(
            candidates,
            self.n_splits,
            self.test_size,
            rng,
            ("prompts", "have a (user, prompt) with every candidate"),
        )


def _check_parameters(splitter):
    """Check a splitter's parameters against its ``_parameter_constraints``."""
    validate_arguments(
        splitter._parameter_constraints,
        {name: getattr(splitter, name) for name in splitter._parameter_constraints},
        type(splitter).__name__,
    )


def _extract_rows(X, y, groups, splitter_name, what_nan_marks):
    """``X`` checked, and the user label, prompt id and label of each row.

    ``groups``, when given, labels the users; otherwise the ``user_id`` column does.
    """
    if y is None:
        raise ValueError(
            f"{splitter_name}.split needs y: NaN marks {what_nan_marks}."
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
    return X, users, prompt_ids, y


def _iter_test_groups(candidates, n_splits, test_size, rng, description):
    """The test groups (users or prompts) of each split, drawn from ``candidates``.

    ``test_size=None``: a shuffled k-fold; otherwise ``n_splits`` independent draws
    of ``test_size`` groups (a share, rounded up, or a number), each sorted.
    ``description`` is ``(noun, qualifier)`` of the candidates, for the errors.
    """
    noun, qualifier = description
    n_candidates = candidates.size
    if test_size is None:
        if n_splits > n_candidates:
            raise ValueError(
                f"Cannot have n_splits={n_splits} greater than the number of {noun} "
                f"that {qualifier} ({n_candidates})."
            )
        shuffled = candidates[rng.permutation(n_candidates)]
        yield from np.array_split(shuffled, n_splits)
        return
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
    else:
        n_test = int(np.ceil(test_size * n_candidates))
    if n_test > n_candidates:
        raise ValueError(
            f"test_size={test_size!r} asks for {n_test} test {noun}, but only "
            f"{n_candidates} {noun} {qualifier}."
        )
    for _ in range(n_splits):
        yield np.sort(rng.choice(candidates, n_test, replace=False))


def _has_every_candidate(users, prompt_ids, response_ids):
    """Whether each row's (user, prompt) has a row for every response id of ``X``."""
    response_labels, response_codes = np.unique(response_ids, return_inverse=True)
    user_codes = np.unique(users, return_inverse=True)[1].reshape(-1)
    _, pair_of_row = _user_prompt_pairs(user_codes, prompt_ids)
    n_responses = response_labels.size
    distinct = np.unique(pair_of_row.astype(np.int64) * n_responses + response_codes.reshape(-1))
    n_candidates = np.bincount(distinct // n_responses, minlength=pair_of_row.max() + 1)
    return n_candidates[pair_of_row] == n_responses


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
