"""The runnable examples in the package's docstrings (STYLE.md point 10)."""

import doctest

import pytest

from ssal_keras import grouping
from ssal_keras.modeling import joint, model


@pytest.mark.parametrize("module", [grouping, joint, model], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
