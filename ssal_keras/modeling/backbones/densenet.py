"""DenseNet-BC (Huang et al. 2017) for 32x32 inputs.

Supplement section B (the DenseNet-BC table), docs/method.md, section 3. Layout, as in the DenseNet
authors' CIFAR models and the SSAL authors' Keras code (all convs bias-free;
docs/authors_settings.md, section 9.4):

* stem: conv3x3 with ``2 * growth_rate`` filters (no BN-ReLU: every dense layer starts
  with its own);
* three dense blocks of ``(depth - 4) / 6`` bottleneck layers
  BN-ReLU-conv1x1 (``4 * growth_rate``), BN-ReLU-conv3x3 (``growth_rate``), then dropout
  (``dropout_rate``: 0.2 in the authors' code, DenseNet_aux_tf.py:85, 262-263), whose output
  is concatenated to the layer's input;
* between blocks, transitions BN-ReLU-conv1x1 (``floor(compression * channels)``) then 2x2
  average pooling (stride 2);
* final BN-ReLU, global average pooling, softmax dense layer.

Layer names (fixed, tested): ``stem_conv``, ``stem_out``; bottleneck layer ``b`` of dense
block ``s``: ``stage{s}_block{b}_0_bn`` / ``_0_relu``, ``_1_conv`` / ``_1_bn`` /
``_1_relu``, ``_2_conv``, ``_2_dropout`` and its output, the concatenation,
``stage{s}_block{b}_out``;
transition ``t`` (after dense block ``t``): ``transition{t}_bn`` / ``_relu`` / ``_conv``
and its output, the average pool, ``transition{t}_out`` (the input of dense block
``t + 1``); ``post_bn``, ``post_relu``, ``avg_pool``, ``predictions``.
"""

import math

import keras
from keras import layers

from ssal_keras.modeling import blocks
from ssal_keras.modeling.backbones import common
from ssal_keras.modeling.backbones.taps import declare, staged_layout

# The authors' Keras DenseNet (docs/authors_settings.md, sections 5, 6 and 9.4): bias-free
# orthogonal convs (train.py:237, 249), a glorot_uniform classifier, BatchNorm epsilon 1.1e-5 and
# Keras's momentum 0.99 (DenseNet_aux_tf.py:245, 256, 358, 573).
AUTHORS_DENSENET_STYLE = blocks.LayerStyle(
    conv_bias=False, conv_initializer="orthogonal", dense_initializer="glorot_uniform",
    bn_momentum=0.99, bn_epsilon=1.1e-5,
)

# Variants (supplement section B, docs/method.md, section 3). DenseNet-BC-depth-growth_rate. 100-12
# has no run in the authors' code; it gets their DenseNet settings.
DENSENET_BC_SPECS = {
    "densenet_bc_100_12": dict(depth=100, growth_rate=12, compression=0.5,
                               dropout_rate=0.2, style=AUTHORS_DENSENET_STYLE),
    "densenet_bc_190_40": dict(depth=190, growth_rate=40, compression=0.5,
                               dropout_rate=0.2, style=AUTHORS_DENSENET_STYLE),
}


def _dense_layer(x, growth_rate, *, dropout_rate, style, name):
    """One bottleneck layer: BN-ReLU-conv1x1 (4k), BN-ReLU-conv3x3 (k), dropout,
    concatenated to its input."""
    y = blocks.bn_relu(x, style=style, name=f"{name}_0")
    y = blocks.conv(y, 4 * growth_rate, 1, style=style, name=f"{name}_1_conv")
    y = blocks.bn_relu(y, style=style, name=f"{name}_1")
    y = blocks.conv(y, growth_rate, 3, style=style, name=f"{name}_2_conv")
    if dropout_rate:
        y = layers.Dropout(dropout_rate, name=f"{name}_2_dropout")(y)
    return layers.Concatenate(axis=-1, name=f"{name}_out")([x, y])


def _transition(x, compression, *, style, name):
    """BN-ReLU-conv1x1 (compressed channels), then 2x2 average pooling."""
    channels = int(math.floor(x.shape[-1] * compression))
    x = blocks.bn_relu(x, style=style, name=name)
    x = blocks.conv(x, channels, 1, style=style, name=f"{name}_conv")
    return layers.AveragePooling2D(pool_size=2, strides=2, name=f"{name}_out")(x)


def densenet_bc(
    *,
    depth,
    growth_rate,
    compression=0.5,
    dropout_rate=0.0,
    style=blocks.LayerStyle(),
    num_classes,
    input_shape,
    normalization=None,
    name="densenet_bc",
):
    """Builds a DenseNet-BC classifier (supplement section B, docs/method.md, section 3).

    Variants: ``DENSENET_BC_SPECS``. The smallest variant, for tests::

        densenet_bc(depth=10, growth_rate=4, num_classes=10, input_shape=(16, 16, 3))

    Args:
        depth: int. Network depth; ``depth - 4`` must be a positive multiple of 6
            (``(depth - 4) / 6`` bottleneck layers per dense block).
        growth_rate: int. Channels ``k`` added by each bottleneck layer.
        compression: float. Fraction of channels kept by a transition, in (0, 1].
        dropout_rate: float. Dropout after every 3x3 conv, in [0, 1) (the authors': 0.2).
        style: blocks.LayerStyle. Initialisers and BatchNorm settings (the authors':
            ``AUTHORS_DENSENET_STYLE``; default: Keras's defaults). DenseNet convs have no
            bias: ``style.conv_bias`` must be False.
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
    layers_per_block = common.check_depth(depth)
    common.check_positive_int(growth_rate, arg="growth_rate")
    if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not (
        0.0 < compression <= 1.0
    ):
        raise ValueError(
            f"`compression` must be a number in (0, 1]. Received: compression={compression!r}"
        )
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not (
        0.0 <= dropout_rate < 1.0
    ):
        raise ValueError(
            f"`dropout_rate` must be a number in [0, 1). Received: dropout_rate={dropout_rate!r}"
        )
    if style.conv_bias:
        raise ValueError("DenseNet-BC convs have no bias: give a `style` with conv_bias=False.")
    common.check_num_classes(num_classes)
    input_shape = common.check_input_shape(input_shape, min_size=4)

    # Layers.
    inputs, x = common.model_input(input_shape, normalization)
    x = blocks.conv(x, 2 * growth_rate, 3, style=style, name="stem_conv")
    x = layers.Identity(name="stem_out")(x)
    for s in range(1, 4):
        for b in range(1, layers_per_block + 1):
            x = _dense_layer(x, growth_rate, dropout_rate=dropout_rate, style=style,
                             name=f"stage{s}_block{b}")
        if s < 3:
            x = _transition(x, compression, style=style, name=f"transition{s}")
    x = blocks.bn_relu(x, style=style, name="post")
    outputs = common.classifier(x, num_classes=num_classes, style=style)

    # Functional model, with its taps.
    return declare(keras.Model(inputs, outputs, name=name),
                   staged_layout([layers_per_block] * 3, transitions=2))
