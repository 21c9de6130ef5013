"""Export for deployment: SavedModel and ONNX graphs that take raw images, proven equal to Keras.

The exported graph takes ``images`` (float32 raw pixels 0..255, NHWC, any batch size; the
model's normalisation is inside) and returns probabilities by output name: ``joint`` (the
fused SSAL prediction), and on request ``base`` and ``aux_<i>``. A plain classifier (a
baseline run, no branches) exports its probabilities as ``base``.

Every export checks itself: the written graph is run (TensorFlow for the SavedModel, ONNX
Runtime for ONNX) on seeded batches of 1 and 7 random images and compared with
``model(x, training=False)``; a largest absolute difference over ``TOLERANCE`` (1e-4) raises
``ExportCheckError`` and leaves nothing at the destination.

Python API::

    import ssal_keras.export as export
    export.to_saved_model(model, "out/saved_model", outputs="all")
    export.to_onnx(model, "out/model.onnx", alpha=0.4)           # opset 17
    export.export_folder(model, "out", class_names=names)        # both + export.json

Command line (``python -m ssal_keras.export --help``)::

    python -m ssal_keras.export --model_dir=runs/r1 --output_dir=runs/r1/export \\
        [--formats=saved_model,onnx] [--outputs=joint|base|all] [--alpha=0.4]

The deployment side, ``export/onnx_predict.py`` in the repository, needs only NumPy, ONNX
Runtime and Pillow.
"""

from ssal_keras.export.bundle import (
    ARTIFACTS,
    FORMATS,
    METADATA,
    check_formats,
    export_folder,
    load_run,
)
from ssal_keras.export.writers import (
    CHECK_BATCH_SIZES,
    DEFAULT_OPSET,
    SIGNATURE,
    TOLERANCE,
    ExportCheckError,
    ExportError,
    to_onnx,
    to_saved_model,
)
from ssal_keras.export.serving import (
    INPUT_NAME,
    OUTPUT_CHOICES,
    PRECISIONS,
    as_float32,
    available_outputs,
    prepare,
    select_outputs,
    serving_function,
    with_alpha,
)

__all__ = [
    "ARTIFACTS",
    "CHECK_BATCH_SIZES",
    "DEFAULT_OPSET",
    "ExportCheckError",
    "ExportError",
    "FORMATS",
    "INPUT_NAME",
    "METADATA",
    "OUTPUT_CHOICES",
    "PRECISIONS",
    "SIGNATURE",
    "TOLERANCE",
    "as_float32",
    "available_outputs",
    "check_formats",
    "export_folder",
    "load_run",
    "prepare",
    "select_outputs",
    "serving_function",
    "to_onnx",
    "to_saved_model",
    "with_alpha",
]
