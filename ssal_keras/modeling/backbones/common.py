"""Pieces shared by the backbone families: argument checks, the input, the classifier.

Every family builder validates its arguments first: errors name the
argument, the value received and what would be valid, on one line.
"""

import keras
import numpy as np
from keras import layers

from ssal_keras.modeling import blocks


def check_num_classes(num_classes):
    """Returns ``num_classes`` if it is an int >= 2, else raises ``ValueError``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}"
        )
    return num_classes


def check_input_shape(input_shape, *, min_size=1):
    """Returns ``input_shape`` as a tuple ``(height, width, channels)``.

    Args:
        input_shape: tuple. ``(height, width, channels)``, channels last; height and width
            may be ``None`` (any size), channels must be a positive int.
        min_size: int. Smallest static height/width the network accepts (its total
            downsampling factor).

    Raises:
        ValueError: when the shape is not three dimensions, or a dimension is invalid.
    """
    def _bad(reason):
        return ValueError(
            f"`input_shape` must be (height, width, channels) with channels a positive int "
            f"and static height/width >= {min_size} ({reason}). "
            f"Received: input_shape={input_shape!r}"
        )

    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise _bad("not three dimensions")
    height, width, channels = input_shape
    for dim in (height, width, channels):
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int)):
            raise _bad("dimensions must be ints or None")
    if channels is None or channels < 1:
        raise _bad("channels must be a positive int")
    for dim in (height, width):
        if dim is not None and dim < min_size:
            raise _bad("spatial size too small")
    return (height, width, channels)


def check_depth(depth):
    """Returns the blocks per group, ``(depth - 4) / 6``, of a WRN or DenseNet-BC depth.

    Both families count depth as a stem, three groups of ``(depth - 4) / 6`` two-conv units,
    and the classifier (with transitions, for DenseNet), so both need ``depth - 4`` to be a
    positive multiple of 6.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(
            "`depth` must be an int with depth - 4 a positive multiple of 6 (10, 16, 22, 28, "
            f"..., 100, ..., 190). Received: depth={depth!r}"
        )
    return (depth - 4) // 6


def check_positive_int(value, *, arg):
    """Returns ``value`` if it is a positive int, else raises ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{arg}` must be a positive int. Received: {arg}={value!r}")
    return value


def check_positive_ints(value, *, arg, length=None):
    """Returns ``value`` as a tuple of positive ints, else raises ``ValueError``."""
    ok = isinstance(value, (tuple, list)) and len(value) > 0
    ok = ok and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
    if ok and length is not None:
        ok = len(value) == length
    if not ok:
        what = "a non-empty tuple of positive ints"
        if length is not None:
            what = f"a tuple of {length} positive ints"
        raise ValueError(f"`{arg}` must be {what}. Received: {arg}={value!r}")
    return tuple(value)


def classifier(x, *, num_classes, style):
    """The base classifier: global average pooling then a softmax dense layer.

    Layer names follow ``keras.applications``: ``avg_pool`` and ``predictions``; the dense
    layer takes the style's initialiser.
    """
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # float32 under a mixed-precision policy: softmax and log-probabilities need the range.
    return blocks.dense(x, num_classes, style=style, activation="softmax", dtype="float32",
                        name="predictions")


def model_input(input_shape, normalization=None):
    """The model's input layer (named ``input``) and the normalised tensor the network reads.

    Normalisation lives inside the model so that a trained model, and every export of it,
    takes raw pixels (0..255).

    Args:
        input_shape: tuple. ``(height, width, channels)``.
        normalization: None, ``"scale"`` or ``(mean, std)``. ``None``: the pixels as they
            come; ``"scale"``: divided by 255 (the paper's ResNet50 CIFAR run);
            ``(mean, std)``: per-channel, in raw-pixel units (e.g. the training split's
            statistics, the paper's WRN and DenseNet runs). The layer is named
            ``preprocess``.

    Returns:
        ``(inputs, x)``: the ``keras.Input`` and the normalised tensor.
    """
    inputs = keras.Input(shape=input_shape, name="input")
    if normalization is None:
        return inputs, inputs
    if isinstance(normalization, str) and normalization == "scale":
        return inputs, layers.Rescaling(1.0 / 255.0, name="preprocess")(inputs)
    channels = input_shape[-1]
    try:
        mean, std = (np.asarray(v, dtype="float64").reshape(-1) for v in normalization)
    except (TypeError, ValueError):
        mean = std = np.zeros(0)
    if mean.size != channels or std.size != channels or not np.all(std > 0):
        raise ValueError(
            f"`normalization` must be None, 'scale' or (mean, std) with {channels} values "
            f"each and std > 0. Received: normalization={normalization!r}"
        )
    layer = layers.Normalization(
        axis=-1, mean=mean.tolist(), variance=(std**2).tolist(), name="preprocess"
    )
    return inputs, layer(inputs)
