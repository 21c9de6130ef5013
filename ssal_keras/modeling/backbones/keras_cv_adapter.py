"""keras-cv backbones as SSAL classifiers, tapped at their feature-pyramid levels.

A keras-cv backbone (``keras_cv.models.ResNetV2Backbone``, ``ResNetBackbone``,
``DenseNetBackbone``, ``EfficientNetV2Backbone``, ``MobileNetV3Backbone``,
``YOLOV8Backbone``, ...) is a functional model that ends in a feature map and names its
feature-pyramid levels in ``pyramid_level_inputs`` (``{"P2": layer_name, "P3": ...}``).
``from_keras_cv`` replays that graph, with the backbone's own layers, on a new input and adds
the project's classifier: a flat functional model whose pyramid levels are ``Identity`` layers
named ``"P2"``, ``"P3"``, ..., so ``Branch(tap="P3", ...)`` finds them through
``taps(model)`` and ``resolve_tap`` (with their channels and stride), and whose ``.keras``
file holds only registered Keras layers.

keras-cv itself is never imported: a backbone is recognised by being a ``keras.Model`` with a
``pyramid_level_inputs`` dict, so importing ``ssal_keras`` stays as fast as before.
"""

import json

import keras
from keras import layers

from ssal_keras.modeling import blocks, graph
from ssal_keras.modeling.backbones import common
from ssal_keras.modeling.backbones.taps import declare

# The layers ``from_keras_cv`` adds around the backbone's graph (``common.model_input`` and
# ``common.classifier`` name them); a backbone layer of the same name would clash.
_OWN_LAYER_NAMES = ("input", "preprocess", "avg_pool", "predictions")


def _check_backbone(backbone):
    """The backbone's pyramid levels as ``{level: operation name}``; ``ValueError`` if it is
    not a keras-cv backbone whose graph ``from_keras_cv`` can replay and save."""
    levels = getattr(backbone, "pyramid_level_inputs", None)
    if not isinstance(backbone, keras.Model) or not isinstance(levels, dict) or not levels:
        what = type(backbone).__name__
        if isinstance(backbone, keras.Model) and isinstance(levels, dict):
            what += " with an empty pyramid_level_inputs"
        raise ValueError(
            f"from_keras_cv needs a keras_cv backbone with pyramid_level_inputs; received {what}.")
    # A subclassed model has no graph to replay (``model.py`` asks the same of a backbone).
    if not graph.is_functional(backbone) or len(backbone.inputs) != 1:
        raise ValueError(
            f"from_keras_cv needs a functional keras_cv backbone with one image input; "
            f"received {type(backbone).__name__} {backbone.name!r}.")
    if len(backbone.output.shape) != 4:
        raise ValueError(
            f"from_keras_cv needs a backbone that ends in a (batch, height, width, channels) "
            f"feature map; {backbone.name!r} gives shape {tuple(backbone.output.shape)}.")

    names = {op.name for op in backbone.operations}
    for level, op_name in levels.items():
        if not isinstance(level, str) or op_name not in names:
            raise ValueError(
                f"{backbone.name!r}.pyramid_level_inputs maps {level!r} to {op_name!r}, which "
                f"is not one of its layers.")
    clashes = sorted(names & {*_OWN_LAYER_NAMES, *levels}
                     - {op.name for op in backbone.operations
                        if isinstance(op, layers.InputLayer)})
    if clashes:
        raise ValueError(
            f"{backbone.name!r} has layers named {clashes}, names from_keras_cv gives its own "
            f"layers (the input, normalisation, classifier and pyramid taps).")
    # A .keras file rebuilds each layer from its config, and every run folder loads with
    # safe_mode=True: refuse now what would only fail after training.
    unloadable = _unloadable_layers(backbone)
    if unloadable:
        listed = "; ".join(unloadable[:3]) + ("; ..." if len(unloadable) > 3 else "")
        raise ValueError(
            f"{type(backbone).__name__} {backbone.name!r} has layers whose .keras file would "
            f"not load with safe_mode=True: {listed}.")
    return {op_name: level for level, op_name in levels.items()}


def _unloadable_layers(model, prefix=""):
    """``"path (why)"`` for each layer of ``model``, nested models included, that a ``.keras``
    file could not rebuild in safe mode: Lambda layers (Python code, e.g. in
    ``CSPDarkNetBackbone``) and layers whose ``from_config`` fails on their own ``get_config``
    (e.g. keras-cv 0.9's ``SqueezeAndExcite2D`` with ``MobileNetV3Backbone``'s hard sigmoid)."""
    found = []
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, layers.Lambda):
            found.append(f"{path} (a Lambda layer)")
        elif isinstance(layer, keras.Model):
            # Checked layer by layer: rebuilding a nested model would allocate its weights.
            found.extend(_unloadable_layers(layer, prefix=f"{path}/"))
        elif not isinstance(layer, layers.InputLayer):
            try:
                # The layer's JSON entry in a .keras file (the JSON step matters: keras-cv's
                # squeeze-excite only fails on the decoded dicts), less its build_config, so
                # it is rebuilt without weights (microseconds a layer).
                config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
                config.pop("build_config", None)
                keras.saving.deserialize_keras_object(config, safe_mode=True)
            except Exception as error:  # noqa: BLE001  (any failure means an unloadable file)
                # Keras nests the cause's message under "Exception encountered: " lines.
                reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
                reason = reason.removeprefix("Exception encountered: ")
                found.append(f"{path} ({type(layer).__name__} does not rebuild from its "
                             f"config: {reason[:120]})")
    return found


def from_keras_cv(backbone, *, num_classes, normalization=None, name=None):
    """A classifier over a keras-cv backbone, usable as an ``SSALModel`` backbone.

    The result is flat: the backbone's layers themselves (shared, not copied, so pretrained
    weights are kept and training the classifier trains ``backbone``), each pyramid level
    followed by an ``Identity`` layer named after it (``"P2"``, ``"P3"``, ...: the taps it
    declares), then
    ``avg_pool`` (global average pooling) and ``predictions`` (dense softmax, float32), as
    the project's own backbones end.

    Example::

        backbone = keras_cv.models.ResNetV2Backbone.from_preset(
            "resnet50_v2_imagenet", input_shape=(224, 224, 3))
        classifier = ssal_keras.backbones.from_keras_cv(backbone, num_classes=100)
        model = ssal_keras.SSALModel(classifier, [
            ssal_keras.Branch(tap="P3", grouping=grouping, head=["cbr(128,3)", "gap"])])

    Args:
        backbone: keras.Model. A keras-cv backbone: functional, one image input, a 4-D
            feature map out, a non-empty ``pyramid_level_inputs`` and only layers a
            ``.keras`` file rebuilds in safe mode (keras-cv 0.9's ``CSPDarkNetBackbone`` has
            Lambda layers and ``MobileNetV3Backbone`` a squeeze-excite layer that does not
            rebuild from its config: both are refused).
        num_classes: int. Number of classes (>= 2).
        normalization: None, ``"scale"`` or ``(mean, std)``. Input normalisation added in
            front of the backbone (``common.model_input``), so the model takes raw pixels
            (0..255). ``None`` (the default) leaves the input to the backbone: a keras-cv
            backbone built with ``include_rescaling=True`` already divides by 255; one built
            with ``include_rescaling=False`` needs ``"scale"`` or ``(mean, std)`` here for
            raw pixels.
        name: str or None. The model's name; ``None`` for the backbone's.

    Returns:
        A functional ``keras.Model`` mapping images (the backbone's input shape) to class
        probabilities.

    Raises:
        ValueError: when ``backbone`` is not a usable keras-cv backbone (see above), on an
            invalid ``num_classes`` or ``normalization``, or when ``normalization`` is given
            for a backbone that already rescales its input.
    """
    levels = _check_backbone(backbone)
    common.check_num_classes(num_classes)
    if normalization is not None and getattr(backbone, "include_rescaling", False):
        raise ValueError(
            f"{backbone.name!r} was built with include_rescaling=True and already divides "
            f"its input by 255; give normalization=None. Received: "
            f"normalization={normalization!r}")

    inputs, x = common.model_input(tuple(backbone.input.shape[1:]), normalization)
    tapped = []

    def replace_input(value):
        return x if value is inputs else value

    def call(operation, *args, **kwargs):
        # The backbone's first layers read the normalised tensor, not the raw input.
        args, kwargs = keras.tree.map_structure(replace_input, (args, kwargs))
        outputs = operation(*args, **kwargs)
        level = levels.get(operation.name)
        if level is None:
            return outputs
        if not isinstance(outputs, keras.KerasTensor) or len(outputs.shape) != 4:
            raise ValueError(
                f"pyramid level {level!r} of {backbone.name!r} ({operation.name!r}) is not a "
                f"(batch, height, width, channels) feature map.")
        tapped.append(level)
        # Deeper layers read the Identity's output, so the tap lies on the path to the
        # predictions and is part of the functional model (a dead-end layer would not be).
        return layers.Identity(name=level)(outputs)

    # clone_model with the identity as clone_function replays the graph on the backbone's
    # own layers (and their weights) instead of copying them.
    replayed = keras.models.clone_model(
        backbone, input_tensors=inputs, clone_function=lambda operation: operation,
        call_function=call)
    missing = sorted(set(levels.values()) - set(tapped))
    if missing:
        raise ValueError(
            f"pyramid levels {missing} of {backbone.name!r} are not on the path from its "
            f"input to its output.")
    outputs = common.classifier(replayed.output, num_classes=num_classes,
                                style=blocks.LayerStyle())
    # Its taps: the pyramid levels, in the order the graph reached them (depth order).
    return declare(keras.Model(inputs, outputs, name=name or backbone.name),
                   [(level, level) for level in tapped])
