"""The paper's seven backbones by name (docs/method.md, section 3), each as the authors' code builds
it (docs/authors_settings.md, section 9), and their SSAL taps (section 4)."""

import inspect

from ssal_keras.modeling.backbones import common
from ssal_keras.modeling.backbones.densenet import DENSENET_BC_SPECS, densenet_bc
from ssal_keras.modeling.backbones.resnet import (
    PREACT_RESNET_SPECS,
    preact_resnet,
    resnet50_keras_applications,
    torchvision_resnet,
)
from ssal_keras.modeling.backbones.wrn import WIDE_RESNET_SPECS, wide_resnet

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
    "resnet50_imagenet": (torchvision_resnet, {"stage_blocks": (3, 4, 6, 3)}, (224, 224, 3)),
    # Not the authors' network: Keras's own ResNet50 (v1 layout), for users who start from it.
    "resnet50_keras_applications": (resnet50_keras_applications, {}, (224, 224, 3)),
    "resnet_fashion_mnist": (
        preact_resnet, PREACT_RESNET_SPECS["resnet_fashion_mnist"], (28, 28, 1)
    ),
}

#: The registry names accepted by ``build``.
BACKBONE_NAMES = tuple(_BACKBONES)

#: The paper's input shape of each backbone (``build``'s default).
DEFAULT_INPUT_SHAPES = {name: entry[2] for name, entry in _BACKBONES.items()}

def build(name, *, num_classes, input_shape=None, normalization=None, **options):
    """Builds one of the paper's backbones as a functional classifier (docs/method.md, section 3).

    Each paper name builds the authors' version (docs/authors_settings.md, section 9): their
    BatchNorm momentum and epsilon, initialisers, conv biases, dropout and downsampling. The model
    is named ``name``; its output is the base classifier's softmax probabilities (layers
    ``avg_pool`` then ``predictions``). Its taps: ``taps(model)``.

    Example::

        model = build("wrn_28_10", num_classes=100)
        model.count_params()  # 36,564,932
        # Another variant is one keyword of the family builder away:
        build("wrn_28_10", num_classes=100, downsample="stride")

    Args:
        name: str. One of ``BACKBONE_NAMES``.
        num_classes: int. Number of classes (>= 2).
        input_shape: tuple or None. ``(height, width, channels)``; ``None`` for the paper's
            input (``DEFAULT_INPUT_SHAPES``).
        normalization: None, ``"scale"`` or ``(mean, std)``. Input normalisation inside the
            model, so it takes raw pixels (0..255): ``"scale"`` divides by 255, ``(mean, std)``
            standardises each channel with raw-pixel statistics.
        **options: keyword arguments of the family builder that replace the variant's
            (``style``, ``dropout_rate``, ``downsample``, ``zero_init_residual``, ...).

    Returns:
        A functional ``keras.Model``.

    Raises:
        ValueError: on an unknown name or option, or an invalid ``num_classes``,
            ``input_shape`` or option value.
    """
    if not isinstance(name, str) or name not in _BACKBONES:
        raise ValueError(
            f"`name` must be one of {list(BACKBONE_NAMES)}. Received: name={name!r}"
        )
    common.check_num_classes(num_classes)
    builder, _, default_shape = _BACKBONES[name]
    if input_shape is None:
        input_shape = default_shape
    return builder(
        **resolved_options(name, **options), num_classes=num_classes,
        input_shape=input_shape, normalization=normalization, name=name,
    )


def resolved_options(name, **options):
    """Every option the family builder of ``name`` receives: the builder's defaults, then the
    variant's (the authors' settings), then ``options``. Builds nothing.

    Raises:
        ValueError: on an unknown name or option.
    """
    if not isinstance(name, str) or name not in _BACKBONES:
        raise ValueError(
            f"`name` must be one of {list(BACKBONE_NAMES)}. Received: name={name!r}"
        )
    builder, spec, _ = _BACKBONES[name]
    parameters = inspect.signature(builder).parameters
    defaults = {
        key: p.default for key, p in parameters.items()
        if key not in _PER_CALL and p.default is not inspect.Parameter.empty
    }
    valid = set(parameters) - _PER_CALL
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"{name} takes no option {unknown[0]!r}; its options: {sorted(valid)}.")
    return {**defaults, **spec, **options}


# Arguments of every family builder that ``build`` itself passes.
_PER_CALL = frozenset({"num_classes", "input_shape", "normalization", "name"})
