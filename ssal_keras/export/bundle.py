"""A deployable export folder: ``saved_model/``, ``model.onnx`` and ``export.json``.

``export.json`` is written last, atomically: a folder holding it is finished and checked; a
failed export leaves no ``export.json`` (and no artifact) at the destination.
"""

import datetime
import importlib.metadata
import os
import platform
import shutil
import tempfile

from ssal_keras import runs
from ssal_keras.export import formats as writers
from ssal_keras.export import serving

FORMATS = ("saved_model", "onnx")
"""Export formats, in the order they are written."""

ARTIFACTS = {"saved_model": "saved_model", "onnx": "model.onnx"}
"""The path of each format inside the export folder."""

METADATA = "export.json"
METADATA_VERSION = 1


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
    run = runs.load(model_dir)
    return run.model, run.class_names


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


def _versions(with_onnx):
    names = ["numpy", "tensorflow", "keras", "onnxruntime"]
    if with_onnx:
        names += ["tf2onnx", "onnx"]
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    from ssal_keras import __version__

    versions["ssal_keras"] = __version__
    return versions


def describe(model, names, *, class_names=None):
    """The model-side fields of ``export.json``: input, outputs, classes, groupings, alpha."""
    height, width, channels = serving.check_exportable(model)
    ssal = serving.is_ssal(model)
    num_classes = int(model.num_classes if ssal else model.outputs[0].shape[-1])
    groupings = [b.grouping.tolist() for b in model.branches] if ssal else []
    widths = {"joint": num_classes, "base": num_classes}
    meaning = {
        "joint": "class probabilities, the fused joint prediction of SSAL",
        "base": "class probabilities of the base classifier",
    }
    for index, grouping in enumerate(groupings):
        widths[f"aux_{index}"] = max(grouping) + 1
        meaning[f"aux_{index}"] = f"group probabilities of branch {index} (groupings[{index}])"
    return {
        "input": {
            "name": serving.INPUT_NAME,
            "dtype": "float32",
            "shape": [None, height, width, channels],
            "layout": "NHWC",
            "range": [0, 255],
            "preprocessing": "inside the graph (raw pixels in)",
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


def _check_output_dir(output_dir, overwrite):
    output_dir = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"output_dir {output_dir} is a file; give a folder.")
    present = [a for a in (METADATA, *ARTIFACTS.values())
               if os.path.lexists(os.path.join(output_dir, a))]
    if present and not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} already holds {', '.join(present)}; choose another "
            "folder or allow overwriting (--overwrite)."
        )
    return output_dir


def export_folder(model, output_dir, *, formats=FORMATS, outputs=None, alpha=None,
                  class_names=None, opset=writers.DEFAULT_OPSET, precision="float32",
                  tolerance=writers.TOLERANCE, overwrite=False, source=None):
    """Writes a deployable export folder: every format checked, then ``export.json``.

    Everything is staged in a hidden folder beside ``output_dir``; each format is run and
    compared with the Keras model (``to_saved_model``, ``to_onnx``); only when every check
    passed are the artifacts moved into ``output_dir`` and ``export.json`` written (last,
    atomically). On failure nothing is left at ``output_dir``.

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

    Returns:
        dict. The contents of ``export.json``.

    Raises:
        ValueError, FileExistsError, ExportCheckError: as ``to_saved_model`` / ``to_onnx``.
    """
    chosen = check_formats(formats)
    if "onnx" in chosen and (
        isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= 18
    ):
        raise ValueError(f"opset must be an int in 13..18 (tf2onnx 1.17); received {opset!r}.")
    output_dir = _check_output_dir(output_dir, overwrite)
    original_alpha = getattr(model, "alpha", None)
    model, names, precision_info = serving.prepare(
        model, outputs=outputs, alpha=alpha, precision=precision)
    meta = describe(model, names, class_names=class_names)

    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(output_dir)}.partial-")
    try:
        os.chmod(staging, 0o777 & ~runs.umask())  # mkdtemp makes it private; OUT is not
        reports = {}
        for fmt in chosen:
            path = os.path.join(staging, ARTIFACTS[fmt])
            if fmt == "saved_model":
                report = writers._saved_model_into(model, path, names, tolerance)
            else:
                report = writers._onnx_into(model, path, names, opset, tolerance)
            report = {k: v for k, v in report.items() if k not in ("outputs", "alpha", "format")}
            reports[fmt] = {"path": ARTIFACTS[fmt], **report}
        meta = {
            "format_version": METADATA_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": source,
            "formats": reports,
            "opset": opset if "onnx" in chosen else None,
            "max_abs_diff": max(r["max_abs_diff"] for r in reports.values()),
            "tolerance": tolerance,
            "check": {"batch_sizes": list(writers.CHECK_BATCH_SIZES),
                      "images": "seeded uniform raw pixels in 0..255",
                      "reference": "keras model(x, training=False)"},
            **meta,
            "alpha_trained": original_alpha,
            "precision": precision_info,
            "versions": _versions("onnx" in chosen),
        }
        # Move into place: artifacts first, export.json last.
        if os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)
        if not os.path.exists(output_dir):
            runs.write_json(os.path.join(staging, METADATA), meta)
            os.rename(staging, output_dir)
        else:
            finished = os.path.join(output_dir, METADATA)
            if os.path.exists(finished):
                os.remove(finished)  # the folder stops looking finished before it changes
            for fmt in FORMATS:
                target = os.path.join(output_dir, ARTIFACTS[fmt])
                if fmt in chosen:
                    writers._put_in_place(os.path.join(staging, ARTIFACTS[fmt]), target)
                elif os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)  # a stale format of the export being replaced
                elif os.path.lexists(target):
                    os.remove(target)
            runs.write_json(finished, meta)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta
