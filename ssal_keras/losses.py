"""The classification loss of every output: cross-entropy on probabilities, sparse labels."""

import keras
from keras import ops


def sparse_crossentropy(labels, probabilities, *, label_smoothing=0.0):
    """Per-example cross-entropy of class ids against predicted probabilities.

    With ``label_smoothing`` the target puts ``1 - s + s / K`` on the label and ``s / K``
    elsewhere (the DenseNet 190-40 run uses 0.1, SPEC section 5).

    Args:
        labels: int tensor ``(batch,)`` or ``(batch, 1)``. Class (or group) ids.
        probabilities: float tensor ``(batch, K)``. A softmax output.
        label_smoothing: float. In ``[0, 1)``.

    Returns:
        float32 tensor ``(batch,)``.
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    probabilities = ops.cast(probabilities, "float32")
    num_classes = ops.shape(probabilities)[-1]
    if not label_smoothing:
        return keras.losses.sparse_categorical_crossentropy(labels, probabilities)
    targets = ops.one_hot(labels, num_classes) * (1.0 - label_smoothing)
    targets = targets + label_smoothing / ops.cast(num_classes, "float32")
    return keras.losses.categorical_crossentropy(targets, probabilities)


@keras.saving.register_keras_serializable(package="ssal_keras")
class SparseCrossentropy(keras.losses.Loss):
    """``sparse_crossentropy`` as a Keras loss (for ``compile``), with label smoothing.

    Args:
        label_smoothing: float. In ``[0, 1)``; 0 is plain sparse categorical cross-entropy.
    """

    def __init__(self, label_smoothing=0.0, name="sparse_crossentropy", **kwargs):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1); received label_smoothing={label_smoothing!r}."
            )
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        return sparse_crossentropy(y_true, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
