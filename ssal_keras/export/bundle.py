"""A deployable export folder: ``saved_model/``, ``model.onnx`` and ``export.json``.

``export.json`` is written last, atomically: a folder holding it is finished and checked; a
failed export leaves no ``export.json`` (and no artifact) at the destination.
"""

import datetime
import importlib.metadata
import os
import platform
import shutil

import keras
import numpy as np

from ssal_keras import data, runs
from ssal_keras.runs import reader
from ssal_keras.export import writers
from ssal_keras.export import quantization, serving
from ssal_keras.modeling import outputs as model_outputs

FORMATS = tuple(writers.WRITERS)
"""Export formats, in the order they are written."""

ARTIFACTS = {name: writer.artifact for name, writer in writers.WRITERS.items()}
"""The path of each format inside the export folder."""

METADATA = "export.json"
METADATA_VERSION = 1
# Every file or folder an export may hold (``--quantize=int8`` adds the int8 graph).
_EXPORT_FILES = (*ARTIFACTS.values(), quantization.ARTIFACT)


def load_run(model_dir):
    """Loads a training run's model and class names.

    Args:
        model_dir: str. A run folder holding ``model.keras`` (an ``SSALModel`` or a plain
            Keras classifier) and optionally ``class_names.json`` (a JSON list of strings).

    Returns:
        ``(model, class_names)``: the Keras model and a list of str, or ``None``.

    Raises:
        FileNotFoundError: when the folder or its ``model.keras`` is missing.
        ValueError: when the model or the class names cannot be read.
    """
    run = reader.load(model_dir)
    return run.model, run.class_names


def int8_data(model_dir, *, dataset=None, calibration_examples=quantization.CALIBRATION_EXAMPLES,
              check_examples=quantization.CHECK_EXAMPLES):
    """The ``quantization.Int8Data`` of the run in ``model_dir``: up to
    ``calibration_examples + check_examples`` of its held-out training images, else of its
    training images; or of the training images of ``dataset``, another data spec."""
    run = reader.load(model_dir)
    config = run.config
    examples = calibration_examples + check_examples
    if dataset is None and config is not None and config.held_out_examples:
        _, split = run.load_data(held_out=True)
        source = f"held-out training images of {model_dir}"
    else:
        spec = run.dataset_spec(dataset)
        loaded, _ = data.load(spec, data_dir=config.data_dir if config and not dataset else None,
                              train_examples=examples, eval_examples=1,
                              image_size=config.image_size if config else None, log=lambda _: None)
        split, source = loaded.train, f"training images of {spec}"
    images, labels = [], []
    batches = data.eval_pipeline(split, batch_size=256,
                                 image_size=config.image_size if config else None)
    for batch_images, batch_labels in batches.take(-(-examples // 256)):
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return quantization.Int8Data(np.concatenate(images)[:examples],
                                 np.concatenate(labels)[:examples], source, calibration_examples)


def check_class_names(class_names, num_classes):
    """Returns ``class_names`` as a list of str, one per class; ``None`` stays ``None``."""
    if class_names is None:
        return None
    if not isinstance(class_names, (list, tuple)) or not all(
        isinstance(n, str) for n in class_names
    ):
        raise ValueError(
            f"class names must be a list of strings, one per class; received "
            f"{type(class_names).__name__}."
        )
    if len(class_names) != num_classes:
        raise ValueError(
            f"there are {len(class_names)} class names but the model has {num_classes} "
            "classes; give one name per class, in label order."
        )
    return list(class_names)


def check_formats(formats):
    """Returns ``formats`` (a sequence or comma-separated str) as a tuple in ``FORMATS``."""
    if isinstance(formats, str):
        formats = formats.split(",")
    names = [str(f).strip() for f in formats if str(f).strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        problem = f"unknown format(s) {', '.join(unknown)}" if unknown else "no format given"
        raise ValueError(
            f"{problem}; valid formats: {', '.join(FORMATS)} (comma-separated)."
        )
    return tuple(f for f in FORMATS if f in names)


def takes_opset(formats):
    """Whether any of ``formats`` (names in ``FORMATS``) is written at an ONNX opset."""
    return any(writers.WRITERS[f].takes_opset for f in formats)


def check_output_dir(output_dir, overwrite):
    """Returns ``output_dir`` as an absolute path if an export may be written there.

    It may be missing, or a folder holding other files; a folder holding a previous export
    (``export.json`` or an artifact) only when ``overwrite`` is true.

    Raises:
        FileExistsError: when ``output_dir`` is a file, or holds an export and ``overwrite``
            is false.
    """
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"output_dir {output_dir} is a file; give a folder.")
    present = [a for a in (METADATA, *_EXPORT_FILES)
               if os.path.lexists(os.path.join(output_dir, a))]
    if present and not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} already holds {', '.join(present)}; choose another "
            "folder or allow overwriting (--overwrite)."
        )
    return output_dir


def _normalization_layers(model):
    """The model's ``Rescaling`` and ``Normalization`` layers, nested models included, in
    layer order (the backbones' ``preprocess`` layer: ``common.model_input``)."""
    found = []
    for layer in getattr(model, "layers", ()):
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            found.append(layer)
        elif getattr(layer, "layers", None):
            found.extend(_normalization_layers(layer))
    return found


def _floats(value):
    """A scalar or tensor as a list of Python floats (a scalar as one float)."""
    if keras.ops.is_tensor(value):
        value = keras.ops.convert_to_numpy(value)
    return [float(v) for v in np.asarray(value, dtype="float64").reshape(-1)]


def _describe_step(layer):
    """One normalisation layer as an ``export.json`` object."""
    if isinstance(layer, keras.layers.Rescaling):
        scale, offset = _floats(layer.scale), _floats(layer.offset)
        step = {"kind": "scale", "layer": layer.name,
                "scale": scale[0] if len(scale) == 1 else scale,
                "offset": offset[0] if len(offset) == 1 else offset}
        if len(scale) == 1 and scale[0] != 0 and all(o == 0 for o in offset):
            divide_by = round(1.0 / scale[0], 6)
            step["divide_by"] = int(divide_by) if divide_by.is_integer() else divide_by
        return step
    mean = [round(v, 6) for v in _floats(layer.mean)]
    std = [round(v ** 0.5, 6) for v in _floats(layer.variance)]
    return {"kind": "mean_std", "layer": layer.name, "mean": mean, "std": std,
            "invert": bool(getattr(layer, "invert", False))}


def _step_sentence(step):
    if step["kind"] == "scale":
        if "divide_by" in step:
            return f"divided by {step['divide_by']:g}"
        return f"multiplied by {step['scale']} then offset by {step['offset']}"
    what = "un-normalised (x * std + mean)" if step["invert"] else "(x - mean) / std"
    mean = ", ".join(f"{v:g}" for v in step["mean"])
    std = ", ".join(f"{v:g}" for v in step["std"])
    return f"{what} per channel with mean [{mean}] and std [{std}]"


def describe_normalization(model):
    """What the graph does to its input before the network: ``(normalization, range,
    sentence)`` for ``export.json``'s ``input.normalization``, ``input.range`` and
    ``input.preprocessing``.

    ``normalization`` is ``{"kind": "none"}`` when the model holds no ``Rescaling`` or
    ``Normalization`` layer (``range`` is then ``None``: the model takes whatever it was
    trained on), one layer's description (``"scale"`` with ``divide_by`` /
    ``scale``/``offset``, or ``"mean_std"`` with per-channel ``mean`` and ``std`` in the
    input's units), or ``{"kind": "chain", "steps": [...]}`` for several layers.
    """
    steps = [_describe_step(layer) for layer in _normalization_layers(model)]
    if not steps:
        return ({"kind": "none"}, None,
                "none inside the graph: the model takes its input as it was trained on "
                "(the range is not recorded in the model)")
    normalization = steps[0] if len(steps) == 1 else {"kind": "chain", "steps": steps}
    sentence = "inside the graph (raw pixels 0..255 in): " + ", then ".join(
        _step_sentence(step) for step in steps)
    return normalization, [0, 255], sentence


def describe(model, names, *, class_names=None):
    """The model-side fields of ``export.json``: input, outputs, classes, groupings, alpha."""
    height, width, channels = serving.check_exportable(model)
    ssal = model_outputs.is_ssal(model)
    num_classes = int(model.num_classes if ssal else model.outputs[0].shape[-1])
    groupings = [g.tolist() for g in model_outputs.model_groupings(model)]
    normalization, pixel_range, preprocessing = describe_normalization(model)
    widths = {model_outputs.JOINT: num_classes, model_outputs.BASE: num_classes}
    meaning = {
        model_outputs.JOINT: "class probabilities, the fused joint prediction of SSAL",
        model_outputs.BASE: "class probabilities of the base classifier",
    }
    for index, grouping in enumerate(groupings):
        widths[model_outputs.aux_name(index)] = max(grouping) + 1
        meaning[model_outputs.aux_name(index)] = (
            f"group probabilities of branch {index} (groupings[{index}])")
    return {
        "input": {
            "name": serving.INPUT_NAME,
            "dtype": "float32",
            "shape": [None, height, width, channels],
            "layout": "NHWC",
            "range": pixel_range,
            "preprocessing": preprocessing,
            "normalization": normalization,
        },
        "outputs": [
            {"name": n, "dtype": "float32", "shape": [None, widths[n]], "meaning": meaning[n]}
            for n in names
        ],
        "model": {"name": model.name, "kind": "ssal" if ssal else "plain"},
        "alpha": model.alpha if ssal else None,
        "num_classes": num_classes,
        "class_names": check_class_names(class_names, num_classes),
        "groupings": groupings,
        "num_groups": [max(g) + 1 for g in groupings],
    }


def _versions(formats):
    """The versions of Python and of the packages the export of ``formats`` used."""
    names = ["ssal_keras", "numpy", "tensorflow", "keras", "onnxruntime"]
    names += [p for f in formats for p in writers.WRITERS[f].packages]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # e.g. ssal_keras run from a checkout
            versions[name] = None
    return versions


def _write_formats(model, folder, formats, names, *, opset, tolerance):
    """Writes and checks each of ``formats`` into ``folder``; returns their export.json
    entries (outputs and alpha are stated once for the whole export, not per format)."""
    reports = {}
    for fmt in formats:
        report = writers.write_and_check(fmt, model, os.path.join(folder, ARTIFACTS[fmt]),
                                         names, opset=opset, tolerance=tolerance)
        report = {k: v for k, v in report.items() if k not in ("outputs", "alpha", "format")}
        reports[fmt] = {"path": ARTIFACTS[fmt], **report}
    return reports


def _int8_output(names, quantize, chosen):
    """The output the int8 gate scores (joint, else base), after checking ``quantize``."""
    if quantize not in quantization.QUANTIZE_CHOICES:
        raise ValueError(f"quantize={quantize!r}: valid: "
                         f"{', '.join(quantization.QUANTIZE_CHOICES)}.")
    if quantize == "none":
        return None
    if "onnx" not in chosen:
        raise ValueError("quantize=int8 quantises the ONNX graph: add onnx to the formats.")
    scored = [n for n in (model_outputs.JOINT, model_outputs.BASE) if n in names]
    if not scored:
        raise ValueError("quantize=int8 gates on class accuracy: export joint or base "
                         "among the outputs.")
    return scored[0]


def _metadata(model_fields, reports, *, opset, tolerance, source, alpha_trained, precision):
    """The contents of ``export.json``, from ``describe``'s fields and each format's report."""
    return {
        "format_version": METADATA_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "formats": reports,
        "opset": opset if takes_opset(reports) else None,
        "max_abs_diff": max(r["max_abs_diff"] for r in reports.values()),
        "tolerance": tolerance,
        "check": {"batch_sizes": list(writers.CHECK_BATCH_SIZES),
                  "images": "seeded uniform raw pixels in 0..255",
                  "reference": "keras model(x, training=False)"},
        **model_fields,
        "alpha_trained": alpha_trained,
        "precision": precision,
        "versions": _versions(reports),
    }


def _remove(path):
    """Removes the file, link or folder ``path``, if any."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def _place_export(staged, output_dir):
    """Moves a finished export folder to ``output_dir``: in one rename when ``output_dir`` is
    missing or empty; else artifact by artifact, keeping the folder's other files, with
    ``export.json`` removed first and put back last."""
    if os.path.isdir(output_dir) and not os.listdir(output_dir):
        os.rmdir(output_dir)
    if not os.path.exists(output_dir):
        os.rename(staged, output_dir)
        return
    finished = os.path.join(output_dir, METADATA)
    _remove(finished)  # the folder stops looking finished before it changes
    for artifact in _EXPORT_FILES:
        source, target = os.path.join(staged, artifact), os.path.join(output_dir, artifact)
        if os.path.lexists(source):
            writers.put_in_place(source, target)
        else:
            _remove(target)  # a format of the replaced export that this one lacks
    os.replace(os.path.join(staged, METADATA), finished)


def export_folder(model, output_dir, *, formats=FORMATS, outputs=None, alpha=None,
                  class_names=None, opset=writers.DEFAULT_OPSET, precision="float32",
                  tolerance=writers.TOLERANCE, overwrite=False, source=None,
                  quantize="none", int8_data=None, max_int8_drop=quantization.DEFAULT_MAX_DROP):
    """Writes a deployable export folder: every format checked, then ``export.json``.

    The folder is staged beside ``output_dir`` (``writers.write_staged``); each format is
    written and compared with the Keras model as by ``to_saved_model`` and ``to_onnx``; only
    when every check passed are the artifacts moved into ``output_dir`` and ``export.json``
    put there (last, atomically). On failure nothing is left at ``output_dir``.

    Example::

        meta = ssal_keras.export.export_folder(model, "out", outputs="all", alpha=0.4,
                                               class_names=names)
        meta["formats"]["onnx"]["max_abs_diff"]

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        output_dir: str. The folder to write (created; may exist if it holds no export).
        formats: sequence of str or comma-separated str. Subset of ``FORMATS``.
        outputs: None, str or sequence of str. See ``select_outputs``.
        alpha: float or None. Combination exponent of the deployed joint output.
        class_names: list of str or None. One name per class, recorded in ``export.json``.
        opset: int. ONNX opset.
        precision: str. ``"float32"`` (default) or ``"model"``: see ``to_saved_model``.
        tolerance: float. Largest absolute difference the self-checks accept.
        overwrite: bool. Whether a previous export in ``output_dir`` may be replaced.
        source: str or None. Where the model came from (recorded), e.g. its run folder.
        quantize: str. ``"int8"`` also writes ``model.int8.onnx`` behind the accuracy gate
            (``quantization.write_and_gate``), recorded as ``export.json``'s ``int8``.
        int8_data: ``quantization.Int8Data``: labelled images to calibrate and check with.
        max_int8_drop: float. Largest top-1 drop, in points, the gate accepts.

    Returns:
        dict. The contents of ``export.json``.

    Raises:
        ValueError, FileExistsError, ExportCheckError: as ``to_saved_model`` / ``to_onnx``.
        quantization.Int8AccuracyError: when int8 loses more than ``max_int8_drop``.
    """
    chosen = check_formats(formats)
    if takes_opset(chosen):
        writers.check_opset(opset)
    output_dir = check_output_dir(output_dir, overwrite)
    exported, names, precision_info = serving.prepare(
        model, outputs=outputs, alpha=alpha, precision=precision)
    model_fields = describe(exported, names, class_names=class_names)
    int8_output = _int8_output(names, quantize, chosen)
    if int8_output:
        max_int8_drop = quantization.check_max_drop(max_int8_drop)
        if int8_data is None:
            raise ValueError("quantize=int8 needs int8_data: labelled images to calibrate on "
                             "and to check the int8 graph with.")
        int8_data = quantization.check_data(int8_data, model_fields["input"]["shape"][1:])

    def write(folder):
        os.mkdir(folder)  # with the umask's permissions (its staging folder is private)
        reports = _write_formats(exported, folder, chosen, names, opset=opset,
                                 tolerance=tolerance)
        meta = _metadata(model_fields, reports, opset=opset, tolerance=tolerance, source=source,
                         alpha_trained=getattr(model, "alpha", None), precision=precision_info)
        if int8_output:
            meta["int8"] = quantization.write_and_gate(
                os.path.join(folder, ARTIFACTS["onnx"]),
                os.path.join(folder, quantization.ARTIFACT), int8_data,
                output=int8_output, max_drop=max_int8_drop)
        runs.write_json(os.path.join(folder, METADATA), meta)
        return meta

    return writers.write_staged(output_dir, write, place=_place_export)
