"""Residual networks: the full pre-activation ResNets of the CIFAR100 / Tiny ImageNet runs,
and the standard ImageNet ResNet50 from ``keras.applications``.

Supplement section B (the ResNet tables), SPEC section 3. The layout follows the authors' Keras
code (a version of raghakot/keras-resnet): all convs "same"-padded; stem conv-BN-ReLU
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

from ssal_keras import blocks
from ssal_keras.backbones import common

# Pre-activation ResNet variants (supplement section B, SPEC section 3). Stage 1 is the
# paper's Conv2; ``stage_strides`` gives the stride of each stage's first block. The
# authors' convs carry biases (Keras's default): ``use_bias=True`` reproduces the paper's
# parameter counts.
PREACT_RESNET_SPECS = {
    # Tiny ImageNet, 64x64 inputs, 200 classes.
    "resnet18_tiny_imagenet": dict(
        block="basic",
        stage_blocks=(2, 2, 2, 2),
        stage_widths=(64, 128, 256, 512),
        stage_strides=(1, 2, 2, 2),
        stem_filters=64,
        stem_kernel=7,
        stem_strides=2,
        stem_pool=True,
        use_bias=True,
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
        use_bias=True,
    ),
    # Not a paper network: the quick-start backbone for Fashion-MNIST (28x28x1), small
    # enough to train on a 2-core CPU in minutes; stages at 28, 14 and 7 pixels.
    "resnet_fashion_mnist": dict(
        block="basic",
        stage_blocks=(1, 1, 1),
        stage_widths=(16, 32, 64),
        stage_strides=(1, 2, 2),
        stem_filters=16,
        stem_kernel=3,
        stem_strides=1,
        stem_pool=False,
    ),
}

# Output channels of a block relative to its width.
_EXPANSION = {"basic": 1, "bottleneck": 4}


def _preact_block(x, width, *, block, strides, preact, use_bias, name):
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
        use_bias: bool. Whether the convs add a bias.
        name: str. Prefix of the layer names, e.g. ``"stage2_block1"``.
    """
    out_channels = width * _EXPANSION[block]
    if strides != 1 or x.shape[-1] != out_channels:
        shortcut = blocks.conv(
            x, out_channels, 1, strides=strides, use_bias=use_bias, name=f"{name}_0_conv"
        )
    else:
        shortcut = x
    y = blocks.bn_relu(x, name=f"{name}_preact") if preact else x
    if block == "basic":
        kernels, filters = (3, 3), (width, width)
    else:
        kernels, filters = (1, 3, 1), (width, width, out_channels)
    for i, (kernel, f) in enumerate(zip(kernels, filters), start=1):
        if i > 1:
            y = blocks.bn_relu(y, name=f"{name}_{i - 1}")
        y = blocks.conv(
            y, f, kernel, strides=strides if i == 1 else 1, use_bias=use_bias,
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
    use_bias=False,
    num_classes,
    input_shape,
    normalization=None,
    name="preact_resnet",
):
    """Builds a full pre-activation ResNet classifier (supplement section B, SPEC section 3).

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
        use_bias: bool. Whether the convs add a bias (the authors' Keras code did).
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
        x, stem_filters, stem_kernel, strides=stem_strides, use_bias=use_bias,
        name="stem_conv",
    )
    x = blocks.bn_relu(x, name="stem")
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
                use_bias=use_bias,
                name=f"stage{s}_block{b}",
            )
    x = blocks.bn_relu(x, name="post")
    outputs = common.classifier(x, num_classes=num_classes)

    # Functional model.
    return keras.Model(inputs, outputs, name=name)


def resnet50_imagenet(
    *, num_classes, input_shape=(224, 224, 3), normalization=None, name="resnet50_imagenet"
):
    """The standard ImageNet ResNet50 (SPEC section 3; the backbone of supplement Table 10).

    Built by ``keras.applications.ResNet50(weights=None)`` (conv-BN-ReLU bottlenecks,
    7x7/2 stem, max pool, [3, 4, 6, 3] blocks) and renamed: 25,636,712 parameters for 1000
    classes. Layer names are Keras's (``conv2_block3_out`` ...); ``taps`` maps them onto
    the friendly names (``stem`` = ``pool1_pool``, ``stage1`` = ``conv2_block3_out``, ...).

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
            "`input_shape` must have 3 channels for resnet50_imagenet. "
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
    return keras.Model(inputs, base.output, name=name)
