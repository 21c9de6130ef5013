"""Argument checks shared by the grouping modules: one-line ValueErrors naming the argument.

Each check returns the value converted (an int, a float64 matrix) or raises a ValueError that
names the argument, what was received (shortened by `describe`) and what is valid.

Example:

>>> check_int(3, "num_groups", 1, 5)
3
>>> check_choice("authors", "tie_break", ("random", "authors"))
'authors'
>>> check_choice("author", "tie_break", ("random", "authors"))
Traceback (most recent call last):
    ...
ValueError: tie_break must be one of random, authors; received tie_break='author'.
>>> as_float_matrix([[5, 1], [2, 7]], "confusion").tolist()
[[0.0, 1.0], [2.0, 0.0]]
"""

import numbers

import numpy as np


def describe(value):
    """Short text for an argument value in an error message (no huge array dumps)."""
    if isinstance(value, np.ndarray):
        if value.size <= 8:
            return np.array2string(value, separator=", ").replace("\n", "")
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def as_float_matrix(matrix, name):
    """Validates a 2-D square, finite (off the diagonal), non-negative matrix."""
    try:
        array = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{name} must be a 2-D square matrix of numbers; received an object that is not "
            f"numeric ({error})."
        ) from None
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D square matrix (one row and one column per label); "
            f"received shape {array.shape}."
        )
    off_diagonal = ~np.eye(array.shape[0], dtype=bool)
    values = array[off_diagonal]
    if not np.all(np.isfinite(values)):
        row, col = np.argwhere(~np.isfinite(array) & off_diagonal)[0]
        raise ValueError(
            f"{name} must have finite entries off the diagonal; received "
            f"{name}[{row}, {col}]={array[row, col]}."
        )
    if np.any(values < 0):
        row, col = np.argwhere((array < 0) & off_diagonal)[0]
        raise ValueError(
            f"{name} must have entries >= 0 off the diagonal; received "
            f"{name}[{row}, {col}]={array[row, col]}."
        )
    np.fill_diagonal(array, 0.0)
    return array


def check_int(value, name, minimum, maximum=None, what=""):
    """Returns `value` as an int if it is an integer (not a bool) in `minimum..maximum`
    (`maximum` None: no upper bound), else a one-line ValueError; `what` is appended to the
    bound in the message."""
    valid = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if not valid or value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(
            f"{name} must be an int {bound}{what}; received {name}={describe(value)}."
        )
    return int(value)


def check_choice(value, name, choices):
    """Returns `value` if it is one of the strings `choices`, else a one-line ValueError."""
    if not (isinstance(value, str) and value in choices):
        raise ValueError(
            f"{name} must be one of {', '.join(choices)}; received {name}={describe(value)}."
        )
    return value


def check_predictions(probabilities, labels):
    """``(probabilities as float64 (examples, classes), labels as int64)``: a model's
    probabilities and the true class of each example, checked (shared by the advisor and the
    calibration scores)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError(f"probabilities must be a non-empty (examples, classes) array; "
                         f"received shape {probabilities.shape}.")
    if labels.shape != probabilities.shape[:1] or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {probabilities.shape[0]} integer class ids, one "
                         f"class id per example; received {labels.dtype} of shape "
                         f"{labels.shape}.")
    if labels.min() < 0 or labels.max() >= probabilities.shape[1]:
        raise ValueError(f"labels must be class ids in 0..{probabilities.shape[1] - 1}, one "
                         f"class id per example; received {labels.min()}..{labels.max()}.")
    if not np.all(np.isfinite(probabilities)) or probabilities.min() < 0:
        raise ValueError("probabilities must be finite and >= 0 (a softmax output).")
    return probabilities, labels.astype(np.int64)
