"""Support / query episodes of meta-training, drawn from the users' comparisons.

Every labeled (user, prompt) is a *group*; its comparisons are the pairs of its rows
with different labels, stored user by user and group by group
(:class:`~pllm_sk.core._comparisons.UserComparisons`). An episode of meta-training
takes a batch of users, splits each user's groups at random into a support part and
a query part, and returns the comparisons of each part with the position of their
user in the batch.
"""

import numpy as np

from ..core import expand_ranges

__all__ = ["draw_episodes"]


def draw_episodes(groups, user_positions, rng, *, max_support, max_query):
    """Split each user's groups into a random support part and a query part.

    Each user gets a support size drawn uniformly from ``1..max_support``, capped at
    one less than their number of groups so that at least one group is left for the
    query (a user with one group has an empty support: an episode of the prior); the
    query part is the remaining groups, at most ``max_query`` of them if set.

    Parameters
    ----------
    groups : tuple of two ndarrays of int64
        ``(group_offsets, user_group_offsets)`` of the store of comparisons, from
        :meth:`~pllm_sk.core._comparisons.UserComparisons.prompt_groups`.
    user_positions : ndarray of int64, shape (n_batch,)
        Users of the batch, as positions in the store's ``users``; each has at least
        two groups.
    rng : numpy.random.Generator

    Returns
    -------
    support, query : tuple of (pairs, owner)
        Comparison indices into the store and the position of each comparison's user
        in ``user_positions``.
    """
    group_offsets, user_group_offsets = groups
    first = user_group_offsets[user_positions]
    n_groups = user_group_offsets[user_positions + 1] - first
    n_support = np.minimum(
        rng.integers(1, max_support + 1, n_groups.size), n_groups - 1
    )
    group, owner = expand_ranges(first, first + n_groups)
    # A random rank of each group within its user: the first n_support are support.
    # ``owner`` is nondecreasing, so sorting ``owner + u`` (u uniform in [0, 1)) is
    # sorting by owner, then u, as np.lexsort would, 13 times faster; the stable sort
    # breaks the ties of rounding (u within 1e-13 of each other) by position.
    order = np.argsort(owner + rng.random(group.size), kind="stable")
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = np.arange(group.size) - np.repeat(
        np.cumsum(n_groups) - n_groups, n_groups
    )
    in_support = rank < n_support[owner]
    in_query = ~in_support
    if max_query is not None:
        in_query &= rank < n_support[owner] + max_query
    parts = []
    for chosen in (in_support, in_query):
        pairs, group_index = expand_ranges(
            group_offsets[group[chosen]], group_offsets[group[chosen] + 1]
        )
        parts.append((pairs, owner[chosen][group_index]))
    return parts[0], parts[1]
