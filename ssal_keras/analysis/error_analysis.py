"""The authors' error analysis of an SSAL model, and the choice of the combination exponent.

Each branch is compared with the base classifier at the branch's own level, the group: the
base's vote for group ``g_b(argmax p_base)`` against the branch's ``argmax p_aux_b``. Where they
disagree one of them must be wrong about the group; the joint prediction (docs/method.md, section 1)
lets the branch overrule the base there. ``alpha_sweep`` scores the joint prediction over a range of
exponents on data the model was not trained on (the run's held-out images), so that the
exporter's ``--alpha`` can take the best one.
"""

import numpy as np

from ssal_keras.modeling import outputs
from ssal_keras.modeling.joint import JointPrediction, validate_alpha


def _rate(mask, within=None):
    if within is None:
        return float(np.mean(mask)) if mask.size else None
    count = int(np.sum(within))
    return float(np.sum(mask & within) / count) if count else None


def _branch_report(grouping, base_pred, branch_probabilities, labels, base_right):
    """One branch against the base classifier at the branch's level, the group; also returns
    where the two agree (a boolean mask over the examples)."""
    grouping = np.asarray(grouping)
    aux_pred = np.argmax(branch_probabilities, axis=-1)
    true_group = grouping[labels]
    aux_right = aux_pred == true_group
    base_group_right = grouping[base_pred] == true_group
    agree = grouping[base_pred] == aux_pred
    report = {
        "aux_accuracy": _rate(aux_right),
        "base_group_accuracy": _rate(base_group_right),
        "agreement": _rate(agree),
        "branch_right_base_wrong": _rate(aux_right & ~base_group_right),
        "base_right_branch_wrong": _rate(base_group_right & ~aux_right),
        "base_accuracy_when_agreeing": _rate(base_right, within=agree),
        "aux_accuracy_when_disagreeing": _rate(aux_right, within=~agree),
    }
    return report, agree


def branch_agreement(predictions, labels, groupings):
    """How the base classifier and each branch agree, and who is right when they do not.

    Args:
        predictions: dict of probability arrays by output name: ``base`` ``(N, classes)``,
            ``aux_<b>`` ``(N, groups_b)`` and optionally ``joint``.
        labels: int array ``(N,)``.
        groupings: list of 1-D int arrays, one per branch.

    Returns:
        A dict: ``examples``; ``base_accuracy`` and ``joint_accuracy``; ``joint_fixes`` (base
        wrong, joint right) and ``joint_breaks`` (the reverse), as fractions of all examples;
        ``branches``: per branch ``aux_accuracy`` (group), ``base_group_accuracy`` (the
        group of the base's class), ``agreement``, ``branch_right_base_wrong`` and
        ``base_right_branch_wrong`` (group level, fractions of all examples),
        ``base_accuracy_when_agreeing`` and ``aux_accuracy_when_disagreeing``; and
        ``all_branches_agree``: the fraction where every branch agrees with the base and the
        base's accuracy there (conflicting predictions set aside).
    """
    labels = np.asarray(labels).reshape(-1)
    base_pred = np.argmax(predictions[outputs.BASE], axis=-1)
    base_right = base_pred == labels
    report = {"examples": int(labels.size), "base_accuracy": _rate(base_right)}
    if outputs.JOINT in predictions:
        joint_right = np.argmax(predictions[outputs.JOINT], axis=-1) == labels
        report.update(joint_accuracy=_rate(joint_right),
                      joint_fixes=_rate(joint_right & ~base_right),
                      joint_breaks=_rate(base_right & ~joint_right))
    everyone_agrees = np.ones_like(base_right)
    branches = []
    for index, grouping in enumerate(groupings):
        branch, agree = _branch_report(grouping, base_pred,
                                       predictions[outputs.aux_name(index)], labels, base_right)
        everyone_agrees &= agree
        branches.append(branch)
    report["branches"] = branches
    report["all_branches_agree"] = {
        "fraction": _rate(everyone_agrees),
        "base_accuracy": _rate(base_right, within=everyone_agrees),
    }
    return report


def joint_accuracy(predictions, labels, groupings, alpha):
    """Top-1 accuracy of the joint prediction with exponent ``alpha`` (the model's own
    ``JointPrediction`` layer, rebuilt) from the base and branch ``predictions``."""
    layer = JointPrediction(groupings, alpha=alpha)
    inputs = [predictions[outputs.BASE]] + [predictions[outputs.aux_name(i)]
                                            for i in range(len(groupings))]
    joint = np.asarray(layer(inputs))
    return float(np.mean(np.argmax(joint, axis=-1) == np.asarray(labels).reshape(-1)))


def alpha_sweep(predictions, labels, groupings, alphas):
    """Joint accuracy for every exponent in ``alphas`` (``predictions`` as for
    ``branch_agreement``); the best is the smallest exponent of the highest accuracy (alpha 0
    is the base classifier alone).

    Returns:
        ``(accuracies, best_alpha)``: a list of floats (one per alpha) and a float.
    """
    if not groupings:
        raise ValueError("the model has no SSAL branches: there is no exponent to choose.")
    alphas = [validate_alpha(a) for a in alphas]
    if not alphas:
        raise ValueError("no exponents to sweep; e.g. --alphas=0,0.1,0.2,0.5,1.")
    accuracies = [joint_accuracy(predictions, labels, groupings, a) for a in alphas]
    best = max(range(len(alphas)), key=lambda i: (accuracies[i], -alphas[i]))
    return accuracies, alphas[best]
