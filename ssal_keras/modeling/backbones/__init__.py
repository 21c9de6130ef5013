"""Backbones of the SSAL paper as plain functional Keras models, and their feature taps.

``build(name, num_classes=...)`` gives one of the seven backbones of docs/method.md, section 3
(``BACKBONE_NAMES``) as the authors' code builds it (docs/authors_settings.md, section 9); the
family builders (``preact_resnet``, ``wide_resnet``, ``densenet_bc``, ``torchvision_resnet``) take
keyword-only arguments and build any variant, including tiny ones for tests;
``resnet50_keras_applications`` is Keras's own ResNet50; ``from_keras_cv`` makes a keras-cv
backbone a classifier tapped at its pyramid levels (``"P2"``, ``"P3"``, ...). Each builder
declares its taps as it builds (``declare_taps``); ``taps(model)`` lists a model's named
feature maps with their channels and stride (inferred from layer names for a model that
declares none); ``resolve_tap(model, tap)`` finds one by tap or layer name.
"""

from ssal_keras.modeling.backbones.densenet import (
    AUTHORS_DENSENET_STYLE,
    DENSENET_BC_SPECS,
    densenet_bc,
)
from ssal_keras.modeling.backbones.keras_cv_adapter import from_keras_cv
from ssal_keras.modeling.backbones.registry import BACKBONE_NAMES, DEFAULT_INPUT_SHAPES, build
from ssal_keras.modeling.backbones.resnet import (
    AUTHORS_RESNET_STYLE,
    PREACT_RESNET_SPECS,
    TORCHVISION_RESNET_STYLE,
    preact_resnet,
    resnet50_keras_applications,
    torchvision_resnet,
)
from ssal_keras.modeling.backbones.taps import Tap, declared_layout, resolve_tap, taps
from ssal_keras.modeling.backbones.taps import declare as declare_taps
from ssal_keras.modeling.backbones.wrn import AUTHORS_WRN_STYLE, WIDE_RESNET_SPECS, wide_resnet

__all__ = [
    "AUTHORS_DENSENET_STYLE",
    "AUTHORS_RESNET_STYLE",
    "AUTHORS_WRN_STYLE",
    "TORCHVISION_RESNET_STYLE",
    "BACKBONE_NAMES",
    "DEFAULT_INPUT_SHAPES",
    "DENSENET_BC_SPECS",
    "PREACT_RESNET_SPECS",
    "Tap",
    "WIDE_RESNET_SPECS",
    "build",
    "declare_taps",
    "declared_layout",
    "densenet_bc",
    "from_keras_cv",
    "preact_resnet",
    "resnet50_keras_applications",
    "resolve_tap",
    "taps",
    "torchvision_resnet",
    "wide_resnet",
]
