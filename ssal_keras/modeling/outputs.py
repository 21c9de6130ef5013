"""The output contract of every model the project builds, in one place.

An ``SSALModel`` returns a dict: ``base`` (the backbone's softmax; +TR when SSAL-trained),
``aux_<b>`` (branch ``b``'s softmax over its groups) and ``joint`` (the fused prediction, +JP;
docs/method.md, section 1). A plain classifier has one output, read as ``base``. Every module that
names an output or asks "is this an SSAL model, what are its groupings" asks here.
"""

BASE = "base"
JOINT = "joint"
AUX_PREFIX = "aux_"


def aux_name(index):
    """The output name of branch ``index``: ``aux_0``, ``aux_1``, ..."""
    return f"{AUX_PREFIX}{index}"


def is_ssal(model):
    """Whether ``model`` is an ``SSALModel`` (base, branch and joint outputs)."""
    from ssal_keras.modeling.model import SSALModel  # noqa: PLC0415  (model imports this)

    return isinstance(model, SSALModel)


def model_groupings(model):
    """The groupings of an SSAL model's branches, in branch order; empty for a plain
    classifier."""
    return [b.grouping for b in model.branches] if is_ssal(model) else []


def output_names(model):
    """Every output name of ``model``: ``base``, then ``aux_<b>`` and ``joint`` for SSAL."""
    if not is_ssal(model):
        return [BASE]
    return [BASE, *(aux_name(i) for i in range(len(model.branches))), JOINT]


def outputs_by_name(outputs):
    """A model's outputs as a dict: an SSAL model's as they are (``base``, ``aux_<b>``,
    ``joint``), a plain classifier's single output (a tensor, or a dict or list of one) as
    ``base``."""
    if isinstance(outputs, dict) and BASE in outputs:
        return dict(outputs)
    if isinstance(outputs, (dict, list, tuple)) and len(outputs) == 1:
        (outputs,) = outputs.values() if isinstance(outputs, dict) else outputs
    if isinstance(outputs, (dict, list, tuple)):
        raise ValueError(f"the model has {len(outputs)} outputs and none is named {BASE!r}; "
                         "give a classifier with one output, or an SSALModel.")
    return {BASE: outputs}
