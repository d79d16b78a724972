"""Comparisons from labels and the per-user store, on cases small enough to check by hand."""

import itertools

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from pllm_sk.core import _comparisons
from pllm_sk.core._comparisons import (
    UserComparisons,
    comparisons,
    pair_differences,
    pooled_differences,
    positions_in,
)


def _pair_set(structure):
    return set(zip(structure.winners.tolist(), structure.losers.tolist()))


def _one_prompt(n_rows):
    return np.column_stack([np.zeros(n_rows), np.zeros(n_rows), np.arange(n_rows)]).astype(
        np.int64
    )


def test_pairs_best_worst_all_and_reduced():
    # One prompt of 8 candidates: row 1 best, row 4 worst, the others 0.5.
    y = np.array([0.5, 1.0, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5])
    middles = [0, 2, 3, 5, 6, 7]
    structure = comparisons(_one_prompt(8), y)
    expected = {(1, m) for m in middles} | {(m, 4) for m in middles} | {(1, 4)}
    assert _pair_set(structure) == expected
    assert structure.winners.size == 13
    # The best's pairs are the top ones; levels count distinct labels from the bottom.
    assert structure.top.tolist() == [True] * 7 + [False] * 6
    assert_array_equal(structure.level, [1, 2, 1, 1, 0, 1, 1, 1])
    assert_array_equal(structure.n_levels, [3])

    reduced = comparisons(_one_prompt(8), y, transitive_reduction=True)
    assert _pair_set(reduced) == expected - {(1, 4)}


def test_pairs_ranking_all_and_reduced():
    # y = number of candidates ranked below: row 3 first, then 0, 2, 1.
    y = np.array([2.0, 0.0, 1.0, 3.0])
    assert _pair_set(comparisons(_one_prompt(4), y)) == {
        (3, 0), (3, 2), (3, 1), (0, 2), (0, 1), (2, 1),
    }
    reduced = comparisons(_one_prompt(4), y, transitive_reduction=True)
    assert _pair_set(reduced) == {(3, 0), (0, 2), (2, 1)}


def test_pairs_from_pairwise_feedback_never_cross_groups():
    # Each labeled pair is one comparison; ties give nothing; rows of different
    # (user, prompt) groups are never compared, whatever their labels.
    ids = np.array(
        [[0, 5, 0], [0, 5, 1], [0, 6, 0], [0, 6, 1], [1, 5, 0], [1, 5, 1], [2, 7, 0]]
    )
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    structure = comparisons(ids, y)
    assert_array_equal(structure.winners, [1, 2, 4])
    assert_array_equal(structure.losers, [0, 3, 5])
    assert_array_equal(structure.users, [0, 1, 2])
    # Groups (0, 5), (0, 6), (1, 5), (2, 7), sorted; user 2's one row is a group too.
    assert_array_equal(structure.group_of_row, [0, 0, 1, 1, 2, 2, 3])
    assert_array_equal(structure.group_user, [0, 0, 1, 2])

    tied = comparisons(_one_prompt(3), np.array([0.5, 0.5, 0.5]))
    assert tied.winners.size == 0 and tied.losers.size == 0


def test_pairs_match_brute_force(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    ids = np.column_stack([rng.randint(0, 3, size=(60, 2)), np.arange(60)])
    y = rng.randint(0, 4, size=60).astype(float)
    same_group = (ids[:, None, :2] == ids[None, :, :2]).all(axis=2)
    expected = {
        (a, b)
        for a, b in itertools.permutations(range(60), 2)
        if same_group[a, b] and y[a] > y[b]
    }
    structure = comparisons(ids, y)
    assert _pair_set(structure) == expected
    assert len(expected) == structure.winners.size  # no duplicates
    # Ordered by user, then prompt, then decreasing winner label.
    keys = np.column_stack([ids[structure.winners, :2], -y[structure.winners]])
    assert (np.diff(keys.T[0]) >= 0).all()
    assert all(tuple(a) <= tuple(b) for a, b in zip(keys[:-1], keys[1:]))

    levels = {}
    for key in {tuple(k) for k in ids[:, :2]}:
        in_group = (ids[:, :2] == key).all(axis=1)
        levels[key] = np.unique(y[in_group])[::-1].tolist()
    expected_reduced = {
        (a, b)
        for a, b in expected
        if levels[tuple(ids[a, :2])].index(y[b]) == levels[tuple(ids[a, :2])].index(y[a]) + 1
    }
    assert _pair_set(comparisons(ids, y, transitive_reduction=True)) == expected_reduced


def _store(ids, y, **columns):
    structure = comparisons(ids, y)
    return UserComparisons.from_comparisons(ids, structure, rows=True, **columns)


def test_store_groups_users_and_prompts():
    ids = np.array([[3, 1, 0], [3, 1, 1], [3, 2, 0], [3, 2, 1], [7, 1, 0], [7, 1, 1],
                    [9, 4, 0], [9, 4, 1]])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5])  # user 9: one tie
    store = _store(ids, y)
    assert_array_equal(store.users, [3, 7, 9])
    assert_array_equal(store.counts, [2, 1, 0])
    rows, counts = store.rows([2, 0])
    assert_array_equal(rows, [0, 1])
    assert_array_equal(counts, [0, 2])
    group_offsets, user_group_offsets = store.prompt_groups()
    assert_array_equal(group_offsets, [0, 1, 2, 3])
    assert_array_equal(user_group_offsets, [0, 2, 3, 3])
    positions, known = store.positions([7, 8, 3])
    assert_array_equal(known, [True, False, True])
    assert_array_equal(positions[known], [1, 0])


@pytest.mark.parametrize("transitive_reduction", [False, True])
def test_store_of_comparisons_is_the_store_of_their_owners(
    global_random_seed, transitive_reduction
):
    # from_comparisons finds each user's pairs by bisection; the general
    # constructor, from the owner of every pair, gives the same store. Users
    # with ties only, users with no pair before them, and sparse ids included.
    rng = np.random.RandomState(global_random_seed)
    ids = np.column_stack(
        [3 * rng.randint(0, 12, size=80) + 5, rng.randint(0, 3, size=80), np.arange(80)]
    )
    y = rng.randint(0, 3, size=80).astype(float)
    structure = comparisons(ids, y, transitive_reduction=transitive_reduction)
    store = UserComparisons.from_comparisons(ids, structure, rows=True)
    expected = UserComparisons(
        structure.users, ids[structure.winners, 0], prompt=ids[structure.winners, 1],
        top=structure.top, winner=structure.winners, loser=structure.losers,
    )
    assert_array_equal(store.users, expected.users)
    assert store.offsets.dtype == np.int64
    assert_array_equal(store.offsets, expected.offsets)
    assert store.columns.keys() == expected.columns.keys()
    for name, column in expected.columns.items():
        assert_array_equal(store.columns[name], column)


def test_store_merged_and_without():
    ids = np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1], [2, 3, 0], [2, 3, 1]])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    first = _store(ids[:4], y[:4])
    second = _store(ids[4:], y[4:])
    merged = first.merged(second)
    assert_array_equal(merged.users, [0, 1, 2])
    assert_array_equal(merged.columns["prompt"], [0, 0, 3])
    # A returning user's new comparisons are added after their old ones.
    again = first.merged(_store(ids[:2], 1.0 - y[:2]))
    assert_array_equal(again.counts, [2, 1])
    assert_array_equal(again.columns["winner"][:2], [0, 1])
    dropped = merged.without([1, 5])
    assert_array_equal(dropped.users, [0, 2])
    assert_array_equal(dropped.columns["prompt"], [0, 3])


def test_positions_in_by_hand():
    positions, found = positions_in(np.array([2, 4, 6]), np.array([6, 7, 2, 0]))
    assert_array_equal(found, [True, False, True, False])
    assert_array_equal(positions, [2, 0, 0, 0])
    positions, found = positions_in(np.array([], dtype=np.int64), np.array([1]))
    assert not found.any()


@pytest.mark.parametrize("transitive_reduction", [False, True])
@pytest.mark.parametrize("response_scale", [1, 10**9])
def test_a_candidate_labeled_twice_differently_is_refused(
    transitive_reduction, response_scale
):
    # Response 0 of (user 0, prompt 0) is both the best and the worst, not next to
    # each other (a transitive reduction has no pair of them). Responses 0 and
    # 10**9 are too far apart for a table of counts: the pairs are compared.
    ids = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 2, 3]]) * [1, 1, response_scale]
    y = np.array([1.0, 0.5, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"response_id=0\) is labeled twice, 1 and 0"):
        comparisons(ids, y, transitive_reduction=transitive_reduction)
    # Twice with the same label is the same judgement given twice: it counts twice.
    same = comparisons(ids, np.array([1.0, 0.5, 1.0, 1.0]))
    assert _pair_set(same) == {(0, 1), (2, 1)}


@pytest.mark.parametrize("block", [1, 3, 1 << 16])
def test_pair_differences_are_the_rounded_exact_differences(monkeypatch, block):
    # Blocks of 1 and 3 pairs split the gathers; float32 features (a feature step's
    # output) given as float64 subtract exactly, then round once.
    monkeypatch.setattr(_comparisons, "_GATHER_BLOCK", block)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 4)).astype(np.float32).astype(np.float64)
    winners, losers = rng.integers(0, 20, 50), rng.integers(0, 20, 50)
    differences = pair_differences(vectors, winners, losers)
    assert differences.dtype == np.float32
    assert_array_equal(
        differences, (vectors[winners] - vectors[losers]).astype(np.float32)
    )
    # In float64, the differences themselves.
    vectors = rng.normal(size=(20, 4))
    differences = pair_differences(vectors, winners, losers, np.float64)
    assert differences.dtype == np.float64
    assert_array_equal(differences, vectors[winners] - vectors[losers])
    # Any float64 vectors in float32: each side rounded, then subtracted; into out.
    out = np.empty((50, 4), dtype=np.float32)
    assert pair_differences(vectors, winners, losers, out=out) is out
    assert_array_equal(
        out, vectors[winners].astype(np.float32) - vectors[losers].astype(np.float32)
    )


def test_pooled_differences_of_float32_items_are_the_float64_ones():
    # Two users compare the same responses of a prompt: one difference, counted
    # twice; float32 items are widened before the subtraction.
    ids = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2], [1, 0, 0], [1, 0, 1], [1, 0, 2]])
    y = np.array([1.0, 0.0, 0.5, 1.0, 0.0, 0.5])
    rng = np.random.default_rng(0)
    items = np.tile(rng.normal(size=(3, 4)).astype(np.float32), (2, 1))
    structure = comparisons(ids, y)
    pooled32, counts32 = pooled_differences(ids, items, structure)
    pooled64, counts64 = pooled_differences(ids, items.astype(np.float64), structure)
    assert pooled32.dtype == np.float64
    assert_array_equal(pooled32, pooled64)
    assert_array_equal(counts32, counts64)
    assert_array_equal(counts32, [2.0, 2.0, 2.0])
