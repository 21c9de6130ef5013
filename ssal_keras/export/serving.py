"""What an exported graph computes: its input, its named outputs and the serving function.

The deployed graph takes raw pixels (float32, 0..255, NHWC, any batch size; the model's own
normalisation layer is inside it) under the input name ``images`` and returns a dict of
probabilities by output name: ``joint``, ``base``, ``aux_<i>`` for an ``SSALModel``; ``base``
alone for a plain Keras classifier (a baseline run has no branches, hence no joint output).
"""

import keras
import numpy as np

from ssal_keras.modeling import outputs as model_outputs
from ssal_keras.modeling.joint import validate_alpha

INPUT_NAME = "images"
"""The name of the exported graph's input (SavedModel signature and ONNX alike)."""

ALL_OUTPUTS = "all"
"""The keyword of ``outputs=`` that exports every output."""

OUTPUT_CHOICES = (model_outputs.JOINT, model_outputs.BASE, ALL_OUTPUTS)
"""The keywords of ``outputs=``; a comma-separated list of output names is accepted too."""


def available_outputs(model):
    """The output names an export of ``model`` can carry, in a readable order.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.

    Returns:
        list of str. ``["joint", "base", "aux_0", ...]`` for an SSAL model, ``["base"]`` for a
        plain classifier.
    """
    names = model_outputs.output_names(model)
    # The deployed prediction first, then its parts.
    first = [n for n in (model_outputs.JOINT, model_outputs.BASE) if n in names]
    return first + [n for n in names if n not in first]


def default_outputs(model):
    """``"joint"`` for an SSAL model, ``"base"`` for a plain classifier."""
    return model_outputs.JOINT if model_outputs.is_ssal(model) else model_outputs.BASE


def select_outputs(model, outputs=None):
    """Resolves the ``outputs`` argument of an export into a tuple of output names.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        outputs: None, str or sequence of str. ``None``: ``default_outputs(model)``;
            ``"joint"``, ``"base"``, ``"all"`` (every output of ``available_outputs``); or
            output names, as a sequence or one comma-separated string (``"joint,aux_0"``).

    Returns:
        tuple of str. Distinct output names, in ``available_outputs`` order.

    Raises:
        ValueError: on an unknown name, or ``"joint"`` for a model without branches.
    """
    valid = available_outputs(model)
    if outputs is None:
        outputs = default_outputs(model)
    if isinstance(outputs, str):
        names = [n.strip() for n in outputs.split(",") if n.strip()]
    else:
        names = [str(n).strip() for n in outputs]
    if names == [ALL_OUTPUTS]:
        return tuple(valid)
    if not names:
        raise ValueError(
            f"outputs is empty; give {'|'.join(OUTPUT_CHOICES)} or output names from {valid}."
        )
    for name in names:
        if name == model_outputs.JOINT and not model_outputs.is_ssal(model):
            raise ValueError(
                "outputs=joint needs an SSAL model, but this model is a plain classifier "
                "(no branches, so no joint output); export its probabilities as base: "
                "--outputs=base (Python: outputs='base')."
            )
        if name not in valid:
            raise ValueError(
                f"unknown output {name!r}; valid: {'|'.join(OUTPUT_CHOICES)} or a "
                f"comma-separated list of {', '.join(valid)}."
            )
    return tuple(n for n in valid if n in names)


def check_exportable(model):
    """Validates the model's input and output; returns its input ``(height, width, channels)``.

    Raises:
        ValueError: when the model is not a Keras model with one static-size NHWC image input
            and class probabilities of shape ``(batch, classes)`` as its (base) output.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model; received {type(model).__name__}.")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = [tuple(t.shape) for t in model.inputs]
        raise ValueError(
            f"the model must take one NHWC image batch; its inputs have shapes {shapes}."
        )
    _, height, width, channels = model.inputs[0].shape
    if height is None or width is None or channels is None:
        raise ValueError(
            f"the model's input has no fixed size {tuple(model.inputs[0].shape)}; build it "
            "with a fixed input_shape=(height, width, channels) so the exported graph and "
            "its clients know the image size."
        )
    if not model_outputs.is_ssal(model):
        if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
            shapes = [tuple(t.shape) for t in model.outputs]
            raise ValueError(
                "a plain model must have one output, class probabilities of shape "
                f"(batch, classes); its outputs have shapes {shapes}."
            )
    return int(height), int(width), int(channels)


PRECISIONS = ("float32", "model")
"""``precision=`` of an export: compute in float32 (default), or keep the model's policy."""


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def reduced_precision_policies(model):
    """The dtype policies other than float32 in the model's layers (e.g. ``mixed_float16``)."""
    return sorted({layer.dtype_policy.name for layer in _all_layers(model)} - {"float32"})


def _float32_policies(config):
    """``config`` with every serialised dtype policy set to float32."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
            config.get("config"), dict
        ):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    return config


def _rebuild(model, *, alpha=None, float32=False):
    """The model rebuilt from its config (another alpha, float32 layers), same weights."""
    config = model.get_config()
    if alpha is not None:
        config = {**config, "alpha": float(alpha)}
    if float32:
        config = _float32_policies(config)
        if "heads_dtype_policy" in config:  # SSALModel: its heads' policy, as a name
            config["heads_dtype_policy"] = "float32"
    rebuilt = type(model).from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def with_alpha(model, alpha):
    """The same SSAL model (same weights) with another combination exponent.

    Rebuilt through its config (``SSALModel.from_config``) and given the original weights, so
    every output but ``joint`` is unchanged (checked on a sample batch).

    Args:
        model: SSALModel.
        alpha: float or None. The new exponent (>= 0); ``None`` returns ``model`` itself.

    Returns:
        SSALModel.

    Raises:
        ValueError: for a negative or non-finite ``alpha``, or a model without branches.
    """
    if alpha is None:
        return model
    alpha = validate_alpha(alpha)
    if not model_outputs.is_ssal(model):
        raise ValueError(
            "alpha sets the joint prediction of an SSAL model, but this model is a plain "
            "classifier (no branches); drop alpha."
        )
    if alpha == model.alpha:
        return model
    rebuilt = _rebuild(model, alpha=alpha)
    sample = sample_images(model, 2, seed=1)
    before, after = reference_outputs(model, sample), reference_outputs(rebuilt, sample)
    for name in available_outputs(model):
        if name != model_outputs.JOINT and not np.array_equal(before[name], after[name]):
            raise RuntimeError(
                f"rebuilding the model with alpha={alpha} changed its {name!r} output; the "
                "config round trip of this model is not faithful (report it as a bug)."
            )
    return rebuilt


def as_float32(model):
    """The model with every layer computing in float32 (same weights), or ``model`` itself.

    A model trained under a mixed-precision policy computes in float16/bfloat16; its float32
    twin computes the same function more exactly, runs everywhere (ONNX Runtime's CPU kernels
    are float32) and is what an export deploys by default.
    """
    if not reduced_precision_policies(model):
        return model
    return _rebuild(model, float32=True)


def prepare(model, *, outputs=None, alpha=None, precision="float32"):
    """The model to export and its outputs: alpha applied, float32 unless told otherwise.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        outputs: None, str or sequence of str. See ``select_outputs``.
        alpha: float or None. Combination exponent of the deployed joint output.
        precision: str. ``"float32"``: layers under a mixed-precision policy are rebuilt in
            float32; ``"model"``: the model's own policy is kept.

    Returns:
        ``(model, names, precision_info)``: the model to export, its output names, and a
        dict: ``exported`` (``"float32"`` or the kept policies), ``trained`` (the model's
        reduced-precision policies, empty if none) and ``max_abs_diff_to_trained`` (largest
        difference between the float32 graph and the model under its own policy, on a
        sample; ``None`` when nothing was converted).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; received {precision!r}.")
    if alpha is not None:
        alpha = validate_alpha(alpha)
    check_exportable(model)
    names = select_outputs(model, outputs)
    trained = with_alpha(model, alpha)
    policies = reduced_precision_policies(model)
    info = {"exported": "float32", "trained": policies, "max_abs_diff_to_trained": None}
    if not policies:
        return trained, names, info
    if precision == "model":
        return trained, names, {**info, "exported": policies}
    exported = as_float32(trained)
    sample = sample_images(model, 7, seed=2)
    ours, theirs = reference_outputs(exported, sample, names), reference_outputs(
        trained, sample, names)
    info["max_abs_diff_to_trained"] = max(
        float(np.max(np.abs(ours[n].astype("float64") - theirs[n]))) for n in names
    )
    return exported, names, info


def call_model(model, images):
    """``model(images, training=False)``, with ``images`` in the structure the model takes."""
    # A functional model built with `inputs=[x]` expects a one-element list; with `inputs=x`
    # a tensor. Matching its structure avoids Keras's "structure of inputs" warning.
    structure = getattr(model, "_inputs_struct", None)
    return model([images] if isinstance(structure, (list, tuple)) else images, training=False)




def sample_images(model, batch_size, *, seed=0):
    """A seeded batch of raw pixels (uniform in 0..255, float32) of the model's input size."""
    height, width, channels = check_exportable(model)
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(batch_size, height, width, channels)).astype("float32")


def reference_outputs(model, images, names=None):
    """The Keras model's outputs by name, as float32 NumPy arrays (``training=False``)."""
    out = model_outputs.outputs_by_name(call_model(model, images))
    names = names or list(out)
    return {n: np.asarray(keras.ops.convert_to_numpy(out[n]), dtype="float32") for n in names}


def serving_function(model, names):
    """The graph to export: a ``tf.function`` from raw images to the named outputs.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        names: sequence of str. Output names (``select_outputs``).

    Returns:
        ``tf.function`` with input signature ``[tf.TensorSpec([None, H, W, C], tf.float32,
        name="images")]``, returning a dict of float32 tensors by output name.
    """
    import tensorflow as tf

    height, width, channels = check_exportable(model)
    spec = tf.TensorSpec([None, height, width, channels], tf.float32, name=INPUT_NAME)
    names = tuple(names)

    @tf.function(input_signature=[spec])
    def serve(images):
        out = model_outputs.outputs_by_name(call_model(model, images))
        return {n: tf.cast(out[n], tf.float32) for n in names}

    return serve
