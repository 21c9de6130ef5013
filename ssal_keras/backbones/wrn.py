"""Wide residual networks, with optional Squeeze-and-Excitation (SE-WRN).

Supplement section B (the SE-WRN and WRN tables), SPEC section 3. The supplement gives the order of
operations as conv-BN-ReLU; as in the authors' Keras code (adapted from keras-contrib's
``wide_resnet``), each residual branch is

    conv3x3(stride)-BN-ReLU, conv3x3-BN-ReLU, [SE gate], then added to the shortcut

so both ReLUs sit on the residual branch, *before* the add, and the sum itself is not
activated (the SE gate is at the end of the branch, before the add). Where the channels
change (first block of every group: 16 -> 16k, 16k -> 32k, 32k -> 64k) the shortcut is a
1x1 conv with the block's stride (no BN); otherwise it is the identity. Stem: conv3x3
16-BN-ReLU. Global average pooling follows the last add directly (no final BN-ReLU).

Downsampling (stride 2) is in the first block of groups 2 and 3, as in the SPEC and the
WRN paper; the authors' code instead puts a 2x2 max pool before groups 2 and 3 (same
shapes, no parameters, so the parameter count is the same).

Layer names (fixed, tested): ``stem_conv``, ``stem_bn``, ``stem_relu``, ``stem_out``;
``stage{s}_block{b}_{1,2}_conv`` / ``_bn`` / ``_relu``, the shortcut ``_0_conv``, the SE
gate ``_se_squeeze`` / ``_se_reduce`` / ``_se_expand`` / ``_se_scale`` and the block output
(the add) ``stage{s}_block{b}_out``; ``avg_pool``, ``predictions``. Stage ``s`` is WRN
group ``s``.
"""

import keras
from keras import layers

from ssal_keras import blocks
from ssal_keras.backbones import common

# Variants (supplement section B, SPEC section 3). WRN-d-k: (d - 4) / 6 blocks per group, widths
# 16k, 32k, 64k. The authors' convs carry biases (Keras's default).
WIDE_RESNET_SPECS = {
    "se_wrn_16_8": dict(depth=16, width=8, se_reduction=16, use_bias=True),
    "wrn_28_10": dict(depth=28, width=10, se_reduction=None, use_bias=True),
}


def _wide_block(x, filters, *, strides, se_reduction, use_bias, name):
    """One wide basic block (see the module docstring).

    Args:
        x: tensor. NHWC block input.
        filters: int. Channels of both 3x3 convs.
        strides: int. Stride of the first conv and of the shortcut.
        se_reduction: int or None. SE reduction ratio; ``None`` for no SE gate.
        use_bias: bool. Whether the convs add a bias.
        name: str. Prefix of the layer names, e.g. ``"stage2_block1"``.
    """
    if strides != 1 or x.shape[-1] != filters:
        shortcut = blocks.conv(
            x, filters, 1, strides=strides, use_bias=use_bias, name=f"{name}_0_conv"
        )
    else:
        shortcut = x
    y = blocks.conv(x, filters, 3, strides=strides, use_bias=use_bias, name=f"{name}_1_conv")
    y = blocks.bn_relu(y, name=f"{name}_1")
    y = blocks.conv(y, filters, 3, use_bias=use_bias, name=f"{name}_2_conv")
    y = blocks.bn_relu(y, name=f"{name}_2")
    if se_reduction is not None:
        y = blocks.squeeze_excite(y, reduction=se_reduction, name=f"{name}_se")
    return layers.Add(name=f"{name}_out")([shortcut, y])


def wide_resnet(
    *,
    depth,
    width,
    se_reduction=None,
    use_bias=False,
    num_classes,
    input_shape,
    normalization=None,
    name="wide_resnet",
):
    """Builds a WRN-``depth``-``width`` classifier, SE-WRN when ``se_reduction`` is set.

    Supplement section B (SE-WRN 16-8, WRN 28-10), SPEC section 3: a conv3x3 16 stem,
    three groups of ``(depth - 4) / 6`` wide basic blocks with widths ``16 * width``,
    ``32 * width``, ``64 * width``, stride 2 in the first block of groups 2 and 3, then
    global average pooling and a softmax dense layer. Block layout: see the module
    docstring. Variants: ``WIDE_RESNET_SPECS``. The smallest variant::

        model = wide_resnet(depth=10, width=1, num_classes=10, input_shape=(16, 16, 3))

    Args:
        depth: int. Network depth; ``depth - 4`` must be a positive multiple of 6.
        width: int. Widening factor ``k``.
        se_reduction: int or None. Reduction ratio of the SE gate at the end of each
            residual branch (16 for SE-WRN); ``None`` for a plain WRN.
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
    blocks_per_group = common.check_depth(depth)
    common.check_positive_int(width, arg="width")
    if se_reduction is not None:
        common.check_positive_int(se_reduction, arg="se_reduction")
    common.check_num_classes(num_classes)
    input_shape = common.check_input_shape(input_shape, min_size=4)

    # Layers.
    inputs, x = common.model_input(input_shape, normalization)
    x = blocks.conv(x, 16, 3, use_bias=use_bias, name="stem_conv")
    x = blocks.bn_relu(x, name="stem")
    x = layers.Identity(name="stem_out")(x)
    for s, (filters, stride) in enumerate(
        zip((16 * width, 32 * width, 64 * width), (1, 2, 2)), start=1
    ):
        for b in range(1, blocks_per_group + 1):
            x = _wide_block(
                x,
                filters,
                strides=stride if b == 1 else 1,
                se_reduction=se_reduction,
                use_bias=use_bias,
                name=f"stage{s}_block{b}",
            )
    outputs = common.classifier(x, num_classes=num_classes)

    # Functional model.
    return keras.Model(inputs, outputs, name=name)
