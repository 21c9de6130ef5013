"""Grouping validation and grouping files (docs/method.md, section 2).

A grouping is one group id per label, the ids forming `0..k-1` with every group non-empty.
A grouping file holds one integer group id per line, in label order: the authors' format
(their files write ids as floats, `2.000000000000000000e+00`, which are accepted).

Example:

>>> import os, tempfile
>>> validate_grouping([1, 0, 1.0, 2]).tolist()
[1, 0, 1, 2]
>>> group_sizes([1, 0, 1, 2]).tolist()
[1, 2, 1]
>>> validate_grouping([0, 2, 2])
Traceback (most recent call last):
    ...
ValueError: grouping must use every group id from 0 to 2 (groups must be non-empty and
numbered contiguously); missing ids: 1.
>>> path = os.path.join(tempfile.mkdtemp(), "grouping.txt")
>>> save_grouping(path, [1, 0, 1, 2])
>>> open(path).read().split()
['1', '0', '1', '2']
>>> load_grouping(path, num_classes=4).tolist()
[1, 0, 1, 2]
"""

import os

import numpy as np

from ssal_keras import runs
from ssal_keras.grouping.checks import check_int


def _integer_ids(grouping, name):
    """`grouping` as a 1-D int64 array; integral floats are accepted, anything else raises."""
    try:
        array = np.asarray(grouping)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 1-D sequence of integer group ids; {error}.") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of group ids (one per label); "
            f"received shape {array.shape}."
        )
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            index = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} must hold integer group ids; received {name}[{index}]={array[index]}."
            )
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer group ids; received values of dtype {array.dtype}."
        )
    return array.astype(np.int64)


def _check_contiguous(array, name):
    """Raises unless the int64 ids `array` are >= 0 and use every id from 0 to their max."""
    if array.min() < 0:
        index = int(np.argmin(array))
        raise ValueError(
            f"{name} must hold group ids >= 0; received {name}[{index}]={array[index]}."
        )
    used = np.unique(array)
    if used.size != used[-1] + 1:
        # The first ten missing ids are below used.size + 10; never allocate up to max id.
        first = np.setdiff1d(np.arange(min(used[-1] + 1, used.size + 10)), used)[:10]
        more = used[-1] + 1 - used.size > first.size
        shown = ", ".join(str(i) for i in first) + (", ..." if more else "")
        raise ValueError(
            f"{name} must use every group id from 0 to {array.max()} (groups must be "
            f"non-empty and numbered contiguously); missing ids: {shown}."
        )


def validate_grouping(grouping, *, num_classes=None, name="grouping"):
    """Checks a grouping and returns it as an int64 array.

    Args:
        grouping: array-like of shape (C,). One group id per label; ids must be integers
            (integral floats such as 2.0 are accepted) forming `0..k-1` with every group
            non-empty.
        num_classes: int or None. When given, the number of labels the grouping must have.
        name: str. How the grouping is called in error messages.

    Returns:
        np.ndarray of int64, shape (C,).

    Raises:
        ValueError: if the grouping is malformed; the message names `name`, what was
            received and what is valid.
    """
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", 1)
    array = _integer_ids(grouping, name)
    _check_contiguous(array, name)
    if num_classes is not None and array.size != num_classes:
        raise ValueError(
            f"{name} has {array.size} labels but the model has {num_classes} classes; give "
            f"one group id per class."
        )
    return array


def group_sizes(grouping):
    """Number of labels in each group.

    Args:
        grouping: array-like of shape (C,). A valid grouping (see `validate_grouping`).

    Returns:
        np.ndarray of int64, shape (k,): the size of groups 0..k-1.
    """
    return np.bincount(validate_grouping(grouping)).astype(np.int64)


def save_grouping(path, grouping):
    """Writes a grouping as text, one integer group id per line in label order.

    The grouping is validated first, and the file is replaced atomically (written to a
    temporary file in the same folder, then renamed), so a reader never sees half a file.

    Args:
        path: str or os.PathLike. File to write; its folder must exist.
        grouping: array-like of shape (C,). A valid grouping (see `validate_grouping`).

    Raises:
        ValueError: if the grouping is invalid.
        OSError: if the file cannot be written.
    """
    array = validate_grouping(grouping)
    runs.write_text(os.fspath(path), "".join(f"{int(g)}\n" for g in array))


def _parse_id(text, path, line_number):
    """The group id on one non-blank line of a grouping file: an int or an integral float."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not (np.isfinite(number) and number == int(number)):
        raise ValueError(
            f"grouping file {path} must hold one integer group id per line; "
            f"received {text!r} on line {line_number}."
        )
    return int(number)


def load_grouping(path, num_classes=None):
    """Reads a grouping written by `save_grouping` (or the authors' code).

    Args:
        path: str or os.PathLike. Text file with one integer group id per line; blank lines
            are ignored, integral floats such as `2.000000000000000000e+00` are accepted.
        num_classes: int or None. When given, the number of labels the grouping must have.

    Returns:
        np.ndarray of int64, shape (C,).

    Raises:
        ValueError: if a line is not an integer or the grouping is invalid.
        OSError: if the file cannot be read.
    """
    path = os.fspath(path)
    ids = []
    with open(path) as stream:
        for line_number, line in enumerate(stream, start=1):
            text = line.strip()
            if text:
                ids.append(_parse_id(text, path, line_number))
    return validate_grouping(
        np.array(ids, dtype=np.int64), num_classes=num_classes, name=f"grouping file {path}"
    )
