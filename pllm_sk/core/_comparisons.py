"""Comparisons from labels, and the per-user store that every family keeps them in.

Every preference estimator learns from within-group comparisons (a group is one
(user, prompt)): the pairs of rows of the same group whose labels differ, the
higher-labeled row the winner. :func:`comparisons` enumerates them, once, with the
label levels the rankers need; :class:`UserComparisons` keeps per-comparison data
grouped by user, so that ``partial_fit`` can add new or returning users and
``predict`` can adapt to any user the estimator has seen.
"""

from typing import NamedTuple

import numpy as np

__all__ = [
    "Comparisons",
    "PairDifferences",
    "UserComparisons",
    "comparisons",
    "expand_ranges",
    "pair_differences",
    "pooled_differences",
    "pair_weights",
    "positions_in",
    "require_comparisons",
]

# Rows per block of the blockwise passes (pair_differences, _same_rows,
# _first_rows, _pairs_of_runs): 2.5 MiB of float32 rows with 10 features.
_GATHER_BLOCK = 1 << 16
# Pairs per block of pooled_differences's counts (one bincount of all the
# (item, slot) keys per block: blocks of 1M pairs keep those adds few).
_COUNT_BLOCK = 1 << 20
# Label levels up to which _dense_labels codes by comparisons, not a binary search.
_FEW_LEVELS = 8


class Comparisons(NamedTuple):
    """Within-(user, prompt) comparisons of labeled rows and their label levels."""

    users: np.ndarray  # distinct user ids, sorted
    group_of_row: np.ndarray  # (user, prompt) group of each row, groups sorted
    group_user: np.ndarray  # position in ``users`` of each group's user
    level: np.ndarray  # dense rank of each row's label in its group, 0 = lowest
    n_levels: np.ndarray  # distinct labels of each group
    winners: np.ndarray  # row of the chosen side of each pair
    losers: np.ndarray  # row of the rejected side of each pair
    top: np.ndarray  # whether each pair's winner has its group's top label


def comparisons(ids, y, *, transitive_reduction=False):
    """Every pair of rows of the same (user, prompt) with different labels.

    Rows with tied labels give no pair. Pairs are ordered by user, then prompt, then
    decreasing winner label (rows of equal labels in their order in ``ids``). A
    candidate (user, prompt, response) given twice with different labels is an
    error; given twice with the same label, it counts twice.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
        ``user_id``, ``prompt_id``, ``response_id`` of labeled rows.
    y : ndarray of shape (n_rows,)
        Their labels, none NaN; larger is better within a (user, prompt).
    transitive_reduction : bool, default=False
        Keep only the pairs whose labels are consecutive distinct levels of their
        group: the smallest set of pairs that implies all the others by
        transitivity. Labels (1, 0.5, 0.5, 0) give the 4 pairs 1 > 0.5 and
        0.5 > 0 instead of 5.

    Returns
    -------
    comparisons : Comparisons

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.core._comparisons import comparisons
    >>> ids = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2], [1, 5, 0], [1, 5, 1]])
    >>> pairs = comparisons(ids, np.array([1.0, 0.0, 0.5, 0.0, 1.0]))
    >>> pairs.winners.tolist(), pairs.losers.tolist()
    ([0, 0, 2, 4], [2, 1, 1, 3])
    >>> pairs.level.tolist(), pairs.top.tolist()
    ([2, 0, 1, 0, 1], [True, True, False, True])
    """
    users, key = _dense_codes(ids[:, 0])
    n_prompt_keys = int(ids[:, 1].max()) + 1 if ids.shape[0] else 1
    # One stable sort by (user, prompt, decreasing label), on a single int64 key:
    # rows of equal labels keep their order, and rows already grouped by user and
    # prompt (as simulate_feedback gives them) sort in nearly linear time. The key
    # is built and then divided back in place: at 4M rows every int64 temporary is
    # 32 MB of memory new to the process.
    labels, label_code = _dense_labels(y)
    key *= n_prompt_keys
    key += ids[:, 1]
    key *= labels.size
    key += labels.size - 1
    key -= label_code
    del label_code
    order = np.argsort(key, kind="stable")
    sorted_key = np.take(key, order)
    del key
    n_rows = order.size
    # Runs of equal labels within a group, then the groups: (user, prompt).
    new_run = np.ones(n_rows, dtype=bool)
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=new_run[1:])
    sorted_key //= labels.size
    new_group = np.ones(n_rows, dtype=bool)
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=new_group[1:])
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, n_rows))
    group_user = sorted_key[starts] // n_prompt_keys
    del sorted_key
    # Rank of each row's label run from the top of its group.
    rank_from_top = np.cumsum(new_run & ~new_group)
    rank_from_top -= np.repeat(rank_from_top[starts], sizes)
    del new_group
    n_levels = rank_from_top[starts + sizes - 1] + 1
    # The rows of a label run all beat the same rows: those from the end of the run
    # to the end of its group (to the end of the next run down, with the transitive
    # reduction, the smallest set that implies the others).
    run_starts = np.flatnonzero(new_run)
    del new_run
    run_sizes = np.diff(np.append(run_starts, n_rows))
    run_ends = run_starts + run_sizes
    beaten = np.repeat(starts + sizes, n_levels) - run_ends  # a group's runs: its levels
    group_of_sorted = np.repeat(np.arange(starts.size), sizes)
    _check_one_label_per_candidate(
        ids, y, order, group_of_sorted, (run_ends, beaten, run_sizes)
    )
    if transitive_reduction:
        beaten = np.where(beaten > 0, np.append(run_sizes[1:], 0), 0)
    lengths, second = _pairs_of_runs(run_ends, beaten, run_sizes)
    del run_ends, beaten, run_sizes
    top = np.repeat(rank_from_top == 0, lengths)
    winners = np.repeat(order, lengths)
    del lengths
    # In place: each index is read before its slot is written ("clip" leaves
    # the valid indices as they are and, unlike "raise", needs no buffer).
    losers = np.take(order, second, out=second, mode="clip")
    level = np.empty(n_rows, dtype=np.int64)
    rank_from_top -= np.repeat(n_levels - 1, sizes)
    level[order] = np.negative(rank_from_top, out=rank_from_top)
    del rank_from_top
    group_of_row = np.empty(n_rows, dtype=np.int64)
    group_of_row[order] = group_of_sorted
    return Comparisons(
        users=users,
        group_of_row=group_of_row,
        group_user=group_user,
        level=level,
        n_levels=n_levels,
        winners=winners,
        losers=losers,
        top=top,
    )


def _pairs_of_runs(run_ends, beaten, run_sizes):
    """How many rows each sorted row beats, and which: the loser side of the pairs.

    Every row of run ``r`` beats the sorted rows ``run_ends[r] + arange(beaten[r])``.

    Returns
    -------
    lengths : ndarray of int64, shape (n_rows,)
        Rows beaten by each sorted row.
    second : ndarray of int64, shape (lengths.sum(),)
        The beaten sorted rows, row after row.
    """
    lengths = np.repeat(beaten, run_sizes)
    offsets = np.cumsum(lengths)
    offsets -= lengths
    second = np.repeat(np.repeat(run_ends, run_sizes) - offsets, lengths)
    del offsets
    # + arange(second.size), block by block: no full-size temporary.
    for start in range(0, second.size, _GATHER_BLOCK):
        block = second[start : start + _GATHER_BLOCK]
        block += np.arange(start, start + block.size)
    return lengths, second


def _check_one_label_per_candidate(ids, y, order, group_of_sorted, runs):
    """Raise if a candidate (user, prompt, response) is labeled twice, differently.

    With few responses per prompt, a count of each (group, response) finds the
    candidates given twice, and only their labels are compared. Otherwise, and to
    name the first offending pair, every comparison is: ``runs`` are the arguments
    of :func:`_pairs_of_runs` that give them all.
    """
    sorted_response = ids[order, 2]
    n_response_keys = int(sorted_response.max()) + 1 if order.size else 1
    n_keys = (int(group_of_sorted[-1]) + 1 if order.size else 0) * n_response_keys
    if n_keys <= 8 * order.size + 1_000_000:
        code = group_of_sorted * n_response_keys
        code += sorted_response
        del sorted_response
        counts = np.bincount(code, minlength=n_keys)
        if counts.max(initial=0) <= 1:
            return
        twice = np.flatnonzero(np.take(counts, code) > 1)
        code, labels = code[twice], y[order[twice]]
        by_code = np.argsort(code, kind="stable")
        code, labels = code[by_code], labels[by_code]
        if not ((code[1:] == code[:-1]) & (labels[1:] != labels[:-1])).any():
            return
        sorted_response = ids[order, 2]
    lengths, second = _pairs_of_runs(*runs)
    first = np.repeat(np.arange(order.size), lengths)
    same = np.take(sorted_response, first) == np.take(sorted_response, second)
    if same.any():
        pair = np.argmax(same)
        user_id, prompt_id, response_id = ids[order[first[pair]]].tolist()
        raise ValueError(
            f"The candidate (user_id={user_id}, prompt_id={prompt_id}, response_id="
            f"{response_id}) is labeled twice, {y[order[first[pair]]]:g} and "
            f"{y[order[second[pair]]]:g}: each candidate of a user's prompt takes one "
            "label."
        )


def _dense_labels(y):
    """The sorted distinct labels and the code of each label among them.

    Feedback has few distinct labels: they are found on a sample and checked on
    all rows, which costs a few comparisons (with many levels, a binary search) per
    row instead of a sort.
    """
    levels = np.unique(y[:: max(1, y.size // 100_000)])
    if levels.size <= _FEW_LEVELS:
        # min(searchsorted(levels, y), n_levels - 1) without a binary search per
        # row: the number of levels below y, the top one left out.
        codes = np.zeros(y.size, dtype=np.int64)
        for level in levels[:-1]:
            codes += y > level
    else:
        codes = np.minimum(np.searchsorted(levels, y), levels.size - 1)
    if y.size and not np.array_equal(levels[codes], y):
        levels, codes = np.unique(y, return_inverse=True)
    return levels, codes.reshape(-1)


def _dense_codes(values):
    """The sorted distinct ``values`` and the code of each value among them.

    ``np.unique(values, return_inverse=True)`` without a sort when the values are
    small non-negative integers (ids), by marking which occur. The codes are always
    a new int64 array: :func:`comparisons` builds its sort key in it, in place.
    """
    if values.size and 0 <= values.min() and values.max() < 4 * values.size + 1024:
        present = np.zeros(int(values.max()) + 1, dtype=bool)
        present[values] = True
        codes = np.cumsum(present) - 1
        return np.flatnonzero(present), codes[values]
    distinct, codes = np.unique(values, return_inverse=True)
    return distinct, codes.reshape(-1).astype(np.int64)


def pair_weights(structure, sample_weight):
    """Weight of each comparison: the mean of its two rows' ``sample_weight``.

    None when ``sample_weight`` is None or every weight is 1: the solvers' unweighted
    path, so that unit weights fit exactly as no weights. With equal weights on a
    prompt's rows, as feedback given at one time has, each comparison takes that
    weight.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.core._comparisons import comparisons, pair_weights
    >>> ids = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    >>> pairs = comparisons(ids, np.array([1.0, 0.0, 0.5]))
    >>> pair_weights(pairs, np.array([1.0, 3.0, 2.0])).tolist()
    [1.5, 2.0, 2.5]
    """
    if sample_weight is None or (sample_weight == 1.0).all():
        return None
    return 0.5 * (sample_weight[structure.winners] + sample_weight[structure.losers])


def require_comparisons(structure, estimator_name):
    """Raise unless ``structure`` (from :func:`comparisons`) holds a comparison."""
    if structure.winners.size == 0:
        raise ValueError(
            "y holds no comparison: no (user, prompt) has two labeled rows with "
            f"different labels, and {estimator_name} learns from within-(user, "
            "prompt) comparisons only."
        )


def expand_ranges(starts, stops):
    """Concatenated ``arange(starts[i], stops[i])`` and the ``i`` of each element.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.core._comparisons import expand_ranges
    >>> values, owner = expand_ranges(np.array([0, 5]), np.array([2, 8]))
    >>> values.tolist(), owner.tolist()
    ([0, 1, 5, 6, 7], [0, 0, 1, 1, 1])
    """
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(stops, dtype=np.int64) - starts
    owner = np.repeat(np.arange(lengths.size), lengths)
    offsets = np.cumsum(lengths) - lengths
    values = np.repeat(starts - offsets, lengths)
    values += np.arange(values.size)
    return values, owner


def positions_in(sorted_ids, ids):
    """Position of each of ``ids`` in the sorted distinct ``sorted_ids``, and a mask.

    Returns
    -------
    positions : ndarray of int64
        Valid indices into ``sorted_ids`` (0 where an id is absent).
    found : ndarray of bool
        Whether each id is in ``sorted_ids``.

    Examples
    --------
    >>> import numpy as np
    >>> from pllm_sk.core._comparisons import positions_in
    >>> positions, found = positions_in(np.array([3, 7]), np.array([7, 5, 3]))
    >>> positions.tolist(), found.tolist()
    ([1, 0, 0], [True, False, True])
    """
    ids = np.asarray(ids, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
    positions = np.searchsorted(sorted_ids, ids)
    positions[positions == sorted_ids.size] = 0
    found = sorted_ids[positions] == ids
    return np.where(found, positions, 0), found


def pooled_differences(ids, items, structure):
    """Winner-minus-loser item features of the comparisons, repeats merged.

    For a pooled fit (one preference for all users) only the multiset of
    differences matters. When the item features of a row depend on its
    ``(prompt_id, response_id)`` alone, as they do for every feature step of
    pllm_sk, two users' comparisons of the same two responses of a prompt have the
    same difference: each distinct one is kept once with its count, to be used as a
    pair weight. (PersonalLLM-sized feedback, 10,000 users x 50 best/worst prompts,
    has 13 times fewer distinct comparisons than comparisons.) Otherwise every
    comparison is returned, with no counts.

    Parameters
    ----------
    ids : ndarray of int64, shape (n_rows, 3)
    items : ndarray of shape (n_rows, n_item_features)
        float64, or float32 (widened before the subtraction: the same
        differences as from the float64 items).
    structure : Comparisons
        ``comparisons(ids, y)``.

    Returns
    -------
    differences : ndarray of float64, shape (n_distinct, n_item_features)
    counts : ndarray of float64, shape (n_distinct,) or None
    """
    winners, losers = structure.winners, structure.losers
    n_responses = int(ids[:, 2].max()) + 1 if ids.shape[0] else 1
    n_items = (int(ids[:, 1].max()) + 1 if ids.shape[0] else 1) * n_responses
    # Dense tables only: the id ranges of a corpus, not of arbitrary integers.
    if n_items * n_responses > 8 * max(winners.size, 1) + 1_000_000:
        return pair_differences(items, winners, losers, np.float64), None
    item_key = ids[:, 1] * n_responses
    item_key += ids[:, 2]
    first_row = _first_rows(item_key, n_items)
    if not _same_rows(items, first_row, item_key):
        return pair_differences(items, winners, losers, np.float64), None
    # Each pair's (winner item, loser slot) counted block by block: full-size keys
    # would be memory new to the process.
    counts = np.zeros(n_items * n_responses, dtype=np.int64)
    for start in range(0, winners.size, _COUNT_BLOCK):
        block = slice(start, start + _COUNT_BLOCK)
        pair_key = np.take(item_key, winners[block])
        pair_key *= n_responses
        pair_key += ids[losers[block], 2]  # np.take would copy the strided column
        counts += np.bincount(pair_key, minlength=counts.size)
    distinct = np.flatnonzero(counts)
    winner_item = distinct // n_responses
    loser_item = winner_item - winner_item % n_responses + distinct % n_responses
    differences = pair_differences(
        items, first_row[winner_item], first_row[loser_item], np.float64
    )
    return differences, counts[distinct].astype(np.float64)


def _first_rows(keys, n_keys):
    """The first index of each key in ``keys`` (0 for keys absent), block by block."""
    first = np.zeros(n_keys, dtype=np.int64)
    # Later writes win: the blocks from the last, each reversed.
    for start in reversed(range(0, keys.size, _GATHER_BLOCK)):
        stop = min(start + _GATHER_BLOCK, keys.size)
        first[keys[start:stop][::-1]] = np.arange(stop - 1, start - 1, -1)
    return first


def _same_rows(items, first_row, item_key):
    """Whether every row of ``items`` equals the first row of its item, block by block.

    A full-size gathered copy would be memory new to the process, whose page faults
    cost more than the comparison itself.
    """
    for start in range(0, item_key.size, _GATHER_BLOCK):
        block = slice(start, start + _GATHER_BLOCK)
        rows = np.take(first_row, item_key[block])
        if not np.array_equal(np.take(items, rows, axis=0), items[block]):
            return False
    return True


def pair_differences(vectors, winners, losers, dtype=np.float32, out=None):
    """``vectors[winners] - vectors[losers]`` in ``dtype``, without full-size temporaries.

    Each vector is rounded to ``dtype``, then the pairs are subtracted in ``dtype``:
    for float32 features (every feature step's output) and the float32 default,
    this is the exact difference rounded once, at half the memory of float64; with
    ``dtype=np.float64`` it is ``vectors[winners] - vectors[losers]`` itself. Pairs
    are gathered block by block: full-size temporaries (a rounded copy of the
    vectors, the gathered winners and losers) would be memory new to the process,
    whose page faults cost more than the gather. ``out``, an array of ``dtype``
    and shape ``(len(winners), n_features)``, receives the differences when given.
    """
    vectors = np.asarray(vectors)
    if out is None:
        out = np.empty((winners.size, vectors.shape[1]), dtype=dtype)
    for start in range(0, winners.size, _GATHER_BLOCK):
        block = slice(start, start + _GATHER_BLOCK)
        # np.take gathers rows two to four times faster than fancy indexing; the
        # subtraction rounds each side to dtype first, with no rounded copies.
        chosen = np.take(vectors, winners[block], axis=0)
        rejected = np.take(vectors, losers[block], axis=0)
        np.subtract(chosen, rejected, out=out[block], dtype=dtype)
    return out


class PairDifferences(NamedTuple):
    """``vectors[winners] - vectors[losers]`` in float64, gathered on demand.

    What :func:`~pllm_sk.core.fit_bradley_terry`'s grouped solver takes in place of
    the differences themselves: it gathers the pairs of each batch, so the
    (n_pairs, n_features) float64 array (500 MB at PersonalLLM's full size) is
    never built. :meth:`take` gives exactly the rows of
    ``pair_differences(vectors, winners, losers, np.float64)``.
    """

    vectors: np.ndarray  # (n_rows, n_features)
    winners: np.ndarray  # (n_pairs,) row of each pair's chosen side
    losers: np.ndarray  # (n_pairs,) row of each pair's rejected side

    @property
    def shape(self):
        """``(n_pairs, n_features)``, as the differences' array would have."""
        return (self.winners.size, self.vectors.shape[1])

    def take(self, pairs, out=None):
        """The float64 differences of the pairs at the indices ``pairs`` (written
        to ``out`` when given, see :func:`pair_differences`)."""
        return pair_differences(
            self.vectors, self.winners[pairs], self.losers[pairs], np.float64, out
        )


def _user_offsets(structure):
    """Where the pairs of each user of ``structure`` start, and the end: shape
    (n_users + 1,).

    The pairs come ordered by user: a bisection for every user at once, on the
    users of ``log2(n_pairs)`` pairs each, finds the first pair of each user (the
    owner of every pair would be a full-size array).
    """
    n_users, n_pairs = structure.users.size, structure.winners.size
    target = np.arange(n_users + 1)
    low = np.zeros(n_users + 1, dtype=np.int64)
    high = np.full(n_users + 1, n_pairs, dtype=np.int64)
    searching = low < high
    while searching.any():
        middle = (low + high) // 2
        pairs = np.take(structure.winners, np.minimum(middle, n_pairs - 1))
        user = np.take(structure.group_user, np.take(structure.group_of_row, pairs))
        before = searching & (user < target)
        low = np.where(before, middle + 1, low)
        high = np.where(searching & ~before, middle, high)
        searching = low < high
    return low


class UserComparisons:
    """Comparisons grouped by user: ``columns[name][offsets[u]:offsets[u + 1]]``.

    Parameters
    ----------
    users : ndarray of int64
        Every user the store knows, sorted and distinct; a user may own no
        comparison (labeled rows that were all tied).
    owner : ndarray of int64, shape (n_comparisons,)
        User id of each comparison; every one must be in ``users``. Comparisons are
        kept in their given order within a user.
    **columns : ndarray with first axis of length n_comparisons
        Per-comparison data, for example feature differences and prompt ids.
    """

    def __init__(self, users, owner, **columns):
        owner = np.asarray(owner)
        self.users = np.asarray(users, dtype=np.int64)
        if (owner[1:] < owner[:-1]).any():
            order = np.argsort(owner, kind="stable")
            owner = owner[order]
            columns = {name: np.asarray(value)[order] for name, value in columns.items()}
        self.columns = {name: np.asarray(value) for name, value in columns.items()}
        # The owners are sorted and each is one of the users: each user's block starts
        # where the user would be inserted (a search per user, not per comparison).
        self.offsets = np.append(
            np.searchsorted(owner, self.users, side="left"), owner.size
        ).astype(np.int64)

    @classmethod
    def from_comparisons(cls, ids, structure, *, rows=False, **columns):
        """A store of the comparisons of labeled rows, with per-comparison columns.

        Every store keeps the ``"prompt"`` of each comparison and whether its winner
        has its prompt's ``"top"`` label.

        Parameters
        ----------
        ids : ndarray of int64, shape (n_rows, 3)
            The labeled rows.
        structure : Comparisons
            ``comparisons(ids, y)``.
        rows : bool, default=False
            Also keep the ``"winner"`` and ``"loser"`` row indices into ``ids``.
        **columns : ndarray with first axis of length n_comparisons
            Further per-comparison data, in the order of ``structure``'s pairs.
        """
        winners, losers = structure.winners, structure.losers
        if rows:
            columns = dict(columns, winner=winners, loser=losers)
        # The pairs come ordered by user: the store keeps them in that order, and
        # finds where each user's pairs start without the owner of every pair.
        store = cls.__new__(cls)
        store.users = np.asarray(structure.users, dtype=np.int64)
        # np.take of a column is two times faster than ids[winners, 1].
        store.columns = {
            name: np.asarray(value)
            for name, value in dict(
                prompt=np.take(ids[:, 1], winners), top=structure.top, **columns
            ).items()
        }
        store.offsets = _user_offsets(structure)
        return store

    @property
    def counts(self):
        """Number of comparisons of each user of ``users``."""
        return np.diff(self.offsets)

    def owner(self):
        """Position in ``users`` of the owner of each comparison."""
        return np.repeat(np.arange(self.users.size), self.counts)

    def merged(self, other):
        """A new store with the users and comparisons of both; ``self``'s come first."""
        return UserComparisons(
            np.union1d(self.users, other.users),
            np.concatenate([self.users[self.owner()], other.users[other.owner()]]),
            **{
                name: np.concatenate([value, other.columns[name]])
                for name, value in self.columns.items()
            },
        )

    def without(self, user_ids):
        """A new store without the given users (and their comparisons)."""
        kept_user = ~np.isin(self.users, user_ids)
        kept = kept_user[self.owner()]
        return UserComparisons(
            self.users[kept_user],
            self.users[self.owner()][kept],
            **{name: value[kept] for name, value in self.columns.items()},
        )

    def positions(self, user_ids):
        """Positions of ``user_ids`` in ``users`` and whether each is known."""
        return positions_in(self.users, user_ids)

    def rows(self, positions):
        """Comparison indices of the users at ``positions``, concatenated in that order.

        Returns
        -------
        rows : ndarray of int64
        counts : ndarray of int64, shape (len(positions),)
        """
        positions = np.asarray(positions, dtype=np.int64)
        starts, counts = self.offsets[positions], self.counts[positions]
        return expand_ranges(starts, starts + counts)[0], counts

    def prompt_groups(self):
        """The (user, prompt) groups of the comparisons: runs of one user and prompt.

        Needs prompts contiguous within each user, as :meth:`from_comparisons`
        stores them.

        Returns
        -------
        group_offsets : ndarray of int64, shape (n_groups + 1,)
            Group ``g`` owns comparisons ``group_offsets[g]:group_offsets[g + 1]``.
        user_group_offsets : ndarray of int64, shape (n_users + 1,)
            The user at position ``u`` owns groups
            ``user_group_offsets[u]:user_group_offsets[u + 1]``.
        """
        owner, prompt = self.owner(), self.columns["prompt"]
        new_group = np.ones(owner.size, dtype=bool)
        new_group[1:] = (owner[1:] != owner[:-1]) | (prompt[1:] != prompt[:-1])
        starts = np.flatnonzero(new_group)
        group_offsets = np.append(starts, owner.size)
        user_group_offsets = np.searchsorted(
            owner[starts], np.arange(self.users.size + 1)
        )
        return group_offsets, user_group_offsets
