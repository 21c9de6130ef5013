r"""Exports a trained run for deployment: a SavedModel and an ONNX graph, each checked.

    python -m ssal_keras.export --model_dir=DIR --output_dir=OUT \
        [--formats=saved_model,onnx] [--outputs=joint|base|all] [--alpha=A] [--opset=17] \
        [--precision=float32|model] [--quantize=none|int8] [--max_int8_drop=0.5] [--overwrite]

Reads ``DIR/model.keras`` (an SSAL model or a plain classifier) and ``DIR/class_names.json``
if present; writes ``OUT/saved_model/`` (signature ``serving_default``), ``OUT/model.onnx``
and, last, ``OUT/export.json``. Input ``images``: float32 raw pixels 0..255, NHWC, any batch
size. Outputs by name: ``joint`` (the default for SSAL models), ``base`` (the default, and the
only output, of a plain classifier), ``aux_<i>``; ``--outputs=all`` exports every one, and a
comma-separated list picks some. ``--alpha`` overrides the combination exponent of the
deployed joint output. A model trained under a mixed-precision policy is exported computing
in float32 unless ``--precision=model``. Every format is run against the Keras model on
random images at batch sizes 1 and 7 and refused beyond a largest absolute difference of
1e-4; a refused export leaves nothing in OUT. ``--quantize=int8`` also writes
``OUT/model.int8.onnx`` (``ssal_keras.export.quantization``), calibrated on the run's held-out
training images (else its training images, or ``--calibration_data``) and refused when its
top-1 drops more than ``--max_int8_drop`` points below the float graph's on images the
calibration did not see. About 10 s for a small model on 2 CPU cores
(most of it TensorFlow start-up and tf2onnx), 1-2 minutes for a paper-size one. Every error
prints one line, ``export: error: ...``, exit code 2.
"""

import os

from absl import flags, logging

from ssal_keras import cli
from ssal_keras.export import bundle, quantization, serving, writers

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Run folder holding model.keras (and optionally class_names.json)."
)
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None,
    f"Folder to write: {', '.join(bundle.ARTIFACTS.values())}, {bundle.METADATA}."
)
_FORMATS = flags.DEFINE_list(
    "formats", list(bundle.FORMATS), f"Comma-separated formats: {', '.join(bundle.FORMATS)}."
)
_OUTPUTS = flags.DEFINE_string(
    "outputs",
    None,
    "Outputs of the deployed graph: joint, base, all, or comma-separated names (joint, "
    "base, aux_<i>). Default: joint for SSAL models, base for plain classifiers.",
)
_ALPHA = flags.DEFINE_float(
    "alpha", None, "Combination exponent (>= 0) of the deployed joint output; default: the "
    "model's own."
)
_PRECISION = flags.DEFINE_enum(
    "precision", "float32", list(serving.PRECISIONS), "float32: a model trained under a "
    "mixed-precision policy is exported computing in float32; model: keep its policy."
)
_OPSET = flags.DEFINE_integer(
    "opset", writers.DEFAULT_OPSET,
    f"ONNX opset ({writers.MIN_OPSET}..{writers.MAX_OPSET}; tf2onnx 1.17 stops at "
    f"{writers.MAX_OPSET})."
)
_QUANTIZE = flags.DEFINE_enum(
    "quantize", "none", list(quantization.QUANTIZE_CHOICES),
    f"int8: also write {quantization.ARTIFACT} (static QDQ quantisation, ONNX Runtime), "
    "behind the accuracy gate of --max_int8_drop."
)
_MAX_INT8_DROP = flags.DEFINE_float(
    "max_int8_drop", quantization.DEFAULT_MAX_DROP,
    "Largest top-1 drop of int8 against float, in points, on held-out images; beyond it the "
    "export fails and writes nothing."
)
_CALIBRATION_DATA = flags.DEFINE_string(
    "calibration_data", None, "Data spec (as train's --dataset) whose training images "
    "calibrate and check int8; default: the run's held-out, else training, images."
)
_CALIBRATION_EXAMPLES = flags.DEFINE_integer(
    "calibration_examples", quantization.CALIBRATION_EXAMPLES,
    "Images that calibrate int8 (at most half of those read)."
)
_INT8_CHECK_EXAMPLES = flags.DEFINE_integer(
    "int8_check_examples", quantization.CHECK_EXAMPLES,
    "Other images on which the int8 gate compares top-1."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a previous export in --output_dir."
)

PROG = "export"


def _check_flags():
    """Checks the flags before the model is loaded (they are cheap, loading it is not);
    returns the chosen formats."""
    if not _MODEL_DIR.value:
        raise cli.UsageError("--model_dir is required (the run folder holding model.keras).")
    if not _OUTPUT_DIR.value:
        raise cli.UsageError("--output_dir is required (the folder to write the export to).")
    chosen = bundle.check_formats(_FORMATS.value)
    alpha = _ALPHA.value
    if alpha is not None and not alpha >= 0:
        raise cli.UsageError(f"--alpha must be >= 0 (the paper uses 0.3-0.5); received {alpha}.")
    try:
        writers.check_opset(_OPSET.value)
    except ValueError:  # reworded for the command line: a flag is always an int
        raise cli.UsageError(
            f"--opset must be in {writers.MIN_OPSET}..{writers.MAX_OPSET} (tf2onnx 1.17); "
            f"received {_OPSET.value}."
        ) from None
    if _OUTPUTS.value is not None and not _OUTPUTS.value.strip():
        raise cli.UsageError(
            f"--outputs is empty; give {'|'.join(serving.OUTPUT_CHOICES)} or output names."
        )
    bundle.check_output_dir(_OUTPUT_DIR.value, _OVERWRITE.value)
    _check_int8_flags(chosen)
    return chosen


def _check_int8_flags(chosen):
    try:
        quantization.check_max_drop(_MAX_INT8_DROP.value)
    except ValueError as error:
        raise cli.UsageError(f"--{error}") from None
    for holder in (_CALIBRATION_EXAMPLES, _INT8_CHECK_EXAMPLES):
        if holder.value < 1:
            raise cli.UsageError(f"--{holder.name} must be >= 1; received {holder.value}.")
    if _QUANTIZE.value == "int8" and "onnx" not in chosen:
        raise cli.UsageError("--quantize=int8 quantises the ONNX graph: add onnx to --formats.")


def _print_summary(meta):
    """One line per written format, one on precision if converted, one for export.json."""
    names = ", ".join(o["name"] for o in meta["outputs"])
    alpha_note = f", alpha {meta['alpha']:g}" if meta["alpha"] is not None else ""
    for fmt, report in meta["formats"].items():
        print(
            f"{fmt}: {os.path.join(_OUTPUT_DIR.value, report['path'])} (outputs {names}"
            f"{alpha_note}); max |export - keras| = {report['max_abs_diff']:.2g} at batch "
            f"sizes {report['batch_sizes']} (tolerance {report['tolerance']:g})"
        )
    precision = meta["precision"]
    if precision["max_abs_diff_to_trained"] is not None:
        print(
            f"computes in float32; the model was trained under {', '.join(precision['trained'])}"
            f" (max |float32 - that policy| = {precision['max_abs_diff_to_trained']:.2g})"
        )
    if "int8" in meta:
        gate = meta["int8"]["gate"]
        print(f"int8: {os.path.join(_OUTPUT_DIR.value, meta['int8']['path'])}: {gate['output']} "
              f"top-1 {gate['int8_top1']:.4f} against float {gate['float_top1']:.4f} "
              f"(-{gate['drop_points']:.2f} points, allowed {gate['max_drop_points']:g}), argmax "
              f"agreement {gate['argmax_agreement']:.4f}, on {gate['examples']} images")
    print(f"wrote {os.path.join(_OUTPUT_DIR.value, bundle.METADATA)}")


def _run():
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's and tf2onnx's progress lines
    chosen = _check_flags()
    model, class_names = bundle.load_run(_MODEL_DIR.value)
    int8_data = None
    if _QUANTIZE.value == "int8":
        int8_data = bundle.int8_data(
            _MODEL_DIR.value, dataset=_CALIBRATION_DATA.value,
            calibration_examples=_CALIBRATION_EXAMPLES.value,
            check_examples=_INT8_CHECK_EXAMPLES.value)
    meta = bundle.export_folder(
        model,
        _OUTPUT_DIR.value,
        formats=chosen,
        outputs=_OUTPUTS.value,
        alpha=_ALPHA.value,
        class_names=class_names,
        opset=_OPSET.value,
        precision=_PRECISION.value,
        overwrite=_OVERWRITE.value,
        source=os.path.abspath(_MODEL_DIR.value),
        quantize=_QUANTIZE.value,
        int8_data=int8_data,
        max_int8_drop=_MAX_INT8_DROP.value,
    )
    _print_summary(meta)


def main():
    """The ``ssal-export`` console command; the same as ``python -m ssal_keras.export``."""
    cli.run(
        _run,
        prog=PROG,
        module=__name__,
        # OSError covers a missing model, an existing export, an unwritable folder.
        user_errors=(cli.UsageError, ValueError, OSError, writers.ExportError),
    )


if __name__ == "__main__":
    main()
