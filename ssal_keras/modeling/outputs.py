"""The output contract of every model the project builds: its output names (from ``names``,
re-exported here) and whether a model is an SSAL model and what its groupings are. Every module
above the model code that names an output or asks "is this an SSAL model, what are its
groupings" asks here; the model code itself takes the names from ``names``.
"""

from ssal_keras.modeling.model import SSALModel
from ssal_keras.modeling.names import AUX_PREFIX, BASE, JOINT, aux_name

__all__ = ["AUX_PREFIX", "BASE", "JOINT", "aux_name", "is_ssal", "model_groupings",
           "output_names", "outputs_by_name"]


def is_ssal(model):
    """Whether ``model`` is an ``SSALModel`` (base, branch and joint outputs)."""
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
