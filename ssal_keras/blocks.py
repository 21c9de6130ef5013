"""Layer blocks shared by the backbones and the auxiliary heads.

Every block takes a keyword-only ``name`` and names its layers ``{name}_conv``,
``{name}_bn``, ``{name}_relu`` ..., so any position in a model can be found again
(the Keras applications convention).
"""

from keras import layers

# PyTorch's BatchNorm defaults, which the authors' implementation used: momentum 0.1 there
# is 0.9 here (Keras weighs the running average, PyTorch the new batch).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(x, *, name):
    """BatchNormalization over channels (NHWC) with the project's momentum and epsilon."""
    return layers.BatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )(x)


def conv(x, filters, kernel_size, *, strides=1, padding="same", use_bias=False, name):
    """A convolution, bias-free by default (a BatchNorm follows or precedes it).

    The authors' Keras ResNets and WRNs kept Keras's default bias on every conv, so those
    backbones pass ``use_bias=True`` to reproduce the paper's parameter counts (SPEC section 3).
    """
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def bn_relu(x, *, name):
    """BatchNorm then ReLU: the pre-activation of a full pre-activation block."""
    x = batch_norm(x, name=f"{name}_bn")
    return layers.ReLU(name=f"{name}_relu")(x)


def conv_bn_relu(x, filters, kernel_size, *, strides=1, name):
    """conv-BN-ReLU ("cbr" in the supplement's tables), same padding."""
    x = conv(x, filters, kernel_size, strides=strides, name=f"{name}_conv")
    return bn_relu(x, name=name)


def squeeze_excite(x, *, reduction=16, name):
    """Squeeze-and-Excitation (Hu et al. 2018): channel gates from global context.

    Args:
        x: tensor. NHWC feature map.
        reduction: int. Ratio of channels to bottleneck units (16 in SE-WRN, SPEC section 3).
        name: str. Prefix of the block's layer names.
    """
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Dense(max(1, channels // reduction), activation="relu", name=f"{name}_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])
