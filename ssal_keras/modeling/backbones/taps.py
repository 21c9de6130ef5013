"""Feature taps: named positions in a backbone where an auxiliary head can be attached.

Every tap records its channels and stride (as timm's ``FeatureInfo`` does), so a head never
has to guess. Each backbone builder of this package declares its taps as it builds
(``declare``, as KerasHub's ``pyramid_outputs`` and timm's ``feature_info``): the
declaration is checked (every layer exists and gives a 4-D map; strides never shrink with
depth) and travels with an ``SSALModel``'s ``.keras`` file. Names are inferred from layer
names only for models that declare none: a user's own model, or a ``.keras`` file saved before
declarations existed (issue 21). Friendly names, ordered by depth:

* ``stem``: the end of the stem (layer ``stem_out``);
* ``stage{s}_block{b}``: the output of block ``b`` of stage ``s`` (``stage{s}_block{b}_out``;
  for DenseNet a block is one bottleneck layer and its output the concatenation);
* ``stage{s}``: the end of stage ``s``, i.e. its last block;
* ``transition{t}`` (DenseNet): the output of transition ``t`` after its average pool, i.e.
  the start of dense block ``t + 1``.

``keras.applications`` ResNets (``resnet50_keras_applications``) are mapped onto the same
names: stage ``s`` is Keras's ``conv{s + 1}`` (``stage1`` = ``conv2_block3_out``,
``stage1_block1`` = ``conv2_block1_out``) and ``stem`` is ``pool1_pool`` (the max pool
output, stride 4, the input of Conv2 -- like ``stem_out`` of ``resnet18_tiny_imagenet``;
``conv1_relu`` if a model has no ``pool1_pool``). Any other functional model gets one tap
per layer whose name ends in ``_out`` or is a keras-cv pyramid level (``P2``, ``P3``...:
``backbones.from_keras_cv``) and whose output is 4-D, named after the layer (an empty dict if
none).
Besides these names, ``resolve_tap`` accepts the name of any layer with a 4-D output.
"""

import re
from typing import NamedTuple, Optional

#: The attribute of a model that holds its declared taps (a tuple of ``Tap``).
DECLARED = "declared_taps"

_OUR_BLOCK = re.compile(r"^stage(\d+)_block(\d+)_out$")
_OUR_TRANSITION = re.compile(r"^transition(\d+)_out$")
_KERAS_BLOCK = re.compile(r"^conv(\d+)_block(\d+)_out$")
_PYRAMID_LEVEL = re.compile(r"^P\d+$")

# How many valid names an error message lists before it says "... and N more".
_MAX_LISTED = 40


class Tap(NamedTuple):
    """A feature map of a backbone.

    Attributes:
        name: str. The tap's name (a friendly name, or the layer's name).
        layer_name: str. The layer whose output is the feature map.
        channels: int. Channels of the feature map (NHWC, last axis).
        stride: int or None. Input height / feature map height; ``None`` when either is
            not static or the ratio is not an integer.
    """

    name: str
    layer_name: str
    channels: int
    stride: Optional[int]


def _output_shape(layer):
    """The layer's single output shape, or ``None`` if it has none or several."""
    try:
        output = layer.output
    except (AttributeError, ValueError, RuntimeError):
        return None
    shape = getattr(output, "shape", None)
    return None if shape is None else tuple(shape)


def _input_height(model):
    inputs = getattr(model, "inputs", None) or []
    if not inputs:
        return None
    shape = tuple(inputs[0].shape)
    return shape[1] if len(shape) == 4 else None


def _make_tap(name, layer_name, shape, input_height):
    height = shape[1]
    stride = None
    if input_height is not None and height and input_height % height == 0:
        stride = input_height // height
    return Tap(name=name, layer_name=layer_name, channels=shape[-1], stride=stride)


def _feature_layers(model):
    """``(layer_name, shape)`` for every layer with a single 4-D output, in layer order."""
    for layer in model.layers:
        shape = _output_shape(layer)
        if shape is not None and len(shape) == 4:
            yield layer.name, shape


def _friendly_names(layer_names):
    """Maps layer names to friendly tap names: ``[(tap_name, layer_name), ...]``."""
    ours = "stem_out" in layer_names or any(_OUR_BLOCK.match(n) for n in layer_names)
    keras_resnet = not ours and any(_KERAS_BLOCK.match(n) for n in layer_names)
    if ours:
        block_re, stage_offset = _OUR_BLOCK, 0
    elif keras_resnet:
        block_re, stage_offset = _KERAS_BLOCK, 1
    else:
        return [(n, n) for n in layer_names if n.endswith("_out") or _PYRAMID_LEVEL.match(n)]

    # The last block of each stage gives the stage's end.
    last_block = {}
    for n in layer_names:
        m = block_re.match(n)
        if m:
            stage = int(m.group(1)) - stage_offset
            last_block[stage] = max(last_block.get(stage, 0), int(m.group(2)))

    if ours:
        stem = "stem_out" if "stem_out" in layer_names else None
    else:
        stem = next((n for n in ("pool1_pool", "conv1_relu") if n in layer_names), None)

    pairs = []
    for n in layer_names:
        if n == stem:
            pairs.append(("stem", n))
            continue
        m = block_re.match(n)
        if m:
            stage, block = int(m.group(1)) - stage_offset, int(m.group(2))
            pairs.append((f"stage{stage}_block{block}", n))
            if block == last_block[stage]:
                pairs.append((f"stage{stage}", n))
            continue
        m = _OUR_TRANSITION.match(n) if ours else None
        if m:
            pairs.append((f"transition{int(m.group(1))}", n))
    return pairs


def staged_layout(stage_blocks, *, transitions=0, stem="stem_out",
                  block_layer="stage{s}_block{b}_out", first_stage=1):
    """The ``declare`` layout of a staged network: ``stem``, then for each stage ``s`` its
    blocks ``stage{s}_block{b}``, the stage's end ``stage{s}`` (its last block) and, for the
    first ``transitions`` stages, ``transition{s}`` (layer ``transition{s}_out``, DenseNet).

    Args:
        stage_blocks: sequence of int. Blocks in each stage.
        transitions: int. Stages followed by a transition.
        stem: str. The layer ending the stem.
        block_layer: str. The layer of block ``b`` of stage ``s``, a format with ``{s}`` (the
            stage's number in the layer names) and ``{b}``.
        first_stage: int. The number layer names give the first stage (Keras's ResNet50: 2,
            ``conv2``), while tap names count from 1.
    """
    layout = [("stem", stem)]
    for s, count in enumerate(stage_blocks, start=1):
        names = [block_layer.format(s=s + first_stage - 1, b=b) for b in range(1, count + 1)]
        layout += [(f"stage{s}_block{b}", n) for b, n in enumerate(names, start=1)]
        layout.append((f"stage{s}", names[-1]))
        if s <= transitions:
            layout.append((f"transition{s}", f"transition{s}_out"))
    return layout


def declare(model, layout):
    """Records the taps of ``model`` (one of its builders calls this as it builds).

    Args:
        model: keras.Model. The functional backbone.
        layout: sequence of ``(tap_name, layer_name)``, ordered by depth.

    Returns:
        ``model``, holding its taps as ``DECLARED``.

    Raises:
        ValueError: a layer that is missing or not a 4-D feature map, or a stride smaller
            than the one before it (a layout out of depth order).
    """
    input_height = _input_height(model)
    declared = []
    for tap_name, layer_name in layout:
        try:
            shape = _output_shape(model.get_layer(layer_name))
        except ValueError:
            shape = None
        if shape is None or len(shape) != 4:
            raise ValueError(f"tap {tap_name!r} of {model.name} names layer {layer_name!r}, "
                             "which is not a 4-D feature map of the model; declare the layer "
                             "that outputs the tapped map.")
        tap = _make_tap(tap_name, layer_name, shape, input_height)
        previous = next((t.stride for t in reversed(declared) if t.stride), None)
        if tap.stride and previous and tap.stride < previous:
            raise ValueError(f"tap {tap_name!r} of {model.name} has stride {tap.stride}, below "
                             f"the {previous} of a tap before it; declare taps in depth order.")
        declared.append(tap)
    setattr(model, DECLARED, tuple(declared))
    return model


def declared_layout(model):
    """``[(tap_name, layer_name), ...]`` of the taps ``model`` declares (empty if none): what
    an ``SSALModel`` saves so that its loaded backbone declares them again."""
    return [(t.name, t.layer_name) for t in getattr(model, DECLARED, ())]


def inferred_taps(model):
    """The taps a model that declares none gets from its layer names (module docstring)."""
    features = dict(_feature_layers(model))
    input_height = _input_height(model)
    return {
        tap_name: _make_tap(tap_name, layer_name, features[layer_name], input_height)
        for tap_name, layer_name in _friendly_names(list(features))
    }


def taps(model):
    """The named feature taps of a functional model, ordered by depth: those it declares,
    else those inferred from its layer names.

    Example::

        model = ssal_keras.backbones.build("resnet50_cifar", num_classes=100)
        taps(model)["stage3"]
        # Tap(name='stage3', layer_name='stage3_block6_out', channels=1024, stride=4)

    Args:
        model: keras.Model. A functional model (any of ours, a ``keras.applications``
            ResNet, or a user's model).

    Returns:
        dict of str to Tap. Friendly tap names (see the module docstring) to taps.
    """
    declared = getattr(model, DECLARED, None)
    if declared:
        return {t.name: t for t in declared}
    return inferred_taps(model)


def resolve_tap(model, tap):
    """Finds a tap by friendly name, or by the name of any layer with a 4-D output.

    Args:
        model: keras.Model. The backbone.
        tap: str. A key of ``taps(model)`` (``"stage2"``) or a layer name
            (``"stage2_block3_2_conv"``).

    Returns:
        Tap. For a layer name, the tap's ``name`` is the layer name.

    Raises:
        ValueError: if ``tap`` is neither a tap name nor a layer of the model, or names a
            layer whose output is not a 4-D feature map.
    """
    named = taps(model)
    if isinstance(tap, str):
        if tap in named:
            return named[tap]
        try:
            layer = model.get_layer(tap)
        except ValueError:
            layer = None
        if layer is not None:
            shape = _output_shape(layer)
            if shape is None or len(shape) != 4:
                raise ValueError(
                    f"`tap` names layer {tap!r} of model {model.name!r}, which is not a 4-D "
                    f"feature map (output shape {shape}); a tap must be a (batch, height, "
                    f"width, channels) tensor. Received: tap={tap!r}"
                )
            return _make_tap(tap, tap, shape, _input_height(model))

    valid = list(named)
    what = "tap names"
    if not valid:
        valid = [name for name, _ in _feature_layers(model)]
        what = "4-D layer names"
    listed = ", ".join(valid[:_MAX_LISTED])
    if len(valid) > _MAX_LISTED:
        listed += f", ... and {len(valid) - _MAX_LISTED} more"
    raise ValueError(
        f"`tap` must be a tap name of model {model.name!r} or the name of any of its layers "
        f"with a 4-D output. Valid {what}: [{listed}]. Received: tap={tap!r}"
    )
