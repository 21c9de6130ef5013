"""Will SSAL help, and with how many groups? Read from a baseline's held-out predictions,
before any SSAL run is paid for (BUILD_NOTES.md, "SSAL advisor (issue 22)": the protocol,
written before its first run).

For each candidate number of groups ``K`` the grouping the trainer would make (from the
held-out confusion), then:

* ``within_group_share``: of the base's errors, the share whose predicted class lies in the
  true class's group. A group head cannot move probability between classes of one group, so
  the errors it can act on are the others (``1 - within_group_share``);
* ``implied_group_accuracy``: the base's own group accuracy, the bar a head must beat;
* ``simulated_gain``: joint top-1 minus base top-1 when a head of group accuracy
  ``implied + HEAD_MARGIN`` is fused at ``alpha`` (the noise model: ``simulate_gain``).

NumPy only: it reads predictions already made.
"""

import numpy as np

from ssal_keras.grouping.balanced import grouping_from_confusion
from ssal_keras.grouping.checks import check_int, check_predictions
from ssal_keras.grouping.confusion import confusion_matrix

#: The head the simulation fuses is this much better than the base's implied group accuracy.
HEAD_MARGIN = 0.02
#: Repetitions of the simulated head; the gain is their mean, with its SE.
REPEATS = 20
#: SSAL is advised when the best gain's mean minus 2 SE is above this (0.1 points).
MIN_GAIN = 0.001
_SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


def simulate_gain(probabilities, labels, grouping, head_accuracy, alpha, *, repeats=REPEATS,
                  seed=0):
    """Joint top-1 minus base top-1 when a simulated head of ``head_accuracy`` is fused at
    ``alpha``: ``(mean, SE)`` over ``repeats`` draws.

    Noise model: for each example the head is right with probability ``head_accuracy`` and
    then puts that probability on the true group; a wrong head puts it on one wrong group,
    drawn in proportion to the base's own probability of each wrong group (its mistakes
    follow the base's confusions); the rest is spread evenly over the other groups. Fusion
    as ``JointPrediction``: ``argmax_c log p_base(c) + alpha * log p_head(g(c))``.
    """
    probabilities, labels = check_predictions(probabilities, labels)
    grouping = np.asarray(grouping, dtype=np.int64)
    groups = int(grouping.max()) + 1
    if not 1.0 / groups < head_accuracy < 1.0:
        raise ValueError(f"head_accuracy must be in (1/{groups}, 1); received {head_accuracy}.")
    rows, rng = np.arange(len(labels)), np.random.default_rng(seed)
    true_group = grouping[labels]
    wrong_mass = probabilities @ np.eye(groups)[grouping]
    wrong_mass[rows, true_group] = 0.0
    others = 1.0 - np.eye(groups)[true_group]
    wrong_mass = np.where(wrong_mass.sum(-1, keepdims=True) > 0, wrong_mass, others)
    wrong_cumulative = np.cumsum(wrong_mass / wrong_mass.sum(-1, keepdims=True), axis=-1)
    log_base = np.log(np.maximum(probabilities, _SMALLEST_PROBABILITY))
    base_top1 = np.mean(probabilities.argmax(-1) == labels)
    gains = []
    for _ in range(repeats):
        wrong_group = np.minimum((rng.random((len(labels), 1)) > wrong_cumulative).sum(-1),
                                 groups - 1)
        head_group = np.where(rng.random(len(labels)) < head_accuracy, true_group, wrong_group)
        head = np.full((len(labels), groups), (1.0 - head_accuracy) / (groups - 1))
        head[rows, head_group] = head_accuracy
        joint = log_base + alpha * np.log(head)[:, grouping]
        gains.append(np.mean(joint.argmax(-1) == labels) - base_top1)
    return float(np.mean(gains)), float(np.std(gains, ddof=1) / np.sqrt(repeats))


def advise(probabilities, labels, num_groups, *, alpha, criterion="join_similar",
           tie_break="random", seed=0):
    """The advisor's table and verdict for held-out ``probabilities`` of a baseline.

    Args:
        probabilities: (examples, classes) base probabilities on held-out images.
        labels: their class ids.
        num_groups: sequence of int. Candidate numbers of groups (each 2 .. classes - 1).
        alpha: float. The recipe's fusion weight.
        criterion, tie_break, seed: how the trainer would make the groupings.

    Returns:
        dict: ``rows`` (one per K: ``num_groups``, ``grouping``, ``within_group_share``,
        ``implied_group_accuracy``, ``head_accuracy``, ``simulated_gain``, ``gain_se``),
        ``best`` (the K advised, or None) and ``verdict`` (one line).
    """
    probabilities, labels = check_predictions(probabilities, labels)
    classes = probabilities.shape[1]
    predicted = probabilities.argmax(-1)
    confusion = confusion_matrix(labels, predicted, classes)
    errors = predicted != labels
    rows = []
    for k in num_groups:
        check_int(k, "num_groups", 2, classes - 1)
        grouping = grouping_from_confusion(confusion, k, criterion=criterion,
                                           tie_break=tie_break, seed=seed)
        same_group = grouping[predicted] == grouping[labels]
        implied = float(np.mean(same_group))
        head_accuracy = min(implied + HEAD_MARGIN, 0.999)
        gain, se = simulate_gain(probabilities, labels, grouping, head_accuracy, alpha,
                                 seed=seed)
        rows.append({"num_groups": int(k), "grouping": grouping.tolist(),
                     "within_group_share": float(np.mean(same_group[errors]))
                     if errors.any() else 0.0,
                     "implied_group_accuracy": implied, "head_accuracy": head_accuracy,
                     "simulated_gain": gain, "gain_se": se})
    best = max(rows, key=lambda r: r["simulated_gain"])
    helps = best["simulated_gain"] - 2 * best["gain_se"] > MIN_GAIN
    reason = (f"a head {HEAD_MARGIN * 100:g} points above the base's implied group accuracy "
              f"gains {best['simulated_gain'] * 100:+.2f} +- {best['gain_se'] * 100:.2f} "
              f"points at K={best['num_groups']}, alpha {alpha:g}; "
              f"{(1 - best['within_group_share']) * 100:.0f}% of the base's errors cross "
              "groups")
    verdict = (f"use K={best['num_groups']}: {reason}" if helps
               else f"SSAL is unlikely to help here: {reason}")
    return {"rows": rows, "best": best["num_groups"] if helps else None, "verdict": verdict}
