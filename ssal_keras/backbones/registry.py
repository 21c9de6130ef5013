"""The paper's seven backbones by name (SPEC section 3) and their SSAL taps (section 4)."""

from ssal_keras.backbones import common
from ssal_keras.backbones.densenet import DENSENET_BC_SPECS, densenet_bc
from ssal_keras.backbones.resnet import PREACT_RESNET_SPECS, preact_resnet, resnet50_imagenet
from ssal_keras.backbones.wrn import WIDE_RESNET_SPECS, wide_resnet

# name -> (family builder, the variant's arguments, the paper's input shape).
_BACKBONES = {
    "resnet18_tiny_imagenet": (
        preact_resnet, PREACT_RESNET_SPECS["resnet18_tiny_imagenet"], (64, 64, 3)
    ),
    "resnet50_cifar": (preact_resnet, PREACT_RESNET_SPECS["resnet50_cifar"], (32, 32, 3)),
    "se_wrn_16_8": (wide_resnet, WIDE_RESNET_SPECS["se_wrn_16_8"], (32, 32, 3)),
    "wrn_28_10": (wide_resnet, WIDE_RESNET_SPECS["wrn_28_10"], (32, 32, 3)),
    "densenet_bc_100_12": (densenet_bc, DENSENET_BC_SPECS["densenet_bc_100_12"], (32, 32, 3)),
    "densenet_bc_190_40": (densenet_bc, DENSENET_BC_SPECS["densenet_bc_190_40"], (32, 32, 3)),
    "resnet50_imagenet": (resnet50_imagenet, {}, (224, 224, 3)),
    "resnet_fashion_mnist": (
        preact_resnet, PREACT_RESNET_SPECS["resnet_fashion_mnist"], (28, 28, 1)
    ),
}

#: The registry names accepted by ``build``.
BACKBONE_NAMES = tuple(_BACKBONES)

#: The paper's input shape of each backbone (``build``'s default).
DEFAULT_INPUT_SHAPES = {name: entry[2] for name, entry in _BACKBONES.items()}

def build(name, *, num_classes, input_shape=None, normalization=None):
    """Builds one of the paper's backbones as a functional classifier (SPEC section 3).

    The model is named ``name``; its output is the base classifier's softmax probabilities
    (layers ``avg_pool`` then ``predictions``). Its taps: ``taps(model)``.

    Example::

        model = build("wrn_28_10", num_classes=100)
        model.count_params()  # 36,564,932

    Args:
        name: str. One of ``BACKBONE_NAMES``.
        num_classes: int. Number of classes (>= 2).
        input_shape: tuple or None. ``(height, width, channels)``; ``None`` for the paper's
            input (``DEFAULT_INPUT_SHAPES``).
        normalization: None, ``"scale"`` or ``(mean, std)``. Input normalisation inside the
            model, so it takes raw pixels (0..255): ``"scale"`` divides by 255, ``(mean, std)``
            standardises each channel with raw-pixel statistics.

    Returns:
        A functional ``keras.Model``.

    Raises:
        ValueError: on an unknown name, or an invalid ``num_classes`` or ``input_shape``.
    """
    if not isinstance(name, str) or name not in _BACKBONES:
        raise ValueError(
            f"`name` must be one of {list(BACKBONE_NAMES)}. Received: name={name!r}"
        )
    common.check_num_classes(num_classes)
    builder, spec, default_shape = _BACKBONES[name]
    if input_shape is None:
        input_shape = default_shape
    return builder(
        **spec, num_classes=num_classes, input_shape=input_shape, normalization=normalization,
        name=name,
    )
