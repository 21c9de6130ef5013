"""Accuracy of every output of a classifier: the paper's baseline, +TR and +JP numbers.

docs/method.md, section 1: +TR is the SSAL-trained model's ``base`` output, +JP its ``joint``
output; each branch is scored on its own targets (the group of the label).
"""

import numpy as np
import tensorflow as tf

from ssal_keras import data
from ssal_keras import grouping as grouping_lib
from ssal_keras.modeling import outputs


def _top_k_hits(probabilities, labels, k):
    k = min(k, probabilities.shape[-1])
    top = np.argpartition(-probabilities, k - 1, axis=-1)[:, :k]
    return int(np.sum(np.any(top == labels[:, None], axis=-1)))


def mistakes_within_group(predicted, labels, grouping):
    """Counts, for one grouping, how a classifier's mistakes fall: ``(mistakes, within)``, the
    examples with ``predicted != labels`` and, among them, those whose predicted class lies
    in the true class's group (``grouping[predicted] == grouping[labels]``).

    Integer counts, so that streamed batches add up to the same figure bit for bit.
    """
    predicted, labels, grouping = np.asarray(predicted), np.asarray(labels), np.asarray(grouping)
    wrong = predicted != labels
    within = wrong & (grouping[predicted] == grouping[labels])
    return int(np.sum(wrong)), int(np.sum(within))


class Accuracy:
    """Streams batches of outputs and labels; reports top-1/top-5 per output.

    Args:
        groupings: list of 1-D int arrays. The model's groupings (empty for a baseline);
            ``aux_b`` is scored against ``groupings[b][label]``.
        num_classes: int. Classes of the base output (for the confusion matrix).
    """

    def __init__(self, groupings, num_classes):
        self.groupings = [np.asarray(g) for g in groupings]
        self.num_classes = num_classes
        self.count = 0
        self.hits = {}
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def _add(self, key, value):
        self.hits[key] = self.hits.get(key, 0) + value

    def update(self, predictions, labels):
        """Adds one batch: ``predictions`` the model's outputs (a dict of probability arrays,
        or a plain classifier's one array), ``labels`` class ids."""
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        by_name = {name: np.asarray(value)
                   for name, value in outputs.outputs_by_name(predictions).items()}
        self.count += labels.size
        # Hits are keyed by output name; result() turns them into the metric names.
        for name in (outputs.BASE, outputs.JOINT):
            if name in by_name:
                self._add(f"{name}_top1", _top_k_hits(by_name[name], labels, 1))
                self._add(f"{name}_top5", _top_k_hits(by_name[name], labels, 5))
        for index, g in enumerate(self.groupings):
            name = outputs.aux_name(index)
            self._add(name, _top_k_hits(by_name[name], g[labels], 1))
        # Hierarchy-aware view of the errors: of the base and joint outputs' wrong top-1
        # predictions, how many stay inside the true class's group of each branch. Counted
        # on argmax (the prediction a user reads), kept as counts until result().
        predicted = {name: by_name[name].argmax(-1)
                     for name in (outputs.BASE, outputs.JOINT) if name in by_name}
        for name, classes in predicted.items():
            for index, g in enumerate(self.groupings):
                mistakes, within = mistakes_within_group(classes, labels, g)
                self._add(f"{name}_within_{index}", within)
            if self.groupings:  # the same count for every grouping
                self._add(f"{name}_mistakes", mistakes)
        self.confusion += grouping_lib.confusion_matrix(
            labels, predicted[outputs.BASE], self.num_classes
        )

    def _within_group_shares(self, name):
        """Per branch, the share of output ``name``'s mistakes that stay in the true class's
        group; None where the output made no mistake (or does not exist)."""
        mistakes = self.hits.get(f"{name}_mistakes", 0)
        return [self.hits[f"{name}_within_{b}"] / mistakes if mistakes else None
                for b in range(len(self.groupings))]

    def result(self):
        """``base_top1``, ``base_top5``, ``joint_top1``, ``joint_top5`` (None for a baseline),
        ``aux_top1`` (one per branch), ``mistakes_within_group`` (``{"base": [...],
        "joint": [...]}``, one share per branch; empty lists for a baseline) and
        ``examples``."""
        count = max(self.count, 1)
        rate = lambda key: self.hits[key] / count if key in self.hits else None  # noqa: E731
        return {
            "base_top1": rate("base_top1"),
            "base_top5": rate("base_top5"),
            "joint_top1": rate("joint_top1"),
            "joint_top5": rate("joint_top5"),
            "aux_top1": [rate(outputs.aux_name(i)) for i in range(len(self.groupings))],
            "mistakes_within_group": {name: self._within_group_shares(name)
                                      for name in (outputs.BASE, outputs.JOINT)},
            "examples": self.count,
        }


def base_classes(model):
    """The number of classes of ``model``'s base output."""
    return outputs.outputs_by_name(model.output)[outputs.BASE].shape[-1]


def evaluate(model, batches, *, predict=None):
    """Scores a model on batches of ``(images, labels)``.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        batches: iterable of ``(images, labels)``, e.g. a batched ``tf.data.Dataset``.
        predict: callable or None. ``images -> outputs``; default ``model(images,
            training=False)`` (the trainer passes an XLA-compiled one).

    Returns:
        ``(metrics, confusion)``: ``Accuracy.result()`` and the base output's confusion
        matrix (rows: true labels).
    """
    predict = predict or (lambda images: model(images, training=False))
    num_classes = base_classes(model)
    accuracy = Accuracy(outputs.model_groupings(model), num_classes)
    for images, labels in batches:
        accuracy.update(predict(images), np.asarray(labels))
    return accuracy.result(), accuracy.confusion


def predict_outputs(model, batches):
    """Every output of ``model`` over batches of ``(images, labels)``, gathered in memory.

    Returns:
        ``(outputs, labels)``: a dict of NumPy probability arrays (``base``, ``aux_<b>``,
        ``joint``; ``base`` only for a plain classifier) and the int64 labels.
    """
    gathered, labels = {}, []
    for images, batch_labels in batches:
        for name, value in outputs.outputs_by_name(model(images, training=False)).items():
            gathered.setdefault(name, []).append(np.asarray(value))
        labels.append(np.asarray(batch_labels).reshape(-1).astype(np.int64))
    if not labels:
        raise ValueError("no examples to predict on; the data split is empty.")
    return {k: np.concatenate(v) for k, v in gathered.items()}, np.concatenate(labels)


def compiled_predict(model, *, jit_compile):
    """``images -> outputs`` of ``model`` in inference mode, as one ``tf.function``."""
    return tf.function(lambda images: model(images, training=False), jit_compile=jit_compile)


def score(model, split, *, batch_size, image_size=None, jit_compile=True, predict=None):
    """The one evaluation of a model on an unbatched split (``scoring.evaluate``'s metrics
    and confusion matrix): what the trainer records after every epoch and what
    ``python -m ssal_keras.evaluate`` reports. Same batches and the same compiled function
    give the same figures bit for bit, under mixed precision too (bfloat16 results depend on
    XLA and on the batch shapes, so both take the run's ``--jit_compile`` and
    ``--eval_batch_size``).

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        split: tf.data.Dataset. Unbatched ``(image, label)`` examples.
        batch_size: int. Evaluation batch size.
        image_size: int or None. Resize and centre-crop to this size (``data.eval_pipeline``).
        jit_compile: bool. Compile the forward pass with XLA (when ``predict`` is None).
        predict: callable or None. A ``compiled_predict`` of ``model`` to reuse.
    """
    batches = data.eval_pipeline(split, batch_size=batch_size, image_size=image_size)
    predict = predict or compiled_predict(model, jit_compile=jit_compile)
    return evaluate(model, batches, predict=predict)
