"""Layer blocks shared by the backbones and the auxiliary heads.

Every block takes a keyword-only ``name`` and names its layers ``{name}_conv``,
``{name}_bn``, ``{name}_relu`` ..., so any position in a model can be found again
(the Keras applications convention). Every block also takes a ``style``: the conv bias,
the initialisers and the BatchNorm settings, which differ from network to network in the
authors' code (docs/authors_settings.md, sections 5 and 6).
"""

import dataclasses
import math

import keras
from keras import layers

# Named initialisers beyond Keras's own names (docs/authors_settings.md, section 6):
# - "kaiming_normal_fan_out": torchvision's ResNet convs, N(0, 2 / fan_out), not truncated;
# - "torch_default": PyTorch's default Conv2d/Linear init, U(+-1/sqrt(fan_in)) for the kernel
#   (kaiming_uniform with a = sqrt(5)) and for the bias.
# Keras's "he_normal" is the truncated normal of TF 1.x Keras the authors' CIFAR code used.
_CUSTOM_INITIALIZERS = {
    "kaiming_normal_fan_out": lambda: keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"),
    "torch_default": lambda: keras.initializers.VarianceScaling(
        1.0 / 3.0, mode="fan_in", distribution="uniform"),
}
INITIALIZERS = ("he_normal", "glorot_uniform", "orthogonal") + tuple(_CUSTOM_INITIALIZERS)


@dataclasses.dataclass(frozen=True)
class LayerStyle:
    """How a network's convs, dense layers and BatchNorms are made.

    Args:
        conv_bias: bool. Whether convolutions add a bias (the authors' Keras ResNet, WRN and
            CIFAR heads keep Keras's default bias; DenseNet and torchvision convs have none).
        conv_initializer: str. One of ``INITIALIZERS``.
        dense_initializer: str. One of ``INITIALIZERS``: the classifier's (and heads' hidden
            dense layers') kernel initialiser.
        bn_momentum: float. Keras BatchNorm momentum (PyTorch's momentum is ``1 - this``).
        bn_epsilon: float. BatchNorm epsilon.
    """

    conv_bias: bool = False
    conv_initializer: str = "he_normal"
    dense_initializer: str = "glorot_uniform"
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3

    def __post_init__(self):
        for field in ("conv_initializer", "dense_initializer"):
            value = getattr(self, field)
            if value not in INITIALIZERS:
                raise ValueError(
                    f"`{field}` must be one of {INITIALIZERS}. Received: {field}={value!r}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(
                f"`bn_momentum` must be in [0, 1). Received: bn_momentum={self.bn_momentum!r}")
        if not self.bn_epsilon > 0:
            raise ValueError(
                f"`bn_epsilon` must be > 0. Received: bn_epsilon={self.bn_epsilon!r}")


def initializer(name):
    """A fresh Keras initialiser for one of ``INITIALIZERS``."""
    factory = _CUSTOM_INITIALIZERS.get(name)
    return factory() if factory else keras.initializers.get(name)


def _bias_initializer(style_initializer, fan_in):
    # PyTorch draws biases from U(+-1/sqrt(fan_in)); Keras (every other style) starts at 0.
    if style_initializer != "torch_default":
        return "zeros"
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit)


def batch_norm(x, *, style, gamma_zero=False, name):
    """BatchNormalization over channels (NHWC) with the style's momentum and epsilon.

    ``gamma_zero`` starts the scale at 0 (torchvision's ``zero_init_residual``).
    """
    return layers.BatchNormalization(
        axis=-1, momentum=style.bn_momentum, epsilon=style.bn_epsilon,
        gamma_initializer="zeros" if gamma_zero else "ones", name=name,
    )(x)


def conv(x, filters, kernel_size, *, style, strides=1, padding="same", name):
    """A convolution with the style's bias and initialiser."""
    kernel = (kernel_size,) * 2 if isinstance(kernel_size, int) else tuple(kernel_size)
    fan_in = x.shape[-1] * kernel[0] * kernel[1]
    return layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=style.conv_bias,
        kernel_initializer=initializer(style.conv_initializer),
        bias_initializer=_bias_initializer(style.conv_initializer, fan_in),
        name=name,
    )(x)


def dense(x, units, *, style, activation=None, dtype=None, name):
    """A dense layer with the style's initialiser (a bias, as every dense layer has here)."""
    return layers.Dense(
        units,
        activation=activation,
        kernel_initializer=initializer(style.dense_initializer),
        bias_initializer=_bias_initializer(style.dense_initializer, x.shape[-1]),
        dtype=dtype,
        name=name,
    )(x)


def bn_relu(x, *, style, name):
    """BatchNorm then ReLU: the pre-activation of a full pre-activation block."""
    x = batch_norm(x, style=style, name=f"{name}_bn")
    return layers.ReLU(name=f"{name}_relu")(x)


def conv_bn_relu(x, filters, kernel_size, *, style, strides=1, padding="same", name):
    """conv-BN-ReLU ("cbr" in the supplement's tables; "BasicConv2d" in torchvision)."""
    x = conv(x, filters, kernel_size, style=style, strides=strides, padding=padding,
             name=f"{name}_conv")
    return bn_relu(x, style=style, name=name)


def squeeze_excite(x, *, style, reduction=16, name):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from global context.

    The gate's dense layers use the style's dense initialiser (the authors' SE-WRN option
    uses orthogonal, docs/authors_settings.md, section 9.2).

    Args:
        x: tensor. NHWC feature map.
        style: LayerStyle. The network's layer settings.
        reduction: int. Ratio of channels to bottleneck units (16 in SE-WRN,
            docs/method.md, section 3).
        name: str. Prefix of the block's layer names.
    """
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = dense(s, max(1, channels // reduction), style=style, activation="relu",
              name=f"{name}_reduce")
    s = dense(s, channels, style=style, activation="sigmoid", name=f"{name}_expand")
    return layers.Multiply(name=f"{name}_scale")([x, s])
