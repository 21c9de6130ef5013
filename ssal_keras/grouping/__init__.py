"""Balanced grouping of labels (supplement section A / docs/method.md, section 2).

An SSAL branch predicts a *grouping* of the `C` fine labels: one group id in `0..k-1` per
label. This package builds such groupings from a label distance matrix with the authors'
balanced clustering, turns a confusion matrix into a distance matrix, and reads, writes and
validates grouping files (one integer group id per line, in label order: the authors' format).
`balanced_grouping(..., tie_break="authors")` with `confusion_distance(..., maximum="raw")`
reproduces the authors' `create_grouping_v2` exactly, ties included (docs/authors_settings.md,
section 10.2).

Modules (every public name is re-exported here, e.g. ``grouping.balanced_grouping``):

- ``balanced``: ``balanced_grouping``, ``grouping_from_confusion``, the two tie-break modes
  (``TIE_BREAKS``, ``TIE_RTOL``);
- ``confusion``: ``confusion_matrix``, ``confusion_distance`` (``CRITERIA``, ``MAXIMA``);
- ``files``: ``validate_grouping``, ``group_sizes``, ``save_grouping``, ``load_grouping``;
- ``checks``: the argument checks the others share;
- ``advisor``: ``advise`` (will SSAL help, and with how many groups, from a baseline's
  held-out predictions; BUILD_NOTES.md, "SSAL advisor").

NumPy only; nothing here imports TensorFlow or Keras.

Example, from a confusion matrix to a grouping file:

>>> import os, tempfile
>>> confusion = [[9, 4, 0], [3, 9, 1], [0, 0, 9]]
>>> groups = grouping_from_confusion(confusion, 2)
>>> path = os.path.join(tempfile.mkdtemp(), "groups_2.txt")
>>> save_grouping(path, groups)
>>> load_grouping(path, num_classes=3).tolist(), group_sizes(groups).tolist()
([0, 0, 1], [2, 1])
"""

from ssal_keras.grouping.balanced import (
    TIE_BREAKS,
    TIE_RTOL,
    balanced_grouping,
    grouping_from_confusion,
)
from ssal_keras.grouping.confusion import CRITERIA, MAXIMA, confusion_distance, confusion_matrix
from ssal_keras.grouping.files import group_sizes, load_grouping, save_grouping, validate_grouping

__all__ = [
    "CRITERIA",
    "MAXIMA",
    "TIE_BREAKS",
    "TIE_RTOL",
    "balanced_grouping",
    "confusion_distance",
    "confusion_matrix",
    "group_sizes",
    "grouping_from_confusion",
    "load_grouping",
    "save_grouping",
    "validate_grouping",
]
