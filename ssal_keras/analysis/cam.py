"""Class activation maps of the base classifier (supplement D).

CAM (Zhou et al., 2016) needs the classifier the paper's backbones end with: global average
pooling of the last feature map, then one dense layer. The map of class ``c`` is that feature
map weighted by the dense layer's column ``c`` (the bias shifts every position equally and is
left out), upsampled to the input's size.
"""

import keras
from keras import ops

from ssal_keras.modeling import graph, outputs

_FEATURES = "cam_features"

# Layers that pass the base classifier's probabilities through unchanged in meaning: the
# SSALModel's ``base`` Identity, a separate softmax.
_PASS_THROUGH = (keras.layers.Identity, keras.layers.Activation, keras.layers.Softmax)


def base_classifier_layers(model):
    """``(pooling, dense)``: the global average pooling and dense layer the base output comes
    from.

    Raises:
        ValueError: when the base output is not ``dense(global_average_pooling(features))``.
    """
    base = outputs.outputs_by_name(model.output)[outputs.BASE]
    layer = graph.producing_layer(model, base)
    while isinstance(layer, _PASS_THROUGH):
        layer = graph.producing_layer(model, layer.input)
    pooling = None
    if isinstance(layer, keras.layers.Dense):
        pooling = graph.producing_layer(model, layer.input)
    if not isinstance(pooling, keras.layers.GlobalAveragePooling2D):
        found = type(layer).__name__ if pooling is None else type(pooling).__name__
        raise ValueError(
            f"class activation maps need a base classifier of global average pooling then a "
            f"dense layer, but the model's base output comes from {found} {layer.name!r}; "
            "build the backbone's top with ssal_keras.backbones.common.classifier.")
    return pooling, layer


class ClassActivationMaps:
    """Computes class activation maps of a model's base classifier.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier ending in global average
            pooling and a dense layer (every backbone of ``ssal_keras.backbones``).

    Call with images (raw pixels, the model's input) to get ``(maps, outputs)``.
    """

    def __init__(self, model):
        pooling, self.dense = base_classifier_layers(model)
        by_name = outputs.outputs_by_name(model.output)
        # One pass gives the last feature map and every output (the branches' votes too).
        self.features = keras.Model(model.inputs[0], {_FEATURES: pooling.input, **by_name},
                                    name="cam_features")
        self.input_size = tuple(model.inputs[0].shape[1:3])

    def __call__(self, images, classes=None):
        """Maps of ``classes`` (default: the base prediction) for a batch of images.

        Args:
            images: array ``(N, H, W, C)``. Raw pixels, as the model takes them.
            classes: int array ``(N,)`` or None. The class of each image's map.

        Returns:
            ``(maps, outputs)``: NumPy float32 ``(N, H, W)`` maps scaled to 0..1 per image
            (all zero where the map is flat), and the model's outputs by name as NumPy arrays
            (``base``, and ``aux_<b>`` and ``joint`` for an SSAL model).
        """
        by_name = dict(self.features(images, training=False))
        features = by_name.pop(_FEATURES)
        if classes is None:
            classes = ops.argmax(by_name[outputs.BASE], axis=-1)
        weights = ops.transpose(ops.take(ops.cast(self.dense.kernel, "float32"), classes, axis=1))
        maps = ops.einsum("nhwk,nk->nhw", ops.cast(features, "float32"), weights)
        maps = ops.image.resize(maps[..., None], self.input_size, interpolation="bilinear")[..., 0]
        low = ops.min(maps, axis=(1, 2), keepdims=True)
        span = ops.max(maps, axis=(1, 2), keepdims=True) - low
        maps = ops.where(span > 0, (maps - low) / ops.maximum(span, 1e-12), 0.0)
        return ops.convert_to_numpy(maps), {k: ops.convert_to_numpy(v) for k, v in by_name.items()}


def select_examples(model, batches, *, incorrect, correct):
    """The first ``incorrect`` wrongly and ``correct`` rightly classified test images, with
    their maps (supplement D shows both kinds side by side).

    Args:
        model: keras.Model. As for ``ClassActivationMaps``.
        batches: iterable of ``(images, labels)``.
        incorrect, correct: int. How many of each kind to find.

    Returns:
        ``(chosen, scanned)``: ``chosen`` a dict ``{"incorrect": [...], "correct": [...]}`` of
        dicts with ``index`` (position in the data), ``label``, ``predicted``,
        ``probability`` (the base output's for ``predicted``), ``branch_votes`` (each
        branch's most likely group), ``image`` and ``map``; ``scanned`` the images looked at.
        A kind may come short when the data holds too few of it.
    """
    maps_of = ClassActivationMaps(model)
    branches = len(outputs.model_groupings(model))
    wanted = {"incorrect": incorrect, "correct": correct}
    chosen = {"incorrect": [], "correct": []}
    scanned = 0
    for images, labels in batches:
        images, labels = ops.convert_to_numpy(images), ops.convert_to_numpy(labels).reshape(-1)
        maps, by_name = maps_of(images)
        base = by_name[outputs.BASE]
        predicted = base.argmax(-1)
        for i, label in enumerate(labels):
            kind = "correct" if predicted[i] == label else "incorrect"
            if len(chosen[kind]) < wanted[kind]:
                chosen[kind].append({
                    "index": scanned + i, "label": int(label), "predicted": int(predicted[i]),
                    "probability": float(base[i, predicted[i]]),
                    "branch_votes": [int(by_name[outputs.aux_name(b)][i].argmax())
                                     for b in range(branches)],
                    "image": images[i], "map": maps[i]})
        scanned += len(labels)
        if all(len(chosen[k]) == wanted[k] for k in chosen):
            break
    return chosen, scanned
