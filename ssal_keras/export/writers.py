"""SavedModel and ONNX writers, each proving its graph equal to the Keras model.

Every writer stages its artifact beside the destination, runs it (TensorFlow for the
SavedModel, ONNX Runtime for ONNX) on seeded raw-pixel batches of 1 and 7 images, compares
every exported output with ``model(x, training=False)`` and only then moves it into place. An
export whose largest difference exceeds the tolerance raises ``ExportCheckError`` and leaves
nothing at the destination.

The formats are described once, in ``WRITERS``; ``to_saved_model``, ``to_onnx`` and the export
folder (``bundle.export_folder``) all go through it.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Callable

import numpy as np

from ssal_keras.export import serving

TOLERANCE = 1e-4
"""Largest absolute difference allowed between an exported output and the Keras model's."""

DEFAULT_OPSET = 17
"""The ONNX opset of ``to_onnx`` (tf2onnx 1.17 supports up to 18)."""

MIN_OPSET, MAX_OPSET = 13, 18
"""The ONNX opsets tf2onnx 1.17 converts to."""

CHECK_BATCH_SIZES = (1, 7)
"""Batch sizes of the self-check (the batch dimension must stay dynamic)."""

SIGNATURE = "serving_default"
"""The SavedModel signature name (TF Serving's default)."""


class ExportError(RuntimeError):
    """An export could not be made (e.g. tf2onnx cannot convert an op); nothing was written."""


class ExportCheckError(ExportError):
    """The exported graph does not compute what the Keras model computes."""


def check_opset(opset):
    """Returns ``opset`` if tf2onnx can convert to it; raises ``ValueError`` otherwise."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
        MIN_OPSET <= opset <= MAX_OPSET
    ):
        raise ValueError(
            f"opset must be an int in {MIN_OPSET}..{MAX_OPSET} (tf2onnx 1.17); received "
            f"{opset!r}."
        )
    return opset


# --- all-or-nothing writes ---------------------------------------------------------------
def put_in_place(staged, path):
    """Moves a staged file or folder to ``path``, replacing the file or folder there."""
    if os.path.isdir(path) and not os.path.islink(path):
        # A folder cannot be replaced in one step: move the old one aside first.
        aside = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".old-")
        os.rename(path, os.path.join(aside, "old"))
        os.rename(staged, path)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staged, path)


def write_staged(path, write, *, place=put_in_place):
    """Writes ``path`` all or nothing, through a staging folder beside it.

    ``write(staged)`` writes the file or folder ``staged``, a path of the same name in a fresh
    hidden folder beside ``path``; only when it returns is ``place(staged, path)`` called to
    move the result into place. The staging folder is removed whatever happens, so a failed
    write leaves nothing behind and an existing ``path`` untouched.

    Args:
        path: str. The file or folder to write (its parent folder is created).
        write: callable. ``write(staged)``; raises to abandon the write.
        place: callable. ``place(staged, path)``; default ``put_in_place`` (replace).

    Returns:
        What ``write`` returned.
    """
    destination = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(destination)
    os.makedirs(parent, exist_ok=True)
    # Beside the destination, so that the final move is a rename within one file system.
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{name}.partial-")
    try:
        staged = os.path.join(staging, name)
        result = write(staged)
        place(staged, os.fspath(path))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


# --- the self-check ----------------------------------------------------------------------
@contextlib.contextmanager
def _no_tf32():
    # TF32 is on by default on Ampere and newer GPUs; it would blur the comparison
    # (docs/stack_notes.md, section 4).
    import tensorflow as tf

    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(enabled)


def _largest_differences(model, run, names, what, seed):
    """The largest absolute difference of each output over the check batches (NaN kept)."""
    per_output = {n: 0.0 for n in names}
    with _no_tf32():
        for batch_size in CHECK_BATCH_SIZES:
            images = serving.sample_images(model, batch_size, seed=seed + batch_size)
            expected = serving.reference_outputs(model, images, names)
            got = run(images)
            if set(got) != set(names):
                raise ExportCheckError(
                    f"the {what} returns outputs {sorted(got)}; expected {sorted(names)}."
                )
            for name in names:
                value = np.asarray(got[name])
                if value.shape != expected[name].shape:
                    raise ExportCheckError(
                        f"the {what} gives output {name!r} shape {value.shape} for a batch of "
                        f"{batch_size}; the Keras model gives {expected[name].shape}."
                    )
                diff = float(np.max(np.abs(value.astype("float64") - expected[name])))
                per_output[name] = max(per_output[name], diff) if diff == diff else float("nan")
    return per_output


def compare(model, run, names, *, what, tolerance=TOLERANCE, seed=0):
    """Runs an exported graph and the Keras model on the same batches; raises if they differ.

    Args:
        model: keras.Model. The model that was exported.
        run: callable. ``run(images) -> dict`` of NumPy arrays by output name: the exported
            graph.
        names: sequence of str. The outputs the graph must return.
        what: str. The artifact, for messages (``"ONNX model"``).
        tolerance: float. Largest absolute difference allowed.
        seed: int. Seed of the sample batches.

    Returns:
        dict: ``max_abs_diff`` (over every output and batch), ``max_abs_diff_per_output``,
        ``batch_sizes``, ``tolerance``.

    Raises:
        ExportCheckError: on a missing or misshapen output, or a difference over
            ``tolerance`` (NaN counts as a difference).
    """
    per_output = _largest_differences(model, run, names, what, seed)
    worst = max(per_output.values(), key=lambda d: float("inf") if d != d else d)
    for name, diff in per_output.items():
        if not diff <= tolerance:  # NaN fails too
            raise ExportCheckError(
                f"the {what} differs from the Keras model by {diff:.3g} on output {name!r} "
                f"(tolerance {tolerance:g}); nothing was written. Check for layers that "
                "behave differently outside Keras (e.g. augmentation), or export in float32 "
                "(precision='float32')."
            )
    return {
        "max_abs_diff": worst,
        "max_abs_diff_per_output": per_output,
        "batch_sizes": list(CHECK_BATCH_SIZES),
        "tolerance": tolerance,
    }


# --- SavedModel --------------------------------------------------------------------------
def write_saved_model(model, path, names):
    """Writes the serving graph as a SavedModel (signature ``serving_default``), unchecked."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serving.serving_function(model, names))
    archive.write_out(os.fspath(path), verbose=False)


def check_saved_model(model, path, names, *, tolerance=TOLERANCE):
    """Loads a SavedModel with TensorFlow alone and compares it with ``model``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.fspath(path))
    if SIGNATURE not in loaded.signatures:
        raise ExportCheckError(
            f"the SavedModel has signatures {sorted(loaded.signatures)}; expected {SIGNATURE!r}."
        )
    signature = loaded.signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature
    if list(inputs) != [serving.INPUT_NAME]:
        raise ExportCheckError(
            f"the SavedModel's inputs are {sorted(inputs)}; expected [{serving.INPUT_NAME!r}]."
        )

    def run(images):
        out = signature(**{serving.INPUT_NAME: tf.constant(images)})
        return {k: v.numpy() for k, v in out.items()}

    return compare(model, run, names, what="SavedModel", tolerance=tolerance)


# --- ONNX --------------------------------------------------------------------------------
def _convert_to_onnx(model, names, opset):
    """The tf2onnx conversion of the serving graph, an ``onnx.ModelProto``."""
    import tensorflow as tf
    import tf2onnx

    concrete = serving.serving_function(model, names).get_concrete_function()
    # A concrete function's inputs are its arguments, then its captured tensors.
    num_args = len(tf.nest.flatten(concrete.structured_input_signature))
    input_names = [t.name for t in concrete.inputs[:num_args]]
    output_names = [t.name for t in concrete.outputs]
    rename = dict(zip(input_names, [serving.INPUT_NAME]))
    rename.update({t.name: name for name, t in concrete.structured_outputs.items()})
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel("ERROR")  # tf2onnx's freezing calls TF1 APIs that log deprecations
    try:
        with tf.device("/cpu:0"):
            graph_def = tf2onnx.tf_loader.from_function(concrete, input_names, output_names)
            proto, _ = tf2onnx.convert.from_graph_def(
                graph_def, name=model.name, input_names=input_names,
                output_names=output_names, opset=opset, tensors_to_rename=rename,
            )
    except Exception as error:  # tf2onnx raises many kinds
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(
            f"tf2onnx could not convert the model at opset {opset} ({type(error).__name__}: "
            f"{first_line}); try --opset=18 or export --formats=saved_model; nothing was "
            "written."
        ) from error
    finally:
        tf_logger.setLevel(level)
    return proto


def write_onnx(model, path, names, *, opset=DEFAULT_OPSET):
    """Converts the serving graph to ONNX with tf2onnx, unchecked; returns the ModelProto.

    The concrete serving function is frozen (``tf2onnx.tf_loader.from_function``: variables
    and captured constants become constants) and converted with
    ``tf2onnx.convert.from_graph_def``. Not ``tf2onnx.convert.from_function``: it declares
    every captured tensor a graph input (e.g. the mean and variance of a
    ``keras.layers.Normalization``), so the ONNX graph would ask for them. The graph input is
    named ``images``, the outputs by their names; the batch dimension is named ``batch``.
    """
    import onnx

    proto = _convert_to_onnx(model, names, opset)
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    proto.producer_name = "ssal_keras.export (tf2onnx)"
    onnx.save(proto, os.fspath(path))
    return proto


def check_onnx(model, path, names, *, tolerance=TOLERANCE):
    """Runs an ONNX file in ONNX Runtime and compares it with ``model``."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(
            os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # e.g. an op tf2onnx left unconverted
        raise ExportCheckError(
            f"ONNX Runtime cannot load the converted graph ({str(error).strip()[:300]}); an op "
            "may have no ONNX equivalent at this opset; nothing was written."
        ) from error
    inputs = [i.name for i in session.get_inputs()]
    if inputs != [serving.INPUT_NAME]:
        raise ExportCheckError(
            f"the ONNX model's inputs are {inputs}; expected [{serving.INPUT_NAME!r}]."
        )
    output_names = [o.name for o in session.get_outputs()]
    if sorted(output_names) != sorted(names):
        raise ExportCheckError(
            f"the ONNX model's outputs are {output_names}; expected {sorted(names)}."
        )

    def run(images):
        return dict(zip(output_names, session.run(None, {serving.INPUT_NAME: images})))

    return compare(model, run, names, what="ONNX model", tolerance=tolerance)


# --- the formats -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Writer:
    """One export format: how it is written and checked, and where it lies in an export folder.

    Attributes:
        artifact: str. Its path inside an export folder (``bundle.ARTIFACTS``).
        write: callable. ``write(model, path, names[, opset=])``: the unchecked graph.
        check: callable. ``check(model, path, names, tolerance=)``: ``compare``'s figures.
        takes_opset: bool. Whether ``write`` takes an ONNX ``opset`` (recorded in reports).
        details: dict. Fixed fields of its reports (e.g. the SavedModel's signature).
        packages: tuple of str. Python packages it needs beyond TensorFlow and Keras, whose
            versions ``export.json`` records.
    """

    artifact: str
    write: Callable
    check: Callable
    takes_opset: bool = False
    details: dict = dataclasses.field(default_factory=dict)
    packages: tuple = ()


WRITERS = {
    "saved_model": Writer("saved_model", write_saved_model, check_saved_model,
                          details={"signature": SIGNATURE}),
    "onnx": Writer("model.onnx", write_onnx, check_onnx, takes_opset=True,
                   packages=("tf2onnx", "onnx")),
}
"""Every export format by name, in the order an export folder writes them."""


def write_and_check(fmt, model, path, names, *, opset=DEFAULT_OPSET, tolerance=TOLERANCE):
    """Writes format ``fmt`` of an already prepared model straight to ``path`` and checks it.

    The building block of ``to_saved_model``, ``to_onnx`` and ``export_folder``, which prepare
    the model (``serving.prepare``) and stage ``path`` (``write_staged``) around it.

    Returns:
        dict. ``format``, the format's ``details``, ``opset`` (ONNX), ``outputs``, ``alpha``
        and ``compare``'s figures.

    Raises:
        ExportError, ExportCheckError: when the graph cannot be written or differs.
    """
    writer = WRITERS[fmt]
    options = {"opset": opset} if writer.takes_opset else {}
    writer.write(model, path, names, **options)
    figures = writer.check(model, path, names, tolerance=tolerance)
    return {"format": fmt, **writer.details, **options, "outputs": list(names),
            "alpha": getattr(model, "alpha", None), **figures}


def _export(fmt, model, path, *, outputs, alpha, precision, tolerance, overwrite,
            opset=DEFAULT_OPSET):
    """``to_saved_model`` and ``to_onnx``: prepares the model, writes and checks ``fmt`` in a
    staging folder beside ``path`` and moves it into place only when its check passed."""
    if WRITERS[fmt].takes_opset:
        check_opset(opset)
    model, names, precision_info = serving.prepare(
        model, outputs=outputs, alpha=alpha, precision=precision)
    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(
            f"{path} exists; remove it, choose another path, or pass overwrite=True."
        )
    report = write_staged(path, lambda staged: write_and_check(
        fmt, model, staged, names, opset=opset, tolerance=tolerance))
    return {**report, "path": path, "precision": precision_info}


def to_saved_model(model, path, *, outputs=None, alpha=None, precision="float32",
                   tolerance=TOLERANCE, overwrite=False):
    """Exports ``model`` as a SavedModel that takes raw images and returns named outputs.

    The signature ``serving_default`` takes ``images`` (float32, ``[None, H, W, C]``, raw
    pixels 0..255) and returns a dict of float32 probabilities by output name. The SavedModel
    is written beside ``path``, loaded back with ``tf.saved_model.load`` and compared with the
    Keras model at batch sizes 1 and 7 before it is moved to ``path``.

    Example::

        report = ssal_keras.export.to_saved_model(model, "out/saved_model", outputs="all")
        report["max_abs_diff"]  # e.g. 6e-08

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier (one image input).
        path: str. The SavedModel folder to write.
        outputs: None, str or sequence of str. See ``select_outputs``: default ``"joint"``
            for SSAL models, ``"base"`` for plain classifiers; ``"all"``; or names.
        alpha: float or None. Combination exponent of the deployed joint output; ``None``
            keeps the model's.
        precision: str. ``"float32"`` (default): a model trained under a mixed-precision
            policy is exported computing in float32 (and compared with its float32 twin);
            ``"model"``: its own policy is kept.
        tolerance: float. Largest absolute difference the self-check accepts.
        overwrite: bool. Whether an existing ``path`` may be replaced.

    Returns:
        dict. The check's figures (``max_abs_diff``, ``max_abs_diff_per_output``,
        ``batch_sizes``, ``tolerance``) plus ``format``, ``path``, ``signature``, ``outputs``,
        ``alpha`` and ``precision`` (see ``serving.prepare``).

    Raises:
        ValueError: on an invalid model, ``outputs`` or ``alpha``.
        FileExistsError: when ``path`` exists and ``overwrite`` is false.
        ExportCheckError: when the SavedModel does not reproduce the Keras model.
    """
    return _export("saved_model", model, path, outputs=outputs, alpha=alpha,
                   precision=precision, tolerance=tolerance, overwrite=overwrite)


def to_onnx(model, path, *, outputs=None, alpha=None, opset=DEFAULT_OPSET, precision="float32",
            tolerance=TOLERANCE, overwrite=False):
    """Exports ``model`` as an ONNX file that takes raw images and returns named outputs.

    Converted with tf2onnx (see ``write_onnx``) from the same serving function as the
    SavedModel (input ``images``: float32 ``[batch, H, W, C]``, raw pixels 0..255; outputs by
    name, float32 probabilities). The file is written beside ``path``, run in ONNX Runtime and
    compared with the Keras model at batch sizes 1 and 7, then moved to ``path``.

    Example::

        report = ssal_keras.export.to_onnx(model, "out/model.onnx")
        report["opset"], report["max_abs_diff"]  # 17, e.g. 1e-07

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier (one image input).
        path: str. The ``.onnx`` file to write.
        outputs: None, str or sequence of str. As for ``to_saved_model``.
        alpha: float or None. Combination exponent of the deployed joint output.
        opset: int. ONNX opset (tf2onnx 1.17 supports up to 18).
        precision: str. As for ``to_saved_model``.
        tolerance: float. Largest absolute difference the self-check accepts.
        overwrite: bool. Whether an existing ``path`` may be replaced.

    Returns:
        dict. The check's figures plus ``format``, ``path``, ``opset``, ``outputs``, ``alpha``,
        ``precision``.

    Raises:
        ValueError: on an invalid model, ``outputs``, ``alpha`` or ``opset``.
        FileExistsError: when ``path`` exists and ``overwrite`` is false.
        ExportCheckError: when ONNX Runtime does not reproduce the Keras model.
    """
    return _export("onnx", model, path, outputs=outputs, alpha=alpha, opset=opset,
                   precision=precision, tolerance=tolerance, overwrite=overwrite)
