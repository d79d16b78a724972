"""Users' comparisons as flat arrays, and the support / query episodes drawn from them.

Every labeled (user, prompt) is a *group*; its comparisons are the pairs of its rows
with different labels. Groups are sorted by (user, prompt), pairs by group, so a
user's groups and a group's pairs are contiguous ranges, found by offsets. An episode
of meta-training takes a batch of users, splits each user's groups at random into a
support part and a query part, and returns the pairs of each part with the position
of their user in the batch.
"""

import numpy as np

from ..utils._preferences import comparison_pairs

__all__ = ["Comparisons", "draw_episodes"]


class Comparisons:
    """The comparison pairs of every user, grouped by user and (user, prompt).

    Build it from labeled rows with :meth:`from_rows`; :meth:`merged` replaces the
    comparisons of some users without recomputing the others'.

    Attributes
    ----------
    users : ndarray of int64, shape (n_users,)
        Every user with labeled rows, sorted; a user without a comparison has none.
    winners, losers : ndarray of int64, shape (n_pairs,)
        Row index of each pair's winner and loser, pairs sorted by group.
    group_user : ndarray of int64, shape (n_groups,)
        Position in ``users`` of each group's user; groups are sorted by user.
    group_offsets : ndarray of int64, shape (n_groups + 1,)
        Group ``g`` owns pairs ``group_offsets[g]:group_offsets[g + 1]``.
    user_group_offsets : ndarray of int64, shape (n_users + 1,)
        User ``u`` owns groups ``user_group_offsets[u]:user_group_offsets[u + 1]``.
    """

    def __init__(self, users, winners, losers, group_user, group_offsets):
        self.users = users
        self.winners, self.losers = winners, losers
        self.group_user, self.group_offsets = group_user, group_offsets
        self.user_group_offsets = np.searchsorted(group_user, np.arange(users.size + 1))

    @classmethod
    def from_rows(cls, ids, y):
        """Comparisons of labeled rows ``ids`` (n_rows, 3) with labels ``y``.

        Row indices of the pairs are positions in ``ids``.
        """
        winners, losers = comparison_pairs(ids[:, :2], y)
        users = np.unique(ids[:, 0])
        # comparison_pairs sorts pairs by (user_id, prompt_id): groups are runs.
        keys = ids[winners, :2]
        new_group = np.ones(keys.shape[0], dtype=bool)
        new_group[1:] = (keys[1:] != keys[:-1]).any(axis=1)
        starts = np.flatnonzero(new_group)
        return cls(
            users,
            winners,
            losers,
            np.searchsorted(users, keys[starts, 0]),
            np.append(starts, keys.shape[0]),
        )

    @property
    def n_groups(self):
        """Labeled prompts of each user that hold at least one comparison."""
        return np.diff(self.user_group_offsets)

    def merged(self, other, renumber):
        """These comparisons with the users of ``other`` replaced by (or added as) theirs.

        Parameters
        ----------
        other : Comparisons
            Row indices already in the new numbering.
        renumber : ndarray of int64
            New row index of each old row; only rows of users kept are looked up.

        Returns
        -------
        merged : Comparisons
        """
        kept_user = ~np.isin(self.users, other.users)
        kept_group = kept_user[self.group_user]
        group_users = np.concatenate(
            [self.users[self.group_user[kept_group]], other.users[other.group_user]]
        )
        n_old = self.winners.size
        starts = np.concatenate(
            [self.group_offsets[:-1][kept_group], other.group_offsets[:-1] + n_old]
        )
        stops = np.concatenate(
            [self.group_offsets[1:][kept_group], other.group_offsets[1:] + n_old]
        )
        # Each part is sorted by (user, prompt) and no user is in both.
        order = np.argsort(group_users, kind="stable")
        pairs, _ = _expand(starts[order], stops[order])
        users = np.union1d(self.users[kept_user], other.users)
        winners = np.concatenate([renumber[self.winners], other.winners])
        losers = np.concatenate([renumber[self.losers], other.losers])
        return Comparisons(
            users,
            winners[pairs],
            losers[pairs],
            np.searchsorted(users, group_users[order]),
            np.append(0, np.cumsum(stops[order] - starts[order])),
        )

    def user_pairs(self, user_positions):
        """Pairs of the users at ``user_positions`` of ``users``, all their groups.

        Returns
        -------
        pairs : ndarray of int64, shape (n_pairs,)
            Indices into ``winners`` / ``losers``.
        owner : ndarray of int64, shape (n_pairs,)
            Position in ``user_positions`` of each pair's user.
        """
        first = self.user_group_offsets[user_positions]
        last = self.user_group_offsets[user_positions + 1]
        return _expand(self.group_offsets[first], self.group_offsets[last])


def draw_episodes(comparisons, user_positions, rng, *, max_support, max_query):
    """Split each user's groups into a random support part and a query part.

    Each user gets a support size drawn uniformly from ``1..max_support``, capped at
    one less than their number of groups so that at least one group is left for the
    query (a user with one group has an empty support: an episode of the prior); the
    query part is the remaining groups, at most ``max_query`` of them if set.

    Parameters
    ----------
    comparisons : Comparisons
    user_positions : ndarray of int64, shape (n_batch,)
        Users of the batch, as positions in ``comparisons.users``; each has at least
        two groups.
    rng : numpy.random.Generator

    Returns
    -------
    support, query : tuple of (pairs, owner)
        Pair indices into ``comparisons.winners`` and the position of each pair's
        user in ``user_positions``.
    """
    first = comparisons.user_group_offsets[user_positions]
    n_groups = comparisons.user_group_offsets[user_positions + 1] - first
    n_support = np.minimum(
        rng.integers(1, max_support + 1, n_groups.size), n_groups - 1
    )
    groups, owner = _expand(first, first + n_groups)
    # A random rank of each group within its user: the first n_support are support.
    order = np.lexsort((rng.random(groups.size), owner))
    rank = np.empty(groups.size, dtype=np.int64)
    rank[order] = np.arange(groups.size) - np.repeat(
        np.cumsum(n_groups) - n_groups, n_groups
    )
    in_support = rank < n_support[owner]
    in_query = ~in_support
    if max_query is not None:
        in_query &= rank < n_support[owner] + max_query
    parts = []
    for chosen in (in_support, in_query):
        pairs, group_index = _expand(
            comparisons.group_offsets[groups[chosen]],
            comparisons.group_offsets[groups[chosen] + 1],
        )
        parts.append((pairs, owner[chosen][group_index]))
    return parts[0], parts[1]


def _expand(starts, stops):
    """Concatenated ``arange(starts[i], stops[i])`` and the ``i`` of each element."""
    lengths = stops - starts
    owner = np.repeat(np.arange(lengths.size), lengths)
    offsets = np.cumsum(lengths) - lengths
    return starts[owner] + np.arange(owner.size) - offsets[owner], owner
