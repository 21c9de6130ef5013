"""The runnable examples in the package's docstrings."""

import doctest
import importlib

import pytest

MODULES = [
    "ssal_keras.grouping",
    "ssal_keras.grouping.balanced",
    "ssal_keras.grouping.checks",
    "ssal_keras.grouping.confusion",
    "ssal_keras.grouping.files",
    "ssal_keras.modeling.joint",
    "ssal_keras.modeling.model",
    "ssal_keras.training.config",
    "ssal_keras.training.run",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
