"""Confusion matrices and the label distances made from them (docs/method.md, section 2).

`confusion_matrix` counts (true label, predicted label) pairs; `confusion_distance` turns the
counts into the distance matrix that `balanced_grouping` clusters: confused labels close
(`"join_similar"`, the paper's default) or far apart (`"split_similar"`, supplement E.2).

Example:

>>> counts = confusion_matrix([0, 0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 0, 2, 2], num_classes=3)
>>> counts.tolist()
[[1, 2, 0], [1, 1, 0], [0, 0, 2]]
>>> confusion_distance(counts).tolist()
[[0.0, 0.0, 1.5], [0.0, 0.0, 1.5], [1.5, 1.5, 0.0]]
>>> confusion_distance(counts, "split_similar").tolist()
[[0.0, 1.5, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, 0.0]]
>>> confusion_distance(counts, maximum="raw").tolist()
[[0.0, 0.5, 2.0], [0.5, 0.0, 2.0], [2.0, 2.0, 0.0]]
"""

import numpy as np

from ssal_keras.grouping.checks import as_float_matrix, check_choice, check_int

CRITERIA = ("join_similar", "split_similar")
MAXIMA = ("symmetrised", "raw")


def confusion_matrix(labels, predictions, num_classes):
    """Counts (true label, predicted label) pairs: the input of ``confusion_distance``.

    Args:
        labels: array-like of int, shape (N,). True class ids.
        predictions: array-like of int, shape (N,). Predicted class ids.
        num_classes: int. Number of classes C.

    Returns:
        np.ndarray of int64, shape (C, C); rows are true labels, columns predictions.
    """
    num_classes = check_int(num_classes, "num_classes", 1)
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions must have the same length; received {labels.size} "
            f"labels and {predictions.size} predictions."
        )
    for name, ids in (("labels", labels), ("predictions", predictions)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(
                f"{name} must be class ids in 0..{num_classes - 1}; received values "
                f"{ids.min()}..{ids.max()}."
            )
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return counts


def confusion_distance(confusion, criterion="join_similar", *, maximum="symmetrised"):
    """Turns a confusion matrix into a label distance matrix (docs/method.md, section 2).

    The off-diagonal counts are symmetrised, `M = (M + M^T) / 2` with a zero diagonal, then

    - `"join_similar"` (the paper's default, "group_similar"): `D = max(M) - M`, so labels
      that are often confused are close and end up in the same group;
    - `"split_similar"` (supplement E.2): `D = M`, so confused labels are far apart and end
      up in different groups.

    `maximum="raw"` makes the join-similar distances exactly the authors' (keras/helper.py:58-69,
    docs/authors_settings.md, section 10.2): they subtract from the maximum of the raw counts,
    before symmetrising: `D = max(M_raw) - M_raw` with a zero diagonal, then `(D + D^T) / 2`. That
    is the default distances plus the constant `max(M_raw) - max(M)` off the diagonal (exactly for
    counts, up to rounding for rates). It is 0 only when some pair reaches the largest raw count
    both ways; otherwise no pair is at distance 0 any more. Means shift by the same constant, so
    only comparisons with an exact 0 change: the authors' group choice, where an empty group scores
    0 (see `balanced_grouping`'s `tie_break="authors"`).
    Split-similar distances are already the authors' (`(M + M^T) / 2`, zero diagonal).

    Args:
        confusion: array-like of shape (C, C). Confusion counts or rates (rows: true label,
            columns: predicted label); entries off the diagonal must be finite and >= 0. The
            diagonal (correct predictions) is ignored.
        criterion: str. `"join_similar"` or `"split_similar"`.
        maximum: str. `"symmetrised"` (default; the maximum of the symmetrised counts, so
            the most-confused pair is at distance 0) or `"raw"` (the authors' preparation).
            Used only by `"join_similar"`.

    Returns:
        np.ndarray of float64, shape (C, C): a symmetric distance matrix, zero diagonal,
        entries >= 0.

    Raises:
        ValueError: if `confusion` is not a square non-negative matrix or `criterion` or
            `maximum` is unknown.
    """
    criterion = check_choice(criterion, "criterion", CRITERIA)
    maximum = check_choice(maximum, "maximum", MAXIMA)
    counts = as_float_matrix(confusion, "confusion")
    off_diagonal = ~np.eye(counts.shape[0], dtype=bool)
    if criterion == "join_similar" and maximum == "raw":
        # The authors' order of operations: subtract from the raw maximum, then symmetrise.
        top = counts[off_diagonal].max() if counts.shape[0] > 1 else 0.0
        distance = top - counts
        np.fill_diagonal(distance, 0.0)
        return 0.5 * (distance + distance.T)
    counts = 0.5 * (counts + counts.T)
    np.fill_diagonal(counts, 0.0)
    if criterion == "split_similar":
        return counts
    top = counts[off_diagonal].max() if counts.shape[0] > 1 else 0.0
    distance = top - counts
    np.fill_diagonal(distance, 0.0)
    return distance
