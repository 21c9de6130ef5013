"""ssal_keras: Self-Supervised Autogenous Learning (Palacio et al., ICPR 2020) for Keras 3.

The top of the package is its command-line entry points (``python -m ssal_keras.train``,
``evaluate``, ``group``, ``analyze``, ``export``, ``demo``); below them one subpackage per
role, in the order the data flows (README.md, "Layout": the floors, which
tests/test_layering.py holds): ``runs`` (a run folder's files, written atomically) ->
``data`` -> ``grouping`` (label groupings, supplement A) -> ``modeling`` (backbones and their
taps, heads, the joint prediction, ``SSALModel``) -> ``evaluation`` (the one evaluation) ->
``training`` (``RunConfig``, ``train``, checkpoints, the distributed loop) -> ``runs.reader``
(a finished run read back) -> ``analysis`` (error analysis, attacks, CAMs) -> ``export``
(SavedModel and ONNX).

This module re-exports the names a model author needs: ``SSALModel``, ``Branch``,
``JointPrediction``, ``PAPER_MODELS`` and ``paper_model``, and the modules ``backbones``,
``blocks``, ``grouping``, ``heads`` and ``weight_decay``. Importing the package registers its
Keras layers and models, so ``.keras`` files load with ``safe_mode=True``.
"""

from ssal_keras import startup

# Before anything imports TensorFlow: the command lines start without its native log lines.
startup.quiet_tensorflow_start()

from ssal_keras import grouping  # noqa: E402
from ssal_keras.modeling import backbones, blocks, heads, weight_decay  # noqa: E402
from ssal_keras.modeling.joint import JointPrediction  # noqa: E402
from ssal_keras.modeling.model import Branch, SSALModel  # noqa: E402
from ssal_keras.modeling.paper import PAPER_MODELS, paper_model  # noqa: E402

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
