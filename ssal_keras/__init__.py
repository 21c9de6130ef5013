"""ssal_keras: Self-Supervised Autogenous Learning (Palacio et al., ICPR 2020) for Keras 3.

The data path, top to bottom: ``grouping`` (label groupings, supplement A) -> ``backbones``
(the paper's networks and their taps, from ``blocks``) -> ``heads`` (auxiliary networks) ->
``joint`` (the fused prediction) -> ``model`` (``SSALModel``, ``Branch``) -> ``paper`` (the
paper's configurations) -> ``weight_decay`` (which parameters decay, for the trainer).

Importing the package registers its Keras layers and models, so ``.keras`` files load with
``safe_mode=True``.
"""

from ssal_keras import grouping
from ssal_keras.modeling import backbones, blocks, heads, weight_decay
from ssal_keras.modeling.joint import JointPrediction
from ssal_keras.modeling.model import Branch, SSALModel
from ssal_keras.modeling.paper import PAPER_MODELS, paper_model

__all__ = [
    "Branch",
    "JointPrediction",
    "PAPER_MODELS",
    "SSALModel",
    "backbones",
    "blocks",
    "grouping",
    "heads",
    "paper_model",
    "weight_decay",
]
__version__ = "0.1.0"
