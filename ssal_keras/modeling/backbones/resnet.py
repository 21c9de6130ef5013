"""Residual networks: the full pre-activation ResNets of the CIFAR100 / Tiny ImageNet runs,
torchvision's ResNet50 of the ImageNet runs, and ``keras.applications``' ResNet50.

Supplement section B (the ResNet tables), docs/method.md, section 3. The layout follows the authors'
Keras code (a version of raghakot/keras-resnet): all convs "same"-padded; stem conv-BN-ReLU
(then a 3x3/2 max pool for Tiny ImageNet); blocks BN-ReLU-conv with the stride in the
block's first conv; a projection shortcut (1x1 conv of the block's *input*, no BN) only
where the shape changes, identity otherwise; the first block of stage 1 skips its own
BN-ReLU because the stem has just applied one; final BN-ReLU, global average pooling,
softmax dense layer.

Layer names (fixed, tested):

* ``stem_conv``, ``stem_bn``, ``stem_relu`` (``stem_pool``); the stem's last layer is the
  identity ``stem_out``.
* block ``b`` of stage ``s`` (stage 1 = the paper's Conv2): ``stage{s}_block{b}_preact_bn``
  / ``_preact_relu`` (the block's pre-activation), ``stage{s}_block{b}_0_conv`` (the
  projection shortcut), ``stage{s}_block{b}_{i}_conv`` for the residual branch's convs
  ``i = 1, 2(, 3)``, ``_{i}_bn`` / ``_{i}_relu`` for the BN-ReLU between them, and the
  block output (the residual add) ``stage{s}_block{b}_out``.
* ``post_bn``, ``post_relu`` (the final BN-ReLU), ``avg_pool``, ``predictions``.
"""

import keras
from keras import layers

from ssal_keras.modeling import blocks
from ssal_keras.modeling.backbones import common
from ssal_keras.modeling.backbones.taps import declare, staged_layout

# The authors' Keras ResNet (docs/authors_settings.md, section 9.1, ResNet_aux_tf.py): convs keep
# Keras's default bias and he_normal (TF 1.x: truncated) init, the classifier is he_normal too, and
# every BatchNorm has momentum 0.65 (ResNet_aux_tf.py:75) with Keras's epsilon 1e-3.
AUTHORS_RESNET_STYLE = blocks.LayerStyle(
    conv_bias=True, conv_initializer="he_normal", dense_initializer="he_normal",
    bn_momentum=0.65, bn_epsilon=1e-3,
)

# Pre-activation ResNet variants (supplement section B, docs/method.md, section 3). Stage 1 is the
# paper's Conv2; ``stage_strides`` gives the stride of each stage's first block.
PREACT_RESNET_SPECS = {
    # Tiny ImageNet, 64x64 inputs, 200 classes. No run of the authors' code: the supplement's
    # Table 1 stem (7x7/2 and a max pool), the authors' ResNet layer settings.
    "resnet18_tiny_imagenet": dict(
        block="basic",
        stage_blocks=(2, 2, 2, 2),
        stage_widths=(64, 128, 256, 512),
        stage_strides=(1, 2, 2, 2),
        stem_filters=64,
        stem_kernel=7,
        stem_strides=2,
        stem_pool=True,
        style=AUTHORS_RESNET_STYLE,
    ),
    # CIFAR100, 32x32 inputs; Conv5 is not downsampled (stays 8x8).
    "resnet50_cifar": dict(
        block="bottleneck",
        stage_blocks=(3, 4, 6, 3),
        stage_widths=(64, 128, 256, 512),
        stage_strides=(1, 2, 2, 1),
        stem_filters=64,
        stem_kernel=5,
        stem_strides=1,
        stem_pool=False,
        style=AUTHORS_RESNET_STYLE,
    ),
    # Not a paper network: the quick-start backbone for Fashion-MNIST (28x28x1), small
    # enough to train on a 2-core CPU in minutes; stages at 28, 14 and 7 pixels. Its layer
    # settings are the ones its figures in BUILD_NOTES.md were measured with.
    "resnet_fashion_mnist": dict(
        block="basic",
        stage_blocks=(1, 1, 1),
        stage_widths=(16, 32, 64),
        stage_strides=(1, 2, 2),
        stem_filters=16,
        stem_kernel=3,
        stem_strides=1,
        stem_pool=False,
        style=blocks.LayerStyle(dense_initializer="glorot_uniform", bn_momentum=0.9,
                                bn_epsilon=1e-5),
    ),
}

# Output channels of a block relative to its width.
_EXPANSION = {"basic": 1, "bottleneck": 4}


def _preact_block(x, width, *, block, strides, preact, style, name):
    """One full pre-activation residual block (He et al. 2016, "Identity Mappings").

    ``basic``: [BN-ReLU]-conv3x3, BN-ReLU-conv3x3. ``bottleneck``: [BN-ReLU]-conv1x1,
    BN-ReLU-conv3x3, BN-ReLU-conv1x1 (4x width). The stride sits in the first conv (as in
    the authors' code). Where the shape changes, the shortcut is a 1x1 conv (with the
    block's stride) of the block input; otherwise it is the identity.

    Args:
        x: tensor. NHWC block input.
        width: int. Channels of the block's inner convs.
        block: str. ``"basic"`` or ``"bottleneck"``.
        strides: int. Stride of the block (1 or 2).
        preact: bool. Whether the block starts with its own BN-ReLU; ``False`` for the
            first block after the stem, which already ends in BN-ReLU.
        style: blocks.LayerStyle. Conv bias, initialisers, BatchNorm settings.
        name: str. Prefix of the layer names, e.g. ``"stage2_block1"``.
    """
    out_channels = width * _EXPANSION[block]
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = blocks.conv(
            x, out_channels, 1, strides=strides, style=style, name=f"{name}_0_conv"
        )
    else:
        shortcut = x
    y = blocks.bn_relu(x, style=style, name=f"{name}_preact") if preact else x
    if block == "basic":
        kernels, filters = (3, 3), (width, width)
    else:
        kernels, filters = (1, 3, 1), (width, width, out_channels)
    for i, (kernel, f) in enumerate(zip(kernels, filters), start=1):
        if i > 1:
            y = blocks.bn_relu(y, style=style, name=f"{name}_{i - 1}")
        y = blocks.conv(
            y, f, kernel, strides=strides if i == 1 else 1, style=style,
            name=f"{name}_{i}_conv",
        )
    return layers.Add(name=f"{name}_out")([shortcut, y])


def preact_resnet(
    *,
    block,
    stage_blocks,
    stage_widths,
    stage_strides,
    stem_filters,
    stem_kernel,
    stem_strides,
    stem_pool,
    style=blocks.LayerStyle(),
    num_classes,
    input_shape,
    normalization=None,
    name="preact_resnet",
):
    """Builds a full pre-activation ResNet classifier (supplement section B; docs/method.md,
    section 3).

    Layout: see the module docstring. Variants: ``PREACT_RESNET_SPECS``. A tiny variant::

        model = preact_resnet(
            block="basic", stage_blocks=(1, 1), stage_widths=(8, 16),
            stage_strides=(1, 2), stem_filters=8, stem_kernel=3, stem_strides=1,
            stem_pool=False, num_classes=10, input_shape=(16, 16, 3))

    Args:
        block: str. ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1 with 4x
            output channels).
        stage_blocks: tuple of int. Number of blocks in each stage.
        stage_widths: tuple of int. Width (inner conv channels) of each stage.
        stage_strides: tuple of int. Stride of each stage's first block.
        stem_filters: int. Channels of the stem convolution.
        stem_kernel: int. Kernel size of the stem convolution.
        stem_strides: int. Stride of the stem convolution.
        stem_pool: bool. Whether the stem ends in a 3x3/2 max pool.
        style: blocks.LayerStyle. Conv bias, initialisers and BatchNorm settings (the
            authors': ``AUTHORS_RESNET_STYLE``; default: Keras's defaults, no conv bias).
        num_classes: int. Number of classes (>= 2).
        input_shape: tuple. ``(height, width, channels)``.
        normalization: None, ``"scale"`` or ``(mean, std)``. Input normalisation inside
            the model (see ``common.model_input``), so the model takes raw pixels.
        name: str. The model's name.

    Returns:
        A functional ``keras.Model`` mapping images to class probabilities.

    Raises:
        ValueError: on an invalid argument.
    """
    if block not in _EXPANSION:
        raise ValueError(
            f"`block` must be one of {sorted(_EXPANSION)}. Received: block={block!r}"
        )
    stage_blocks = common.check_positive_ints(stage_blocks, arg="stage_blocks")
    n = len(stage_blocks)
    stage_widths = common.check_positive_ints(stage_widths, arg="stage_widths", length=n)
    stage_strides = common.check_positive_ints(stage_strides, arg="stage_strides", length=n)
    common.check_positive_int(stem_filters, arg="stem_filters")
    common.check_positive_int(stem_kernel, arg="stem_kernel")
    common.check_positive_int(stem_strides, arg="stem_strides")
    common.check_num_classes(num_classes)
    total_stride = stem_strides * (2 if stem_pool else 1)
    for s in stage_strides:
        total_stride *= s
    input_shape = common.check_input_shape(input_shape, min_size=total_stride)

    # Layers.
    inputs, x = common.model_input(input_shape, normalization)
    x = blocks.conv(
        x, stem_filters, stem_kernel, strides=stem_strides, style=style, name="stem_conv"
    )
    x = blocks.bn_relu(x, style=style, name="stem")
    if stem_pool:
        x = layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name="stem_pool")(x)
    x = layers.Identity(name="stem_out")(x)
    for s, (repeats, width, stride) in enumerate(
        zip(stage_blocks, stage_widths, stage_strides), start=1
    ):
        for b in range(1, repeats + 1):
            x = _preact_block(
                x,
                width,
                block=block,
                strides=stride if b == 1 else 1,
                preact=not (s == 1 and b == 1),
                style=style,
                name=f"stage{s}_block{b}",
            )
    x = blocks.bn_relu(x, style=style, name="post")
    outputs = common.classifier(x, num_classes=num_classes, style=style)

    # Functional model, with its taps.
    return declare(keras.Model(inputs, outputs, name=name),
                   staged_layout(stage_blocks))


# torchvision's ResNet as the authors' ImageNet runs used it (docs/authors_settings.md, sections 5,
# 6 and 9.5): convs without bias, kaiming_normal (fan_out, not truncated), classifier with PyTorch's
# default init, BatchNorm epsilon 1e-5 and the authors' momentum override 1 - 0.9^(100/32) (PyTorch
# 0.28054, pytorch/train.py:57-61), i.e. Keras momentum 0.9^(100/32).
TORCHVISION_RESNET_STYLE = blocks.LayerStyle(
    conv_bias=False, conv_initializer="kaiming_normal_fan_out",
    dense_initializer="torch_default", bn_momentum=0.9 ** (100 / 32), bn_epsilon=1e-5,
)


def _padded_conv(x, filters, kernel_size, *, strides, style, name):
    """A conv with PyTorch's symmetric zero padding ``kernel // 2`` (TF's "same" pads a
    stride-2 conv asymmetrically, which shifts the sampling grid by a pixel)."""
    pad = kernel_size // 2
    if pad and strides > 1:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        return blocks.conv(x, filters, kernel_size, strides=strides, padding="valid",
                           style=style, name=name)
    return blocks.conv(x, filters, kernel_size, strides=strides, style=style, name=name)


def _torchvision_bottleneck(x, width, *, strides, style, zero_init_residual, name):
    """torchvision's ``Bottleneck`` ("ResNet v1.5"): conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU,
    conv1x1(4x)-BN, add the shortcut (1x1 conv with the stride, then BN, where the shape
    changes), ReLU."""
    out_channels = width * 4
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = blocks.conv(x, out_channels, 1, strides=strides, padding="valid",
                               style=style, name=f"{name}_0_conv")
        shortcut = blocks.batch_norm(shortcut, style=style, name=f"{name}_0_bn")
    else:
        shortcut = x
    y = blocks.conv_bn_relu(x, width, 1, style=style, name=f"{name}_1")
    y = _padded_conv(y, width, 3, strides=strides, style=style, name=f"{name}_2_conv")
    y = blocks.bn_relu(y, style=style, name=f"{name}_2")
    y = blocks.conv(y, out_channels, 1, style=style, name=f"{name}_3_conv")
    y = blocks.batch_norm(y, style=style, gamma_zero=zero_init_residual, name=f"{name}_3_bn")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def torchvision_resnet(
    *,
    stage_blocks=(3, 4, 6, 3),
    style=TORCHVISION_RESNET_STYLE,
    zero_init_residual=False,
    num_classes,
    input_shape=(224, 224, 3),
    normalization=None,
    name="resnet50_imagenet",
):
    """torchvision's bottleneck ResNet, the authors' ImageNet network (docs/authors_settings.md,
    section 9.5).

    7x7/2 stem conv-BN-ReLU, 3x3/2 max pool, bottleneck stages of widths 64-512 with the
    stride on the 3x3 conv of each stage's first block, global average pooling, dense
    classifier. Paddings are PyTorch's (symmetric). ResNet50 (the default ``stage_blocks``)
    has 25,557,032 trainable parameters for 1000 classes, as torchvision's.

    Layer names follow ``preact_resnet`` (``stem_conv``, ``stem_pool``, ``stem_out``,
    ``stage{s}_block{b}_{i}_conv`` / ``_bn``, shortcut ``_0_conv`` / ``_0_bn``, the block
    output ``stage{s}_block{b}_out`` after the final ReLU), so the taps are the same names.

    Example (a tiny variant)::

        torchvision_resnet(stage_blocks=(1, 1), num_classes=10, input_shape=(32, 32, 3))

    Args:
        stage_blocks: tuple of int. Bottleneck blocks per stage (``(3, 4, 6, 3)``: ResNet50).
        style: blocks.LayerStyle. Conv bias, initialisers and BatchNorm settings.
        zero_init_residual: bool. Start the last BatchNorm scale of every block at 0, so each
            block starts as the identity (torchvision's option; the authors' SSAL run sets
            it, their baseline does not: resnet_aux.py:41, train.py:54).
        num_classes: int. Number of classes (>= 2).
        input_shape: tuple. ``(height, width, 3)``; height and width >= 32.
        normalization: None, ``"scale"`` or ``(mean, std)``. Input normalisation inside
            the model (see ``common.model_input``), so the model takes raw pixels.
        name: str. The model's name.

    Returns:
        A functional ``keras.Model`` mapping images to class probabilities.

    Raises:
        ValueError: on an invalid argument.
    """
    stage_blocks = common.check_positive_ints(stage_blocks, arg="stage_blocks")
    common.check_num_classes(num_classes)
    input_shape = common.check_input_shape(input_shape, min_size=32)
    if not isinstance(zero_init_residual, bool):
        raise ValueError("`zero_init_residual` must be a bool. "
                         f"Received: zero_init_residual={zero_init_residual!r}")

    # Layers.
    inputs, x = common.model_input(input_shape, normalization)
    x = _padded_conv(x, 64, 7, strides=2, style=style, name="stem_conv")
    x = blocks.bn_relu(x, style=style, name="stem")
    # Zero padding is -inf padding here: the window always holds a ReLU output >= 0.
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = layers.MaxPooling2D(pool_size=3, strides=2, name="stem_pool")(x)
    x = layers.Identity(name="stem_out")(x)
    for s, repeats in enumerate(stage_blocks, start=1):
        width = 64 * 2 ** (s - 1)
        for b in range(1, repeats + 1):
            x = _torchvision_bottleneck(
                x, width, strides=2 if (b == 1 and s > 1) else 1, style=style,
                zero_init_residual=zero_init_residual, name=f"stage{s}_block{b}",
            )
    outputs = common.classifier(x, num_classes=num_classes, style=style)

    # Functional model, with its taps.
    return declare(keras.Model(inputs, outputs, name=name),
                   staged_layout(stage_blocks))


#: Blocks in each stage of ``keras.applications.ResNet50`` (its ``conv2`` ... ``conv5``).
KERAS_RESNET50_BLOCKS = (3, 4, 6, 3)


def resnet50_keras_applications(
    *, num_classes, input_shape=(224, 224, 3), normalization=None,
    name="resnet50_keras_applications",
):
    """``keras.applications.ResNet50(weights=None)``: Keras's v1 layout (stride on the first
    1x1 conv, conv biases), 25,636,712 parameters for 1000 classes. Not the authors' network
    (that is ``torchvision_resnet``); kept for users who start from Keras's model. Layer names
    are Keras's (``conv2_block3_out`` ...); the model declares them under the friendly names
    (``stem`` = ``pool1_pool``, ``stage1`` = ``conv2_block3_out``, ...).

    Args:
        num_classes: int. Number of classes (>= 2).
        input_shape: tuple. ``(height, width, 3)``; height and width >= 32.
        normalization: None, ``"scale"`` or ``(mean, std)``. Input normalisation inside
            the model (see ``common.model_input``), so the model takes raw pixels.
        name: str. The model's name.

    Returns:
        A functional ``keras.Model`` mapping images to class probabilities.

    Raises:
        ValueError: on an invalid argument.
    """
    common.check_num_classes(num_classes)
    input_shape = common.check_input_shape(input_shape, min_size=32)
    if input_shape[-1] != 3:
        raise ValueError(
            f"`input_shape` must have 3 channels for {name}. "
            f"Received: input_shape={input_shape!r}"
        )
    inputs, x = common.model_input(input_shape, normalization)
    base = keras.applications.ResNet50(
        include_top=True,
        weights=None,
        input_tensor=x,
        classes=num_classes,
        classifier_activation="softmax",
    )
    # Keras's stage conv{s+1} is our stage s; its stem ends in the max pool (stride 4).
    return declare(keras.Model(inputs, base.output, name=name), staged_layout(
        KERAS_RESNET50_BLOCKS, stem="pool1_pool", block_layer="conv{s}_block{b}_out",
        first_stage=2))
