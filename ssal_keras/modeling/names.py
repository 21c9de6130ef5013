"""The output names of every model the project builds, below all model code so that any
module may name an output.

An ``SSALModel`` returns a dict: ``base`` (the backbone's softmax; +TR when SSAL-trained),
``aux_<b>`` (branch ``b``'s softmax over its groups) and ``joint`` (the fused prediction, +JP;
docs/method.md, section 1). A plain classifier has one output, read as ``base``.
"""

BASE = "base"
JOINT = "joint"
AUX_PREFIX = "aux_"


def aux_name(index):
    """The output name of branch ``index``: ``aux_0``, ``aux_1``, ..."""
    return f"{AUX_PREFIX}{index}"
