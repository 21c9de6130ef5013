"""The authors' balanced grouping of labels (supplement section A / docs/method.md, section 2).

`balanced_grouping` splits the labels into balanced groups of mutually close labels, given a
label distance matrix; `grouping_from_confusion` does so for a confusion matrix, through
`confusion_distance`. Two tie-break modes (`TIE_BREAKS`): `"random"`, ties within `TIE_RTOL`
drawn from a seeded generator, and `"authors"`, which with `confusion_distance(...,
maximum="raw")` reproduces the authors' `create_grouping_v2` exactly, ties included
(docs/authors_settings.md, section 10.2).

Example:

>>> import numpy as np
>>> points = np.array([0.0, 1.0, 3.0, 10.0, 13.0])
>>> distance = np.abs(points[:, None] - points[None, :])
>>> balanced_grouping(distance, 2).tolist()
[0, 0, 0, 1, 1]
>>> balanced_grouping(distance, 2, tie_break="authors").tolist()
[0, 0, 0, 1, 1]
>>> grouping_from_confusion([[9, 4, 0], [3, 9, 1], [0, 0, 9]], 2).tolist()
[0, 0, 1]
"""

import numbers

import numpy as np

from ssal_keras.grouping.checks import as_float_matrix, check_choice, check_int, describe
from ssal_keras.grouping.confusion import CRITERIA, confusion_distance

TIE_BREAKS = ("random", "authors")

# Two candidate values (row sums or average distances, all >= 0) tie when they differ by at
# most this fraction of the best value: |v - best| <= TIE_RTOL * |best|. Sums of non-negative
# numbers are exact to about (number of terms) * 1.1e-16 relative, so values that are
# mathematically equal but were summed in a different order still tie, while distinct values
# of a random float matrix are never this close in practice. Integer matrices tie exactly.
TIE_RTOL = 1e-12


def _tie_pick(values, best, rng):
    """Index of `best` in `values`; exact-enough ties broken with `rng`.

    The tied indices are taken in increasing order and one is drawn with
    `rng.integers(number_tied)`; the generator is only used when there is a real tie, so a
    tie-free matrix gives the same grouping for every seed.
    """
    tied = np.flatnonzero(np.abs(values - best) <= TIE_RTOL * abs(best))
    if tied.size == 1:
        return int(tied[0])
    return int(tied[rng.integers(tied.size)])


class _Groups:
    """The clustering's state, updated with one vector add per assignment.

    `sums[g, i]` is the summed distance from label `i` to the members of group `g`, added up
    in the order the members joined (`0.0 + d[m1, i] + d[m2, i] + ...`, the same order as the
    authors' loop, so the means below are bit-identical to theirs); group-major so that one
    group's column is contiguous. `avg = sums / size` (inf while the group is empty), and
    `row_min[i] == avg[:, i].min()` exactly for every unassigned label `i`: its minimum
    average distance to the populated groups.
    """

    def __init__(self, dist, k):
        num_labels = dist.shape[0]
        self.dist = dist
        self.grouping = np.full(num_labels, -1, dtype=np.int64)
        self.unassigned = np.ones(num_labels, dtype=bool)
        self.sizes = np.zeros(k, dtype=np.int64)
        self.sums = np.zeros((k, num_labels))
        self.avg = np.full((k, num_labels), np.inf)
        self.row_min = np.full(num_labels, np.inf)

    def assign(self, label, group):
        self.grouping[label] = group
        self.unassigned[label] = False
        self.sums[group] += self.dist[label]  # dist is symmetric: row == column.
        self.sizes[group] += 1
        old = self.avg[group].copy()
        new = self.sums[group] / self.sizes[group]
        self.avg[group] = new
        # Labels whose minimum sat on this group and grew: recompute over all groups.
        stale = self.unassigned & (old == self.row_min) & (new > old)
        np.minimum(self.row_min, new, out=self.row_min)
        if stale.any():
            self.row_min[stale] = self.avg[:, stale].min(axis=0)


def _random_ties(dist, k, limit, seed):
    """`tie_break="random"`: the algorithm of docs/method.md, section 2, with ties (TIE_RTOL) drawn
    from `default_rng`."""
    rng = np.random.default_rng(seed)
    state = _Groups(dist, k)

    # Step 2: the first label has the smallest row sum.
    row_sums = dist.sum(axis=1)
    state.assign(_tie_pick(row_sums, row_sums.min(), rng), 0)

    # Step 3, initialisation: the label farthest from every populated group opens a group.
    for group in range(1, k):
        values = np.where(state.unassigned, state.row_min, -np.inf)
        state.assign(_tie_pick(values, values.max(), rng), group)

    # Step 4, clustering: the label closest to some group joins its best group not full.
    for _ in range(dist.shape[0] - k):
        values = np.where(state.unassigned, state.row_min, np.inf)
        label = _tie_pick(values, values.min(), rng)
        open_avg = np.where(state.sizes < limit, state.avg[:, label], np.inf)
        state.assign(label, _tie_pick(open_avg, open_avg.min(), rng))

    return state.grouping


def _authors_first_label(dist, state):
    """Lines 71-82: the argmin of the row sums (numpy.sum of each row) opens group 0.

    Lowest index on ties; no random draw.
    """
    row_sums = np.array([np.sum(row) for row in dist])
    state.assign(int(np.argmin(row_sums)), 0)


def _authors_label(state, rs):
    """Lines 88-143: the next label to assign, drawn with `rs` on the authors' ties."""
    candidates = np.flatnonzero(state.unassigned)
    closest = state.row_min[candidates]  # Minimum mean distance to the populated groups.
    largest = closest.max()
    if state.sizes.min() == 0:
        # Lines 114-126: some group is empty, take the largest; their scan counts a tie
        # only when two or more labels share it.
        tied = candidates[closest == largest]
        draw = tied.size > 1
    else:
        # Lines 127-137: take the smallest. Their scan starts from the largest value, so
        # when every unassigned label has the same value (always so for the last label)
        # it counts a tie even for a single label.
        smallest = closest.min()
        tied = candidates[closest == smallest]
        draw = tied.size > 1 or smallest == largest
    # Lines 138-143: numpy.random.choice among the tied labels, in increasing order.
    return int(rs.choice(tied)) if draw else int(tied[0])


def _authors_group(state, label, k, limit, split, rs):
    """Lines 145-164: the group `label` joins.

    Mean distance to every group, 0 for an empty one; argmin (lowest index on ties). Split
    similar: if the best value is exactly 0, walk randint(0, K) steps cyclically over the
    groups at exactly 0, starting from the first, i.e. take zeros[r % len(zeros)]. A full
    group is set to 1e9 and the choice repeated (including a new draw); here it is set to
    inf, which gives the same choice whenever theirs terminates (their loop never ends if a
    real mean is >= 1e9).
    """
    values = np.where(state.sizes > 0, state.avg[:, label], 0.0)
    while True:
        group = int(np.argmin(values))
        if split and values[group] == 0:
            zeros = np.flatnonzero(values == 0)
            group = int(zeros[rs.randint(low=0, high=k) % zeros.size])
        if state.sizes[group] < limit:  # Line 160: full at size >= size_margin * C / K.
            return group
        values[group] = np.inf


def _check_no_empty_group(state, k):
    """Raises if the authors' rules left a group empty (their function would return it)."""
    empty = np.flatnonzero(state.sizes == 0)
    if empty.size:
        raise ValueError(
            f"tie_break='authors' leaves group(s) {', '.join(str(i) for i in empty)} of {k} "
            f"empty: during the initialisation some labels at mean distance exactly 0 from a "
            f"populated group joined it instead of opening a new group (the authors' "
            f"create_grouping_v2 returns such a grouping; a grouping here needs every group "
            f"non-empty); use fewer groups or tie_break='random'."
        )


def _authors_ties(dist, k, limit, split, seed):
    """`tie_break="authors"`: the tie rules of `create_grouping_v2` (keras/helper.py:42-188).

    Line numbers in this function and its helpers are those of the authors'
    keras/helper.py; docs/authors_settings.md, section 10.2 lists the same facts. Every comparison
    is exact float equality, as in their code. The random draws are made in their order: per label,
    the label's draw (if any), then the group's draws (if any).
    """
    rs = np.random.RandomState(seed)
    state = _Groups(dist, k)
    _authors_first_label(dist, state)
    for _ in range(dist.shape[0] - 1):  # Lines 88-165: one label per iteration.
        label = _authors_label(state, rs)
        state.assign(label, _authors_group(state, label, k, limit, split, rs))
    _check_no_empty_group(state, k)
    return state.grouping


def _check_size_margin(size_margin):
    """`size_margin` as a float if it is a finite real number >= 1, else a ValueError."""
    if (
        not isinstance(size_margin, numbers.Real)
        or isinstance(size_margin, (bool, np.bool_))
        or not np.isfinite(size_margin)
        or size_margin < 1
    ):
        raise ValueError(
            f"size_margin must be a finite number >= 1 (groups are full at "
            f"size_margin * C / num_groups labels); received size_margin={describe(size_margin)}."
        )
    return float(size_margin)


def balanced_grouping(
    distance,
    num_groups,
    *,
    size_margin=1.1,
    seed=0,
    tie_break="random",
    criterion="join_similar",
):
    """Splits labels into balanced groups of mutually close labels.

    The authors' clustering (supplement section A / docs/method.md, section 2):

    1. symmetrise `D <- (D + D^T) / 2` and zero the diagonal;
    2. the first label, the one with the smallest row sum, opens group 0;
    3. initialisation: while a group is empty, the unassigned label whose minimum average
       distance to the populated groups is the *largest* opens the next group;
    4. clustering: the unassigned label whose minimum average distance to any group (full or
       not) is the *smallest* joins that group, or if it is full, the closest group that is
       not full;
    5. a group is full when its size is `>= size_margin * C / num_groups`.

    Ties, `tie_break="random"` (the default): values within a relative `TIE_RTOL` = 1e-12 of
    each other tie, between labels or between groups, and are broken with
    `np.random.default_rng(seed)`, which is consulted only on a real tie: the same seed always
    gives the same grouping, and a matrix without ties gives the same grouping for every seed.
    On such a tie-free matrix the result is the authors' `create_grouping_v2`'s.

    Ties, `tie_break="authors"`: reproduces the authors' `create_grouping_v2`
    (keras/helper.py:42-188; docs/authors_settings.md, section 10.2) exactly, ties
    included, given `distance` = their symmetrised distances (see `confusion_distance`, and
    its `maximum="raw"` for their join-similar preparation). Their rules:

    - ties are exact float equality (their `==`); means are summed in their order, so they
      are bit-identical to theirs;
    - the first label is the argmin of the row sums, lowest index on ties (helper.py:71-82);
    - a label tie is broken with `numpy.random.choice(tied labels in increasing order)`
      (helper.py:114-143); while every group is populated, a draw is also made when all the
      unassigned labels have the same value, even a single one (their scan starts from the
      largest value);
    - the group is the argmin over all `num_groups` groups of the label's mean distances,
      with an empty group at 0 (so during the initialisation normally the first empty group,
      but a label at mean distance exactly 0 from a populated group joins it); ties go to the
      lowest index (helper.py:145-164);
    - `criterion="split_similar"` only: if the best value is exactly 0, the group is
      `zeros[numpy.random.randint(low=0, high=num_groups) % len(zeros)]`, `zeros` being the
      groups (empty or not) at exactly 0 in increasing order: their cyclic walk of a random
      number of steps over those groups (helper.py:147-158);
    - a full group is dropped and the choice repeated, with a new draw if again at 0
      (helper.py:160-164).

    Their random draws come from numpy's global legacy generator, never seeded in their
    repository; here they come from `numpy.random.RandomState(seed)`, with the same calls in
    the same order, so `numpy.random.seed(seed)` before their function gives the same
    partition. Where their rules leave a group empty (labels at distance 0 joining populated
    groups during the initialisation), their function returns a grouping with an unused
    group id; this one raises a ValueError instead.

    The implementation keeps the summed distance from every label to every group and each
    label's minimum average distance, and updates them with one vector add per assignment,
    so it is exact (tested against literal loop transcriptions of docs/method.md, section 2 and of
    the authors' function) and O(C^2) in the common case: 1000 labels in 500 groups take a few
    hundredths of a second.

    Args:
        distance: array-like of shape (C, C). Distances between labels; entries off the
            diagonal must be finite and >= 0 (the diagonal is ignored). Need not be
            symmetric: it is symmetrised first.
        num_groups: int. Number of groups `k`, between 1 and `C`.
        size_margin: float. Groups are full at `size_margin * C / k` labels; at least 1
            (the paper used 1.1: 100 labels in 20 groups hold at most 6 each).
        seed: int. Seed (>= 0) of the generator that breaks ties; with
            `tie_break="authors"`, of `numpy.random.RandomState`, so at most 2**32 - 1.
        tie_break: str. `"random"` (default) or `"authors"`, see above.
        criterion: str. `"join_similar"` (default) or `"split_similar"`: how `distance` was
            made (see `confusion_distance`). Used only by `tie_break="authors"`, for the
            split-similar rule for groups at distance 0; validated always.

    Returns:
        np.ndarray of int64, shape (C,): the group id (0..k-1) of each label. Group ids are
        numbered in the order the groups were opened (with `tie_break="authors"` and
        `"split_similar"`, the order of the authors' choice), and every group is non-empty.

    Raises:
        ValueError: if an argument is invalid (the message names it and what is valid), or
            if `tie_break="authors"` leaves a group empty.
    """
    dist = as_float_matrix(distance, "distance")
    num_labels = dist.shape[0]
    k = check_int(
        num_groups, "num_groups", 1, num_labels, f" (the number of labels, {num_labels})"
    )
    size_margin = _check_size_margin(size_margin)
    tie_break = check_choice(tie_break, "tie_break", TIE_BREAKS)
    criterion = check_choice(criterion, "criterion", CRITERIA)
    if tie_break == "authors":
        seed = check_int(seed, "seed", 0, 2**32 - 1, " (a numpy.random.RandomState seed)")
    else:
        seed = check_int(seed, "seed", 0)

    dist = 0.5 * (dist + dist.T)  # Exactly symmetric: a + b == b + a in floating point.
    np.fill_diagonal(dist, 0.0)
    limit = size_margin * num_labels / k
    # A group holds at most ceil(limit) labels; with size_margin >= 1 all labels fit, but
    # check it rather than trust floating point.
    if k * int(np.ceil(limit)) < num_labels:
        raise ValueError(
            f"size_margin={size_margin} leaves room for only {k * int(np.ceil(limit))} of "
            f"{num_labels} labels in {k} groups; use size_margin >= 1."
        )
    if tie_break == "authors":
        return _authors_ties(dist, k, limit, criterion == "split_similar", seed)
    return _random_ties(dist, k, limit, seed)


def grouping_from_confusion(confusion, num_groups, *, criterion="join_similar",
                            tie_break="random", size_margin=1.1, seed=0):
    """A balanced grouping of a confusion matrix's labels (docs/method.md, section 2).

    The distances are the ones each `tie_break` is defined on: `confusion_distance`'s
    default for `"random"`, the authors' preparation (`maximum="raw"`) for `"authors"`, so
    that the result is their `create_grouping_v2`'s (docs/authors_settings.md, section 10.2).

    Args:
        confusion: array-like of shape (C, C). See `confusion_distance`.
        num_groups: int. See `balanced_grouping`.
        criterion: str. `"join_similar"` or `"split_similar"`.
        tie_break: str. `"random"` or `"authors"`.
        size_margin: float. See `balanced_grouping`.
        seed: int. See `balanced_grouping`.

    Returns:
        np.ndarray of int64, shape (C,).
    """
    tie_break = check_choice(tie_break, "tie_break", TIE_BREAKS)
    distance = confusion_distance(
        confusion, criterion, maximum="raw" if tie_break == "authors" else "symmetrised")
    return balanced_grouping(distance, num_groups, size_margin=size_margin, seed=seed,
                             tie_break=tie_break, criterion=criterion)
