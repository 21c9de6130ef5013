"""The classification loss of every output: cross-entropy on probabilities, sparse labels."""

import keras
from keras import ops

#: How label smoothing spreads its mass ``s``: ``"uniform"`` over all K classes (the label
#: gets ``1 - s + s/K``, Szegedy et al. and Keras), ``"others"`` over the K - 1 other classes
#: (the label gets ``1 - s``; the authors' ``to_categorical_smooth``, docs/authors_settings.md,
#: section 7.1).
SMOOTHING_MODES = ("uniform", "others")


def check_smoothing(label_smoothing, mode):
    """Raises ``ValueError`` unless ``label_smoothing`` is in [0, 1) and ``mode`` is valid."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(
            f"label_smoothing must be in [0, 1); received label_smoothing={label_smoothing!r}.")
    if mode not in SMOOTHING_MODES:
        raise ValueError(
            f"label_smoothing_mode must be one of {SMOOTHING_MODES}; received {mode!r}.")


def sparse_crossentropy(labels, probabilities, *, label_smoothing=0.0,
                        label_smoothing_mode="uniform"):
    """Per-example cross-entropy of class ids against predicted probabilities.

    With ``label_smoothing`` s the target is ``1 - s + s/K`` on the label and ``s/K``
    elsewhere (``"uniform"``), or ``1 - s`` and ``s/(K - 1)`` (``"others"``, the authors'
    DenseNet runs with s = 0.1 on every output, each with its own K: docs/authors_settings.md,
    section 7.1).

    Args:
        labels: int tensor ``(batch,)`` or ``(batch, 1)``. Class (or group) ids.
        probabilities: float tensor ``(batch, K)``. A softmax output.
        label_smoothing: float. In ``[0, 1)``.
        label_smoothing_mode: str. One of ``SMOOTHING_MODES``.

    Returns:
        float32 tensor ``(batch,)``.
    """
    check_smoothing(label_smoothing, label_smoothing_mode)
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    probabilities = ops.cast(probabilities, "float32")
    num_classes = ops.shape(probabilities)[-1]
    if not label_smoothing:
        return keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    one_hot = ops.one_hot(labels, num_classes)
    if label_smoothing_mode == "uniform":
        spread = label_smoothing / ops.cast(num_classes, "float32")
        targets = one_hot * (1.0 - label_smoothing) + spread
    else:
        spread = label_smoothing / ops.cast(num_classes - 1, "float32")
        targets = one_hot * (1.0 - label_smoothing) + (1.0 - one_hot) * spread
    return keras.losses.categorical_crossentropy(targets, probabilities)


@keras.saving.register_keras_serializable(package="ssal_keras")
class SparseCrossentropy(keras.losses.Loss):
    """``sparse_crossentropy`` as a Keras loss (for ``compile``), with label smoothing.

    Args:
        label_smoothing: float. In ``[0, 1)``; 0 is plain sparse categorical cross-entropy.
        label_smoothing_mode: str. One of ``SMOOTHING_MODES``.
    """

    def __init__(self, label_smoothing=0.0, label_smoothing_mode="uniform",
                 name="sparse_crossentropy", **kwargs):
        check_smoothing(label_smoothing, label_smoothing_mode)
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.label_smoothing_mode = label_smoothing_mode

    def call(self, y_true, y_pred):
        return sparse_crossentropy(y_true, y_pred, label_smoothing=self.label_smoothing,
                                   label_smoothing_mode=self.label_smoothing_mode)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "label_smoothing_mode": self.label_smoothing_mode}
