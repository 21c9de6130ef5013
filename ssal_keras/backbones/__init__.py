"""Backbones of the SSAL paper as plain functional Keras models, and their feature taps.

``build(name, num_classes=...)`` gives one of the seven backbones of SPEC section 3
(``BACKBONE_NAMES``); the family builders (``preact_resnet``, ``wide_resnet``,
``densenet_bc``, ``resnet50_imagenet``) take keyword-only arguments and build any variant,
including tiny ones for tests. ``taps(model)`` lists a model's named feature maps with their
channels and stride; ``resolve_tap(model, tap)`` finds one by tap or layer name.
"""

from ssal_keras.backbones.densenet import DENSENET_BC_SPECS, densenet_bc
from ssal_keras.backbones.registry import (
    BACKBONE_NAMES,
    DEFAULT_INPUT_SHAPES,
    build,
)
from ssal_keras.backbones.resnet import PREACT_RESNET_SPECS, preact_resnet, resnet50_imagenet
from ssal_keras.backbones.taps import Tap, resolve_tap, taps
from ssal_keras.backbones.wrn import WIDE_RESNET_SPECS, wide_resnet

__all__ = [
    "BACKBONE_NAMES",
    "DEFAULT_INPUT_SHAPES",
    "DENSENET_BC_SPECS",
    "PREACT_RESNET_SPECS",
    "Tap",
    "WIDE_RESNET_SPECS",
    "build",
    "densenet_bc",
    "preact_resnet",
    "resnet50_imagenet",
    "resolve_tap",
    "taps",
    "wide_resnet",
]
