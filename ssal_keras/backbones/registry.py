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
}

#: The registry names accepted by ``build``.
BACKBONE_NAMES = tuple(_BACKBONES)

#: The paper's input shape of each backbone (``build``'s default).
DEFAULT_INPUT_SHAPES = {name: entry[2] for name, entry in _BACKBONES.items()}

#: Where the paper attaches its SSAL heads (SPEC section 4), by tap name (see ``taps``).
#: ResNet18 (Tiny ImageNet, Table 6) has one head, attached at g1 or g2: the ends of the
#: first two stages. SE-WRN 16-8 (2 blocks per group) follows WRN 28-10's rule "middle of
#: group 1, middle of group 2, end of group 2" (the authors' code gives no SE-WRN positions).
PAPER_TAPS = {
    "resnet18_tiny_imagenet": ("stage1", "stage2"),
    "resnet50_cifar": ("stage1", "stage2", "stage3"),
    "se_wrn_16_8": ("stage1_block1", "stage2_block1", "stage2"),
    "wrn_28_10": ("stage1_block2", "stage2_block2", "stage2"),
    "densenet_bc_100_12": ("stage1", "transition1", "transition2"),
    "densenet_bc_190_40": ("stage1", "transition1", "transition2"),
    "resnet50_imagenet": ("stage1", "stage2", "stage3"),
}


def build(name, *, num_classes, input_shape=None):
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
    return builder(**spec, num_classes=num_classes, input_shape=input_shape, name=name)
