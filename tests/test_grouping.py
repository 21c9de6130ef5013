"""Tests for the balanced grouping of supplement section A / docs/method.md, section 2.

The vectorised `balanced_grouping` is checked against `_reference_grouping`, a slow, literal
transcription of docs/method.md, section 2 written with plain Python loops and lists, on tie-free
random matrices (where the seed must not matter) and on integer matrices full of ties (where both
use the same documented tie convention: tied candidates in increasing index order, one drawn with
`rng.integers(number_tied)`, the generator consulted only on a real tie).

`balanced_grouping(..., tie_break="authors")` is checked against `_authors_transcription`, a
literal loop transcription of the authors' `create_grouping_v2` (keras/helper.py:42-188,
docs/authors_settings.md, section 10.2), preparation of the confusion matrix included, on tie-heavy
integer confusion matrices: both must give the identical grouping.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ssal_keras import grouping as g

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Overrides conftest's per-test Keras reset: grouping is NumPy only (saves ~0.1 s a test)."""
    yield


# ---------------------------------------------------------------------------------------------
# A literal transcription of docs/method.md, section 2, slow on purpose.
# ---------------------------------------------------------------------------------------------


def _reference_grouping(distance, k, size_margin=1.1, seed=0):
    rng = np.random.default_rng(seed)
    n = len(distance)
    # 1. Symmetrise, zero the diagonal.
    d = [[0.0 if i == j else (float(distance[i][j]) + float(distance[j][i])) / 2 for j in range(n)]
         for i in range(n)]
    limit = size_margin * n / k

    def pick(candidates, values, best):
        tied = [c for c, v in zip(candidates, values) if abs(v - best) <= g.TIE_RTOL * abs(best)]
        return tied[0] if len(tied) == 1 else tied[rng.integers(len(tied))]

    def average(label, members):
        return sum(d[label][m] for m in members) / len(members)

    groups = [[] for _ in range(k)]
    unassigned = list(range(n))

    # 2. First label: smallest row sum.
    row_sums = [sum(d[i]) for i in range(n)]
    first = pick(unassigned, row_sums, min(row_sums))
    groups[0].append(first)
    unassigned.remove(first)

    # 3. Initialisation: while some group is empty, the label whose minimum average distance to
    # the populated groups is the largest opens a new group.
    for new_group in range(1, k):
        populated = [grp for grp in groups if grp]
        mins = [min(average(label, grp) for grp in populated) for label in unassigned]
        label = pick(unassigned, mins, max(mins))
        groups[new_group].append(label)
        unassigned.remove(label)

    # 4. Clustering: the label whose minimum average distance to a group is the smallest goes
    # to that group unless it is full (size >= limit), else to the next-best group not full.
    while unassigned:
        mins = [min(average(label, grp) for grp in groups) for label in unassigned]
        label = pick(unassigned, mins, min(mins))
        not_full = [i for i in range(k) if len(groups[i]) < limit]
        averages = [average(label, groups[i]) for i in not_full]
        groups[pick(not_full, averages, min(averages))].append(label)
        unassigned.remove(label)

    result = np.empty(n, dtype=np.int64)
    for group_id, members in enumerate(groups):
        result[members] = group_id
    return result


def _random_distance(num_labels, seed):
    """Tie-free (with probability one) random distances, not symmetric: symmetrised inside."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=(num_labels, num_labels))


def _tied_distance(num_labels, seed, levels=3):
    """Integer distances in {1..levels}: many exact ties."""
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.integers(1, levels + 1, size=(num_labels, num_labels)), 1)
    return (upper + upper.T).astype(np.float64)


# Six labels: 0..3 close to each other, 4 and 5 far away; hand-traced below.
_HAND = np.array(
    [
        [0, 1, 2, 4, 10, 12],
        [1, 0, 1, 4, 10, 12],
        [2, 1, 0, 2, 10, 12],
        [4, 4, 2, 0, 10, 12],
        [10, 10, 10, 10, 0, 3],
        [12, 12, 12, 12, 3, 0],
    ],
    dtype=np.float64,
)


# ---------------------------------------------------------------------------------------------
# A literal transcription of the authors' create_grouping_v2 (keras/helper.py:42-188,
# docs/authors_settings.md, section 10.2), slow on purpose: same loops, same exact comparisons, same
# random calls.
# ---------------------------------------------------------------------------------------------


def _authors_transcription(confusion, k, criterion, size_margin=1.1, seed=0, rng=None):
    """The authors' grouping of a confusion matrix; group ids, -1 never (a group may be empty).

    Random calls go to `rng` (default `np.random.RandomState(seed)`); pass the `np.random`
    module after `np.random.seed(seed)` to use the global generator, as the authors do.
    """
    rng = np.random.RandomState(seed) if rng is None else rng
    join = criterion == "join_similar"
    # Preparation (lines 58-69), on a copy: theirs zeroes the caller's diagonal in place.
    m = np.array(confusion, dtype=np.float64)
    n = len(m)
    for i in range(n):
        m[i][i] = 0
    if join:
        m = np.max(m) - m
    for i in range(n):
        m[i][i] = 0
    s = 0.5 * (m + m.T)
    # First label (lines 71-82): argmin of the row sums, lowest index on ties.
    groups = [[] for _ in range(k)]
    groups[0].append(int(np.argmin([np.sum(s[i]) for i in range(n)])))
    assigned = [False] * n
    assigned[groups[0][0]] = True
    means = [[0.0] * k for _ in range(n)]
    score = [-1.0] * n  # Closest populated group's mean; -1 marks an assigned label.
    for _ in range(n - 1):  # Lines 88-165.
        all_populated = all(len(group) > 0 for group in groups)
        for i in range(n):
            if assigned[i]:
                continue
            for j in range(k):
                total = 0.0
                for member in groups[j]:
                    total += s[member][i]
                means[i][j] = total / len(groups[j]) if groups[j] else 0.0
            closest = means[i][0]  # Group 0 is never empty.
            for j in range(k):
                if groups[j] and means[i][j] < closest:
                    closest = means[i][j]
            score[i] = closest
        # Label choice (lines 114-143): a scan in index order that keeps the tied labels and
        # counts the extra ones; a draw whenever that count is positive.
        tied, extra = [], 0
        if not all_populated:
            bound = -0.5  # Largest score; assigned labels (-1) never qualify.
            for i in range(n):
                if score[i] >= bound:
                    if score[i] == bound:
                        tied.append(i)
                        extra += 1
                    else:
                        bound, tied, extra = score[i], [i], 0
        else:
            bound = max(score)  # Smallest score, the scan starting from the largest.
            for i in range(n):
                if -0.5 < score[i] <= bound:
                    if score[i] == bound:
                        tied.append(i)
                        extra += 1
                    else:
                        bound, tied, extra = score[i], [i], 0
        label = int(rng.choice(np.array(tied))) if extra > 0 else tied[0]
        # Group choice (lines 145-164).
        row = list(means[label])
        while True:
            pick = int(np.argmin(row))
            if not join and row[pick] == 0:
                steps = rng.randint(low=0, high=k)
                while steps != 0:
                    pick += 1
                    if pick >= k:
                        pick = 0
                    if row[pick] == 0:
                        steps -= 1
            if len(groups[pick]) >= size_margin * n / k:
                row[pick] = 1000000000
            else:
                groups[pick].append(label)
                break
        assigned[label] = True
        score[label] = -1.0
    result = np.full(n, -1, dtype=np.int64)
    for group_id, members in enumerate(groups):
        result[members] = group_id
    return result


def _tie_heavy_confusion(num_labels, seed):
    """Integer confusion counts in 0..3, about half of them zero, big diagonal: many ties."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, size=(num_labels, num_labels))
    counts = counts * (rng.random((num_labels, num_labels)) < 0.5)
    np.fill_diagonal(counts, 50)
    return counts


def _authors_grouping(confusion, k, criterion, size_margin=1.1, seed=0):
    """The package's route to the authors' grouping: their distances, their tie rules."""
    distance = g.confusion_distance(confusion, criterion, maximum="raw")
    return g.balanced_grouping(
        distance, k, size_margin=size_margin, seed=seed, tie_break="authors", criterion=criterion
    )


# 6 sizes x 3 or 4 group counts x 2 criteria x 2 seeds = 76 tie-heavy matrices.
_AUTHORS_GROUP_COUNTS = {6: (2, 3, 4), 9: (2, 3, 4), 13: (3, 4, 6), 20: (2, 5, 8, 10),
                         31: (3, 7, 15), 40: (4, 10, 20)}
_AUTHORS_CASES = [
    (num_labels, k, criterion, seed)
    for num_labels, group_counts in _AUTHORS_GROUP_COUNTS.items()
    for k in group_counts
    for criterion in g.CRITERIA
    for seed in range(2)
]


def _case_confusion(num_labels, k, seed):
    return _tie_heavy_confusion(num_labels, seed=1000 * num_labels + 10 * k + seed)


# ---------------------------------------------------------------------------------------------
# The algorithm.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_labels,k", [(30, 1), (30, 4), (30, 7), (30, 15), (30, 30), (23, 5)])
@pytest.mark.parametrize("size_margin", [1.0, 1.1, 1.5])
def test_matches_literal_reference_tie_free(num_labels, k, size_margin):
    for seed in range(2):
        distance = _random_distance(num_labels, seed=100 + seed)
        expected = _reference_grouping(distance, k, size_margin=size_margin, seed=seed)
        got = g.balanced_grouping(distance, k, size_margin=size_margin, seed=seed)
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("num_labels,k", [(30, 4), (30, 10), (17, 17), (24, 6)])
def test_matches_literal_reference_with_ties(num_labels, k):
    for seed in range(3):
        distance = _tied_distance(num_labels, seed=seed)
        expected = _reference_grouping(distance, k, seed=seed)
        got = g.balanced_grouping(distance, k, seed=seed)
        np.testing.assert_array_equal(got, expected)


def test_matches_literal_reference_with_decimal_ties():
    # Distances with one decimal: equal sums reached in different orders may differ in the
    # last bit, and TIE_RTOL must still call them ties (the first label uses row sums).
    for seed in range(4):
        distance = np.round(_random_distance(28, seed=seed), 1)
        for k in (3, 9):
            expected = _reference_grouping(distance, k, seed=seed)
            np.testing.assert_array_equal(g.balanced_grouping(distance, k, seed=seed), expected)


def test_hand_traced_example_balance_forces_next_best_group():
    # Row sums 29 28 27 32 43 51: label 2 opens group 0. Initialisation: label 5 is farthest
    # from {2} (12) and opens group 1. Clustering, full at 1.0 * 6 / 2 = 3 labels: label 1
    # (1 to group 0) joins group 0; label 0 ((2 + 1) / 2 = 1.5) joins group 0, now full;
    # label 4 (3 to group 1) joins group 1; label 3 is closest to group 0 (10 / 3) but it is
    # full, so it goes to group 1.
    np.testing.assert_array_equal(
        g.balanced_grouping(_HAND, 2, size_margin=1.0), [0, 0, 0, 1, 1, 1]
    )
    # With room for 6 per group, label 3 joins its closest group.
    np.testing.assert_array_equal(
        g.balanced_grouping(_HAND, 2, size_margin=2.0), [0, 0, 0, 0, 1, 1]
    )


def test_hand_traced_example_initialisation_picks_largest_minimum():
    # k = 3: label 2 opens group 0, label 5 (12 from {2}) group 1, then label 4, whose minimum
    # average distance to the populated groups, min(10, 3) = 3, is the largest, opens group 2.
    # Clustering, full at 2: label 1 (1) joins group 0, now full; label 0's minimum (1.5) is
    # to the full group 0, yet it is still picked first, and goes to its next best, group 2
    # (10 < 12), now full; label 3 can only go to group 1.
    np.testing.assert_array_equal(
        g.balanced_grouping(_HAND, 3, size_margin=1.0), [2, 0, 0, 1, 2, 1]
    )


def test_first_label_is_smallest_row_sum():
    distance = _random_distance(12, seed=3)
    sym = (distance + distance.T) / 2
    np.fill_diagonal(sym, 0)
    first = int(np.argmin(sym.sum(axis=1)))
    grouping = g.balanced_grouping(distance, 12)  # k == C: every label opens its own group.
    assert grouping[first] == 0


@pytest.mark.parametrize(
    "num_labels,k,size_margin", [(100, 20, 1.1), (100, 20, 1.0), (100, 33, 1.1), (1000, 500, 1.1),
                                 (37, 5, 1.25)]
)
def test_balance_rule(num_labels, k, size_margin):
    grouping = g.balanced_grouping(_random_distance(num_labels, seed=0), k, size_margin=size_margin)
    sizes = g.group_sizes(grouping)
    assert grouping.dtype == np.int64 and grouping.shape == (num_labels,)
    assert sizes.size == k and sizes.min() >= 1
    # Full at size >= size_margin * C / k: no group ever grows past ceil(size_margin * C / k).
    assert sizes.max() <= int(np.ceil(size_margin * num_labels / k))
    if (num_labels, k, size_margin) == (100, 20, 1.1):
        assert sizes.max() <= 6


def test_same_seed_same_grouping_and_tie_free_seed_independent():
    distance = _random_distance(60, seed=7)
    results = [g.balanced_grouping(distance, 8, seed=seed) for seed in range(5)]
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_ties_depend_on_seed_but_are_reproducible():
    distance = np.ones((20, 20))  # Every label and group ties with every other.
    by_seed = [g.balanced_grouping(distance, 4, seed=seed) for seed in range(8)]
    for seed in range(8):
        np.testing.assert_array_equal(g.balanced_grouping(distance, 4, seed=seed), by_seed[seed])
    assert len({tuple(r) for r in by_seed}) > 1
    for result in by_seed:
        assert g.group_sizes(result).max() <= 6  # ceil(1.1 * 20 / 4)


def test_asymmetric_input_is_symmetrised():
    distance = _random_distance(25, seed=5)
    np.testing.assert_array_equal(
        g.balanced_grouping(distance, 5), g.balanced_grouping((distance + distance.T) / 2, 5)
    )


def test_single_label_and_single_group():
    np.testing.assert_array_equal(g.balanced_grouping([[0.0]], 1), [0])
    np.testing.assert_array_equal(g.balanced_grouping(_HAND, 1), np.zeros(6))


def _block_confusion(num_clusters=4, cluster_size=3, seed=0):
    """Labels i and j are often confused when i % num_clusters == j % num_clusters."""
    rng = np.random.default_rng(seed)
    num_labels = num_clusters * cluster_size
    cluster = np.arange(num_labels) % num_clusters
    confusion = rng.integers(0, 5, size=(num_labels, num_labels)).astype(np.float64)
    confusion[cluster[:, None] == cluster[None, :]] += 50
    np.fill_diagonal(confusion, 500)
    return confusion, cluster


@pytest.mark.parametrize("seed", range(3))
def test_join_similar_keeps_confused_labels_together(seed):
    confusion, cluster = _block_confusion(seed=seed)
    grouping = g.balanced_grouping(g.confusion_distance(confusion, "join_similar"), 4, seed=seed)
    for c in range(4):
        assert len(set(grouping[cluster == c])) == 1
    assert len(set(grouping)) == 4


@pytest.mark.parametrize("seed", range(3))
def test_split_similar_spreads_confused_labels(seed):
    confusion, cluster = _block_confusion(seed=seed)
    grouping = g.balanced_grouping(g.confusion_distance(confusion, "split_similar"), 3, seed=seed)
    for c in range(4):
        assert len(set(grouping[cluster == c])) == 3  # One label of each cluster per group.


def test_confusion_distance_values():
    confusion = np.array([[9, 1, 4], [3, 9, 0], [2, 0, 9]], dtype=np.float64)
    sym = np.array([[0, 2, 3], [2, 0, 0], [3, 0, 0]], dtype=np.float64)
    np.testing.assert_array_equal(g.confusion_distance(confusion, "split_similar"), sym)
    join = g.confusion_distance(confusion)  # join_similar is the default.
    np.testing.assert_array_equal(join, np.array([[0, 1, 0], [1, 0, 3], [0, 3, 0]]))
    np.testing.assert_array_equal(join, join.T)


# ---------------------------------------------------------------------------------------------
# tie_break="authors": the authors' create_grouping_v2, ties included.
# ---------------------------------------------------------------------------------------------


def test_authors_cases_are_many_and_tie_heavy():
    assert len(_AUTHORS_CASES) >= 60
    assert {c[0] for c in _AUTHORS_CASES} == {6, 9, 13, 20, 31, 40}
    for num_labels, k, _, seed in _AUTHORS_CASES:
        counts = _case_confusion(num_labels, k, seed)
        off = counts[~np.eye(num_labels, dtype=bool)]
        assert np.unique(off).size <= 4 and (off == 0).mean() > 0.4  # Ties everywhere.


@pytest.mark.parametrize("criterion", g.CRITERIA)
@pytest.mark.parametrize("num_labels", [6, 9, 13, 20, 31, 40])
def test_authors_tie_break_matches_transcription(num_labels, criterion):
    cases = [c for c in _AUTHORS_CASES if c[0] == num_labels and c[2] == criterion]
    assert len(cases) >= 6
    for _, k, _, seed in cases:
        confusion = _case_confusion(num_labels, k, seed)
        expected = _authors_transcription(confusion, k, criterion, seed=seed)
        assert sorted(set(expected.tolist())) == list(range(k))  # No empty group here.
        got = _authors_grouping(confusion, k, criterion, seed=seed)
        np.testing.assert_array_equal(got, expected, err_msg=f"C={num_labels} k={k} s={seed}")


def test_authors_tie_break_matches_transcription_on_extreme_cases():
    # Tiny matrices, every group count, margins 1.0 to 2.0, all-zero and 0/1 matrices: the
    # initialisation can then send labels at distance 0 into populated groups, and full
    # groups force repeated choices (with new draws when split similar). Where the
    # transcription leaves a group empty, balanced_grouping raises instead.
    rng = np.random.default_rng(2024)
    empty = agree = 0
    for case in range(300):
        num_labels = int(rng.integers(2, 13))
        k = int(rng.integers(1, num_labels + 1))
        criterion = g.CRITERIA[case % 2]
        size_margin = (1.0, 1.1, 1.5, 2.0)[case % 4]
        style = case % 3
        if style == 0:
            confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
        elif style == 1:
            confusion = rng.integers(0, 2, size=(num_labels, num_labels))
        else:
            confusion = rng.integers(0, 5, size=(num_labels, num_labels))
            confusion = confusion * (rng.random((num_labels, num_labels)) < 0.3)
        seed = int(rng.integers(0, 2**32))
        expected = _authors_transcription(confusion, k, criterion, size_margin, seed)
        missing = sorted(set(range(k)) - set(expected.tolist()))
        if missing:
            empty += 1
            match = rf"tie_break='authors' leaves group\(s\) {', '.join(map(str, missing))} "
            with pytest.raises(ValueError, match=match):
                _authors_grouping(confusion, k, criterion, size_margin, seed)
        else:
            agree += 1
            np.testing.assert_array_equal(
                _authors_grouping(confusion, k, criterion, size_margin, seed), expected
            )
    assert agree > 150 and empty > 10


def test_authors_tie_break_matches_the_global_generator():
    # The authors call np.random.choice / np.random.randint: np.random.seed(s) first gives
    # the same partition as seed=s here.
    state = np.random.get_state()
    try:
        for num_labels, k, criterion, seed in _AUTHORS_CASES[::7]:
            confusion = _case_confusion(num_labels, k, seed)
            np.random.seed(seed)
            expected = _authors_transcription(confusion, k, criterion, rng=np.random)
            np.testing.assert_array_equal(
                _authors_grouping(confusion, k, criterion, seed=seed), expected
            )
    finally:
        np.random.set_state(state)


def test_authors_comparison_can_fail():
    # The comparison above is not vacuous: on the same tie-heavy matrices the default
    # tie_break="random" agrees with the transcription only sometimes, and the authors'
    # result itself depends on the seed (their draws matter).
    agree_random = seed_dependent = 0
    for num_labels, k, criterion, seed in _AUTHORS_CASES:
        confusion = _case_confusion(num_labels, k, seed)
        expected = _authors_transcription(confusion, k, criterion, seed=seed)
        distance = g.confusion_distance(confusion, criterion, maximum="raw")
        agree_random += np.array_equal(g.balanced_grouping(distance, k, seed=seed), expected)
        other = _authors_transcription(confusion, k, criterion, seed=seed + 100)
        seed_dependent += not np.array_equal(other, expected)
    assert agree_random < len(_AUTHORS_CASES)
    assert seed_dependent > len(_AUTHORS_CASES) // 2


def test_authors_tie_break_equals_random_on_tie_free_matrices():
    for seed in range(3):
        distance = _random_distance(30, seed=200 + seed)
        for k in (4, 9):
            np.testing.assert_array_equal(
                g.balanced_grouping(distance, k, seed=seed, tie_break="authors"),
                g.balanced_grouping(distance, k, seed=seed),
            )


def test_authors_empty_group_raises():
    # Two labels confused 3 times both ways: their distance is 0, so label 1 joins group 0
    # (mean 0, lowest index, not full at 1.1) and group 1 stays empty in the authors' code.
    confusion = np.array([[9, 3], [3, 9]])
    np.testing.assert_array_equal(_authors_transcription(confusion, 2, "join_similar"), [0, 0])
    with pytest.raises(ValueError, match=r"^tie_break='authors' leaves group\(s\) 1 of 2 empty"):
        _authors_grouping(confusion, 2, "join_similar")
    # The default tie rules open group 1 (an empty group is never a candidate there).
    assert sorted(g.balanced_grouping(g.confusion_distance(confusion), 2)) == [0, 1]


def test_confusion_distance_raw_maximum_is_the_authors_preparation():
    confusion = np.array([[9, 1, 4], [3, 9, 0], [2, 0, 9]], dtype=np.float64)
    # Raw maximum 4: D = 4 - M off the diagonal, then (D + D^T) / 2.
    raw = g.confusion_distance(confusion, "join_similar", maximum="raw")
    np.testing.assert_array_equal(raw, [[0, 2, 1], [2, 0, 4], [1, 4, 0]])
    # The default uses the symmetrised maximum 3: the same plus 4 - 3 = 1 off the diagonal.
    default = g.confusion_distance(confusion, "join_similar")
    np.testing.assert_array_equal(raw - default, 1 - np.eye(3))
    # Split similar: the same either way.
    np.testing.assert_array_equal(
        g.confusion_distance(confusion, "split_similar", maximum="raw"),
        g.confusion_distance(confusion, "split_similar"),
    )
    # The input is not modified (theirs zeroes its diagonal in place).
    assert confusion[0, 0] == 9


def test_authors_need_the_raw_maximum():
    # Label 0 confuses label 1 three times, label 1 label 0 once. Authors: distance
    # (3 - 3 + 3 - 1) / 2 = 1 > 0, so label 1 opens group 1. With the default preparation
    # their distance is 0 and label 1 would join group 0, leaving group 1 empty.
    confusion = np.array([[9, 3], [1, 9]])
    np.testing.assert_array_equal(_authors_transcription(confusion, 2, "join_similar"), [0, 1])
    np.testing.assert_array_equal(_authors_grouping(confusion, 2, "join_similar"), [0, 1])
    with pytest.raises(ValueError, match="leaves group"):
        g.balanced_grouping(g.confusion_distance(confusion), 2, tie_break="authors")
    # A tie-heavy 10-label matrix where the default preparation gives another grouping.
    confusion = _join_raw_matters_confusion()
    expected = _authors_transcription(confusion, 4, "join_similar", seed=1)
    np.testing.assert_array_equal(_authors_grouping(confusion, 4, "join_similar", seed=1), expected)
    other = g.balanced_grouping(g.confusion_distance(confusion), 4, seed=1, tie_break="authors")
    assert not np.array_equal(other, expected)


def _join_raw_matters_confusion():
    rng = np.random.default_rng(167)  # Found by search: the maximum matters here.
    counts = rng.integers(0, 3, size=(10, 10)) * (rng.random((10, 10)) < 0.4)
    np.fill_diagonal(counts, 50)
    return counts


def test_authors_bad_arguments():
    with pytest.raises(ValueError, match=r"seed must be an int between 0 and 4294967295"):
        g.balanced_grouping(_HAND, 2, tie_break="authors", seed=2**32)
    assert g.balanced_grouping(_HAND, 2, seed=2**32).shape == (6,)  # default_rng takes it.


# ---------------------------------------------------------------------------------------------
# Validation: every message names the argument.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "distance,match",
    [
        (np.zeros(4), r"distance must be a non-empty 2-D square matrix.*shape \(4,\)"),
        (np.zeros((3, 4)), r"distance must be a non-empty 2-D square matrix.*shape \(3, 4\)"),
        (np.zeros((0, 0)), r"distance must be .*shape \(0, 0\)"),
        (np.array([[0, np.nan], [1, 0]]), r"distance must have finite .*distance\[0, 1\]=nan"),
        (np.array([[0, np.inf], [1, 0]]), r"distance must have finite entries.*inf"),
        (np.array([[0, -1.0], [1, 0]]), r"distance must have entries >= 0.*distance\[0, 1\]=-1"),
        ([["a", "b"], ["c", "d"]], r"distance must be a 2-D square matrix of numbers"),
    ],
)
def test_bad_distance(distance, match):
    with pytest.raises(ValueError, match=match):
        g.balanced_grouping(distance, 1)


def test_diagonal_is_ignored():
    distance = _random_distance(8, seed=1)
    odd = distance.copy()
    np.fill_diagonal(odd, np.inf)
    np.testing.assert_array_equal(g.balanced_grouping(odd, 3), g.balanced_grouping(distance, 3))


@pytest.mark.parametrize(
    "num_groups,match",
    [
        (0, r"num_groups must be an int between 1 and 6 .*received num_groups=0"),
        (7, r"num_groups must be an int between 1 and 6 .*received num_groups=7"),
        (2.0, r"num_groups must be an int .*received num_groups=2\.0"),
        (True, r"num_groups must be an int .*received num_groups=True"),
        ("2", r"num_groups must be an int .*received num_groups='2'"),
    ],
)
def test_bad_num_groups(num_groups, match):
    with pytest.raises(ValueError, match=match):
        g.balanced_grouping(_HAND, num_groups)


@pytest.mark.parametrize("size_margin", [0.99, 0, -1, float("nan"), float("inf"), "1.1", None])
def test_bad_size_margin(size_margin):
    match = r"size_margin must be a finite number >= 1.*received size_margin="
    with pytest.raises(ValueError, match=match):
        g.balanced_grouping(_HAND, 2, size_margin=size_margin)


@pytest.mark.parametrize("seed", [-1, 1.5, None])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"seed must be an int >= 0; received seed="):
        g.balanced_grouping(_HAND, 2, seed=seed)


@pytest.mark.parametrize("tie_break", ["x", "Authors", "", None, 1, ["random"]])
def test_bad_tie_break(tie_break):
    shown = repr(tie_break)
    match = rf"^tie_break must be one of random, authors; received tie_break={re.escape(shown)}\.$"
    with pytest.raises(ValueError, match=match):
        g.balanced_grouping(_HAND, 2, tie_break=tie_break)


@pytest.mark.parametrize("tie_break", g.TIE_BREAKS)
def test_bad_criterion_in_balanced_grouping(tie_break):
    match = r"^criterion must be one of join_similar, split_similar; received criterion='group'"
    with pytest.raises(ValueError, match=match):
        g.balanced_grouping(_HAND, 2, tie_break=tie_break, criterion="group")


def test_bad_maximum():
    match = r"^maximum must be one of symmetrised, raw; received maximum='max'\.$"
    with pytest.raises(ValueError, match=match):
        g.confusion_distance(np.eye(3), maximum="max")


def test_numpy_integer_arguments_are_accepted():
    np.testing.assert_array_equal(
        g.balanced_grouping(_HAND, np.int64(2), size_margin=np.float32(1.0), seed=np.int32(0)),
        [0, 0, 0, 1, 1, 1],
    )


@pytest.mark.parametrize(
    "confusion,criterion,match",
    [
        (np.eye(3), "group_similar",
         r"criterion must be one of join_similar, split_similar; received criterion='group_"),
        (np.zeros((2, 3)), "join_similar", r"confusion must be a non-empty 2-D square .*\(2, 3\)"),
        (np.array([[1, -2], [0, 1]]), "split_similar",
         r"confusion must have entries >= 0.*confusion\[0, 1\]=-2"),
        (np.array([[1, np.nan], [0, 1]]), "join_similar", r"confusion must have finite entries"),
    ],
)
def test_bad_confusion(confusion, criterion, match):
    with pytest.raises(ValueError, match=match):
        g.confusion_distance(confusion, criterion)


@pytest.mark.parametrize(
    "grouping,kwargs,match",
    [
        ([[0, 1], [1, 0]], {}, r"grouping must be a non-empty 1-D .*shape \(2, 2\)"),
        ([], {}, r"grouping must be a non-empty 1-D .*shape \(0,\)"),
        ([0, 1.5, 1], {}, r"grouping must hold integer group ids; received grouping\[1\]=1\.5"),
        ([0, np.nan], {}, r"grouping must hold integer group ids; received grouping\[1\]=nan"),
        (["0", "1"], {}, r"grouping must hold integer group ids; received values of dtype <U1"),
        ([True, False], {}, r"grouping must hold integer group ids; received values of dtype bool"),
        ([0, -1, 1], {}, r"grouping must hold group ids >= 0; received grouping\[1\]=-1"),
        ([0, 3, 3, 0], {}, r"grouping must use every group id from 0 to 3 .*missing ids: 1, 2\."),
        ([0, 10**12], {}, r"missing ids: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, \.\.\."),
        ([0, 1, 1, 0, 2, 1, 0], {"num_classes": 10},
         r"^grouping has 7 labels but the model has 10 classes; give one group id per class\.$"),
        ([0, 1], {"num_classes": 0}, r"num_classes must be an int >= 1; received num_classes=0"),
        ([0, 2], {"name": "branch 'aux1' grouping"}, r"^branch 'aux1' grouping must use every"),
    ],
)
def test_bad_grouping(grouping, kwargs, match):
    with pytest.raises(ValueError, match=match):
        g.validate_grouping(grouping, **kwargs)


def test_validate_grouping_accepts_integral_floats():
    out = g.validate_grouping(np.array([0.0, 2.0, 1.0, 2.0]), num_classes=4)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [0, 2, 1, 2])
    np.testing.assert_array_equal(g.group_sizes(out), [1, 1, 2])


# ---------------------------------------------------------------------------------------------
# Files.
# ---------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    grouping = g.balanced_grouping(_random_distance(40, seed=2), 7)
    path = tmp_path / "groups.txt"
    g.save_grouping(path, grouping)
    assert path.read_text().splitlines() == [str(i) for i in grouping]
    np.testing.assert_array_equal(g.load_grouping(path, num_classes=40), grouping)
    np.testing.assert_array_equal(g.load_grouping(str(path)), grouping)
    assert os.listdir(tmp_path) == ["groups.txt"]  # No temporary file left behind.


def test_save_validates_first_and_keeps_old_file(tmp_path):
    path = tmp_path / "groups.txt"
    g.save_grouping(path, [0, 1, 0])
    with pytest.raises(ValueError, match="missing ids: 1"):
        g.save_grouping(path, [0, 2])
    assert path.read_text() == "0\n1\n0\n"
    assert os.listdir(tmp_path) == ["groups.txt"]


def test_load_accepts_savetxt_floats(tmp_path):
    path = tmp_path / "authors.txt"
    np.savetxt(path, np.array([1, 0, 1, 2]))  # "1.000000000000000000e+00" per line.
    np.testing.assert_array_equal(g.load_grouping(path), [1, 0, 1, 2])


def test_load_errors(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("0\n1\nx\n")
    with pytest.raises(ValueError, match=r"one integer group id per line; received 'x' on line 3"):
        g.load_grouping(path)
    path.write_text("0\n1.5\n")
    with pytest.raises(ValueError, match=r"received '1\.5' on line 2"):
        g.load_grouping(path)
    path.write_text("0\n1\n")
    with pytest.raises(ValueError, match=r"has 2 labels but the model has 3 classes"):
        g.load_grouping(path, num_classes=3)
    with pytest.raises(FileNotFoundError):
        g.load_grouping(tmp_path / "missing.txt")


# ---------------------------------------------------------------------------------------------
# Command line: all cases run at once in subprocesses (each start-up takes seconds while the
# package imports TensorFlow). Never imported in-process: its absl flags could clash with
# another entry module's flags of the same name.
# ---------------------------------------------------------------------------------------------

# Lines the TensorFlow C++ runtime prints at start-up when the package imports TensorFlow;
# they are not the CLI's own output.
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions)"
)


def _own_lines(text):
    return [line for line in text.splitlines() if line.strip() and not _TF_NOISE.match(line)]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    confusion, _ = _block_confusion(seed=0)
    np.save(folder / "confusion.npy", confusion)
    distance = (_random_distance(15, seed=4) + _random_distance(15, seed=4).T) / 2
    np.savetxt(folder / "distance.csv", distance, delimiter=",")
    tied = _tie_heavy_confusion(20, seed=11)
    np.save(folder / "tied.npy", tied)
    np.save(folder / "raw_matters.npy", _join_raw_matters_confusion())
    common = ["--kind=confusion", "--num_groups=4"]
    cases = {
        "npy": [f"--matrix={folder / 'confusion.npy'}", *common, "--criterion=join_similar",
                f"--output={folder / 'npy.txt'}"],
        "csv": [f"--matrix={folder / 'distance.csv'}", "--kind=distance", "--num_groups=5",
                "--seed=3", "--size_margin=1.0", f"--output={folder / 'csv.txt'}"],
        "missing_file": [f"--matrix={folder / 'nope.npy'}", *common,
                         f"--output={folder / 'x.txt'}"],
        "too_many_groups": [f"--matrix={folder / 'confusion.npy'}", "--kind=confusion",
                            "--num_groups=13", f"--output={folder / 'x.txt'}"],
        "bad_criterion": [f"--matrix={folder / 'confusion.npy'}", *common, "--criterion=similar",
                          f"--output={folder / 'x.txt'}"],
        "missing_output": [f"--matrix={folder / 'confusion.npy'}", *common],
        "bad_int_flag": [f"--matrix={folder / 'confusion.npy'}", "--kind=confusion",
                         "--num_groups=four", f"--output={folder / 'x.txt'}"],
        "authors_split": [f"--matrix={folder / 'tied.npy'}", "--kind=confusion",
                          "--criterion=split_similar", "--num_groups=5", "--seed=5",
                          "--tie_break=authors", f"--output={folder / 'authors_split.txt'}"],
        "authors_join": [f"--matrix={folder / 'raw_matters.npy'}", *common, "--seed=1",
                         "--tie_break=authors", f"--output={folder / 'authors_join.txt'}"],
        "bad_tie_break": [f"--matrix={folder / 'confusion.npy'}", *common, "--tie_break=author",
                          f"--output={folder / 'x.txt'}"],
    }
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "ssal_keras.group", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, args in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return folder, confusion, distance, results, tied


def test_cli_npy_confusion(cli):
    folder, confusion, _, results, _ = cli
    code, out, err = results["npy"]
    assert code == 0, err
    expected = g.balanced_grouping(g.confusion_distance(confusion, "join_similar"), 4)
    np.testing.assert_array_equal(g.load_grouping(folder / "npy.txt"), expected)
    assert _own_lines(out) == [
        f"wrote 12 labels in 4 groups to {folder / 'npy.txt'}; sizes: 3 3 3 3"
    ]


def test_cli_csv_distance(cli):
    folder, _, distance, results, _ = cli
    code, out, err = results["csv"]
    assert code == 0, err
    expected = g.balanced_grouping(distance, 5, seed=3, size_margin=1.0)
    np.testing.assert_array_equal(g.load_grouping(folder / "csv.txt"), expected)
    assert re.fullmatch(r"wrote 15 labels in 5 groups to .*csv\.txt; sizes: 3 3 3 3 3",
                        _own_lines(out)[0])


def test_cli_authors_tie_break(cli):
    folder, _, _, results, tied = cli
    code, out, err = results["authors_split"]
    assert code == 0, err
    expected = _authors_transcription(tied, 5, "split_similar", seed=5)
    np.testing.assert_array_equal(g.load_grouping(folder / "authors_split.txt"), expected)
    sizes = " ".join(str(n) for n in np.bincount(expected))
    assert _own_lines(out) == [
        f"wrote 20 labels in 5 groups to {folder / 'authors_split.txt'}; sizes: {sizes}"
    ]
    # Join similar: the CLI uses the authors' preparation (raw maximum), which matters here.
    code, out, err = results["authors_join"]
    assert code == 0, err
    expected = _authors_transcription(_join_raw_matters_confusion(), 4, "join_similar", seed=1)
    np.testing.assert_array_equal(g.load_grouping(folder / "authors_join.txt"), expected)


@pytest.mark.parametrize(
    "case,message",
    [
        ("bad_tie_break",
         r"--tie_break must be one of random, authors; received --tie_break=author\.$"),
        ("missing_file", r"--matrix=.*nope\.npy does not exist"),
        ("too_many_groups", r"num_groups must be an int between 1 and 12 .*received num_groups=13"),
        ("bad_criterion",
         r"criterion must be one of join_similar, split_similar; received criterion='similar'"),
        ("missing_output", r"missing required flag --output"),
        ("bad_int_flag", r"flag --num_groups=four"),
    ],
)
def test_cli_errors(cli, case, message):
    folder, _, _, results, _ = cli
    code, out, err = results[case]
    assert code != 0
    assert "Traceback" not in err
    lines = _own_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("group: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert not (folder / "x.txt").exists()
