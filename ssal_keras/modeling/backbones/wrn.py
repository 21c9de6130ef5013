"""Wide residual networks, with optional Squeeze-and-Excitation (SE-WRN).

Supplement section B (the SE-WRN and WRN tables), docs/method.md, section 3. The supplement gives
the order of operations as conv-BN-ReLU; as in the authors' Keras code (adapted from keras-contrib's
``wide_resnet``), each residual branch is

    conv3x3(stride)-BN-ReLU, conv3x3-BN-ReLU, [SE gate], then added to the shortcut

so both ReLUs sit on the residual branch, *before* the add, and the sum itself is not
activated (the SE gate is at the end of the branch, before the add). Where the channels
change (first block of every group: 16 -> 16k, 16k -> 32k, 32k -> 64k) the shortcut is a
1x1 conv (no BN); otherwise it is the identity. Stem: conv3x3 16-BN-ReLU. Global average
pooling follows the last add directly (no final BN-ReLU).

Downsampling: ``downsample="max_pool"`` (the authors' code, docs/authors_settings.md, section 9.2,
WideResNet_aux_tf.py:287, 305) puts a 2x2/2 max pool before groups 2 and 3 and every conv
has stride 1; ``"stride"`` (the WRN paper, the supplement's Table 3) strides the first conv
and the shortcut of groups 2 and 3 instead. Same shapes and parameters either way.

Layer names (fixed, tested): ``stem_conv``, ``stem_bn``, ``stem_relu``, ``stem_out``;
``stage{s}_pool`` (the max pool before group ``s``), ``stage{s}_block{b}_{1,2}_conv`` /
``_bn`` / ``_relu``, the shortcut ``_0_conv``, the SE
gate ``_se_squeeze`` / ``_se_reduce`` / ``_se_expand`` / ``_se_scale`` and the block output
(the add) ``stage{s}_block{b}_out``; ``avg_pool``, ``predictions``. Stage ``s`` is WRN
group ``s``.
"""

import dataclasses

import keras
from keras import layers

from ssal_keras.modeling import blocks
from ssal_keras.modeling.backbones import common
from ssal_keras.modeling.backbones.taps import declare, staged_layout

DOWNSAMPLING = ("max_pool", "stride")

# The authors' Keras WRN (docs/authors_settings.md, sections 5, 6 and 9.2): convs with Keras's
# default bias and glorot_uniform init (the builder's `initialization` default), a glorot_uniform
# classifier, Keras's BatchNorm defaults (0.99, 1e-3). Their SE gates are orthogonal
# (SE_GATE_INITIALIZER).
AUTHORS_WRN_STYLE = blocks.LayerStyle(
    conv_bias=True, conv_initializer="glorot_uniform", dense_initializer="glorot_uniform",
    bn_momentum=0.99, bn_epsilon=1e-3,
)
SE_GATE_INITIALIZER = "orthogonal"

# Variants (supplement section B, docs/method.md, section 3). WRN-d-k: (d - 4) / 6 blocks per group,
# widths 16k, 32k, 64k. SE-WRN 16-8 has no run in the authors' code: it is their WRN builder with
# its SE option (docs/authors_settings.md, section 9.3).
WIDE_RESNET_SPECS = {
    "se_wrn_16_8": dict(depth=16, width=8, se_reduction=16, style=AUTHORS_WRN_STYLE,
                        downsample="max_pool"),
    "wrn_28_10": dict(depth=28, width=10, se_reduction=None, style=AUTHORS_WRN_STYLE,
                      downsample="max_pool"),
}


def _wide_block(x, filters, *, strides, se_reduction, style, name):
    """One wide basic block (see the module docstring).

    Args:
        x: tensor. NHWC block input.
        filters: int. Channels of both 3x3 convs.
        strides: int. Stride of the first conv and of the shortcut.
        se_reduction: int or None. SE reduction ratio; ``None`` for no SE gate.
        style: blocks.LayerStyle. Conv bias, initialisers, BatchNorm settings.
        name: str. Prefix of the layer names, e.g. ``"stage2_block1"``.
    """
    if strides != 1 or x.shape[-1] != filters:
        shortcut = blocks.conv(
            x, filters, 1, strides=strides, style=style, name=f"{name}_0_conv"
        )
    else:
        shortcut = x
    y = blocks.conv(x, filters, 3, strides=strides, style=style, name=f"{name}_1_conv")
    y = blocks.bn_relu(y, style=style, name=f"{name}_1")
    y = blocks.conv(y, filters, 3, style=style, name=f"{name}_2_conv")
    y = blocks.bn_relu(y, style=style, name=f"{name}_2")
    if se_reduction is not None:
        gate_style = dataclasses.replace(style, dense_initializer=SE_GATE_INITIALIZER)
        y = blocks.squeeze_excite(y, style=gate_style, reduction=se_reduction,
                                  name=f"{name}_se")
    return layers.Add(name=f"{name}_out")([shortcut, y])


def wide_resnet(
    *,
    depth,
    width,
    se_reduction=None,
    style=blocks.LayerStyle(),
    downsample="stride",
    num_classes,
    input_shape,
    normalization=None,
    name="wide_resnet",
):
    """Builds a WRN-``depth``-``width`` classifier, SE-WRN when ``se_reduction`` is set.

    Supplement section B (SE-WRN 16-8, WRN 28-10), docs/method.md, section 3: a conv3x3 16 stem,
    three groups of ``(depth - 4) / 6`` wide basic blocks with widths ``16 * width``,
    ``32 * width``, ``64 * width``, halving the size before groups 2 and 3, then global
    average pooling and a softmax dense layer. Block layout: see the module
    docstring. Variants: ``WIDE_RESNET_SPECS``. The smallest variant::

        model = wide_resnet(depth=10, width=1, num_classes=10, input_shape=(16, 16, 3))

    Args:
        depth: int. Network depth; ``depth - 4`` must be a positive multiple of 6.
        width: int. Widening factor ``k``.
        se_reduction: int or None. Reduction ratio of the SE gate at the end of each
            residual branch (16 for SE-WRN); ``None`` for a plain WRN.
        style: blocks.LayerStyle. Conv bias, initialisers and BatchNorm settings (the
            authors': ``AUTHORS_WRN_STYLE``; default: Keras's defaults, no conv bias).
        downsample: str. ``"max_pool"`` (the authors') or ``"stride"`` (the WRN paper's).
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
    if downsample not in DOWNSAMPLING:
        raise ValueError(
            f"`downsample` must be one of {DOWNSAMPLING}. Received: downsample={downsample!r}")
    common.check_num_classes(num_classes)
    input_shape = common.check_input_shape(input_shape, min_size=4)

    # Layers.
    inputs, x = common.model_input(input_shape, normalization)
    x = blocks.conv(x, 16, 3, style=style, name="stem_conv")
    x = blocks.bn_relu(x, style=style, name="stem")
    x = layers.Identity(name="stem_out")(x)
    for s, (filters, stride) in enumerate(
        zip((16 * width, 32 * width, 64 * width), (1, 2, 2)), start=1
    ):
        if stride > 1 and downsample == "max_pool":
            x = layers.MaxPooling2D(pool_size=2, strides=2, name=f"stage{s}_pool")(x)
            stride = 1
        for b in range(1, blocks_per_group + 1):
            x = _wide_block(
                x,
                filters,
                strides=stride if b == 1 else 1,
                se_reduction=se_reduction,
                style=style,
                name=f"stage{s}_block{b}",
            )
    outputs = common.classifier(x, num_classes=num_classes, style=style)

    # Functional model, with its taps.
    return declare(keras.Model(inputs, outputs, name=name),
                   staged_layout([blocks_per_group] * 3))
