"""int8 ONNX graphs behind an accuracy gate: ``model.int8.onnx`` beside ``model.onnx``.

Static quantisation with ONNX Runtime's own tool (``onnxruntime.quantization``; no code of our
own does what it does): the float graph is pre-processed (ONNX shape inference and graph
optimisation, ``quant_pre_process``), then quantised in the QDQ format with per-channel int8
weights and uint8 activations (U8S8, ONNX Runtime's fast path on x86 with VNNI/AMX), the
activation ranges calibrated (MinMax) on real images of the run. The softmaxes and everything
after them, the joint prediction's fusion (powers, group gathers, products, normalisation),
stay in float: they are a few elementwise ops whose inputs are probabilities, which 8 bits
would flatten.

The gate: the int8 graph and the float graph run on images the calibration did not see; the
deployed output's top-1 accuracy of each, their argmax agreement and the drop are recorded,
and a drop beyond ``max_drop`` raises ``Int8AccuracyError`` (the export then leaves nothing).
"""

import dataclasses
import os
import tempfile

import numpy as np

from ssal_keras.export import serving
from ssal_keras.export.writers import ExportError

QUANTIZE_CHOICES = ("none", "int8")
ARTIFACT = "model.int8.onnx"
DEFAULT_MAX_DROP = 0.5
"""Largest top-1 drop, in points (0.5: from 92.0% to 91.5%), int8 may cost."""
CALIBRATION_EXAMPLES = 256
CHECK_EXAMPLES = 2000
BATCH_SIZE = 32


class Int8AccuracyError(ExportError):
    """The int8 graph loses more accuracy than allowed; nothing was written."""


@dataclasses.dataclass(frozen=True)
class Int8Data:
    """Labelled raw-pixel images (NHWC) of a model: the first ``calibration_examples`` (at
    most half) calibrate the int8 graph, the others check it. ``source`` says where they
    came from (recorded, and named by errors)."""

    images: np.ndarray
    labels: np.ndarray
    source: str
    calibration_examples: int = CALIBRATION_EXAMPLES

    def split(self):
        """``(calibration images, check images, check labels)``."""
        count = min(self.calibration_examples, len(self.images) // 2)
        return self.images[:count], self.images[count:], self.labels[count:]


def check_max_drop(max_drop):
    """``max_drop`` as a float if it is a valid drop (points of top-1, 0..100)."""
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not (
            0 <= max_drop <= 100):
        raise ValueError(f"max_int8_drop={max_drop!r}: must be a number of top-1 points in "
                         "0..100 (the default 0.5 allows 92.0% -> 91.5%).")
    return float(max_drop)


def check_data(data, input_shape):
    """``data`` (an ``Int8Data``) with float32 images and int64 labels, if it fits a model
    taking ``input_shape`` (height, width, channels); a one-line ``ValueError`` naming its
    source otherwise."""
    what = data.source
    images, labels = np.asarray(data.images), np.asarray(data.labels).reshape(-1)
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{what}: images of shape {images.shape[1:]} but the model takes "
                         f"{tuple(input_shape)} (NHWC raw pixels); give images of the "
                         "model's size.")
    if len(images) != len(labels) or len(images) < 2:
        raise ValueError(f"{what}: {len(images)} images and {len(labels)} labels; give at "
                         "least 2 labelled images (some calibrate, the others check).")
    images = images.astype("float32")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{what}: images hold NaN or infinite pixels.")
    return dataclasses.replace(data, images=images, labels=labels.astype("int64"))


def float_tail(graph):
    """Names of the graph's Softmax nodes and of every node downstream of one."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tail, pending = set(), [n for n in graph.node if n.op_type == "Softmax"]
    while pending:
        node = pending.pop()
        if node.name not in tail:
            tail.add(node.name)
            pending.extend(c for output in node.output for c in consumers.get(output, ()))
    return sorted(tail)


def _calibration_reader(images):
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(images), BATCH_SIZE))

        def get_next(self):
            start = next(self.batches, None)
            return None if start is None else {
                serving.INPUT_NAME: images[start:start + BATCH_SIZE]}

    return Batches()


def quantize(float_path, int8_path, calibration_images):
    """Writes the int8 QDQ graph of the float ONNX graph ``float_path`` to ``int8_path``,
    calibrated on ``calibration_images`` (float32 NHWC raw pixels); the float tail kept."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as work:
        prepared = os.path.join(work, "prepared.onnx")
        # ONNX's own shape inference suffices for these graphs (every shape static but the
        # batch); the symbolic one would need sympy, which onnxruntime does not install.
        quant_pre_process(os.fspath(float_path), prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, os.fspath(int8_path), _calibration_reader(calibration_images),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=float_tail(onnx.load(prepared).graph))


def _predictions(path, images, output):
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    return np.concatenate([
        session.run([output], {serving.INPUT_NAME: images[i:i + BATCH_SIZE]})[0].argmax(-1)
        for i in range(0, len(images), BATCH_SIZE)])


def gate(float_path, int8_path, images, labels, *, output, max_drop):
    """The accuracy gate: top-1 of ``output`` in float and int8 on ``images``, their argmax
    agreement and the drop; raises ``Int8AccuracyError`` when the drop exceeds ``max_drop``."""
    float_hits = _predictions(float_path, images, output)
    int8_hits = _predictions(int8_path, images, output)
    report = {"output": output, "examples": int(len(labels)),
              "float_top1": float(np.mean(float_hits == labels)),
              "int8_top1": float(np.mean(int8_hits == labels)),
              "argmax_agreement": float(np.mean(float_hits == int8_hits)),
              "max_drop_points": max_drop}
    report["drop_points"] = 100 * (report["float_top1"] - report["int8_top1"])
    if report["drop_points"] > max_drop:
        raise Int8AccuracyError(
            f"int8 {output} top-1 {report['int8_top1']:.4f} is {report['drop_points']:.2f} "
            f"points below float's {report['float_top1']:.4f} on {len(labels)} images, over "
            f"--max_int8_drop={max_drop:g}; nothing was written (deploy model.onnx, or allow "
            "a larger drop).")
    return report


def write_and_gate(float_path, int8_path, data, *, output, max_drop=DEFAULT_MAX_DROP):
    """Quantises ``float_path`` into ``int8_path`` on ``data`` (an ``Int8Data``, checked by
    ``check_data``) and gates it on the rest of ``data`` at ``max_drop`` (checked by
    ``check_max_drop``: ``bundle.export_folder`` checks both before it exports anything);
    returns ``export.json``'s ``int8`` entry."""
    calibration, check_images, check_labels = data.split()
    quantize(float_path, int8_path, calibration)
    return {
        "path": os.path.basename(int8_path),
        "method": "onnxruntime.quantization.quantize_static: QDQ, per-channel int8 weights, "
                  "uint8 activations (MinMax), softmaxes and the joint fusion in float",
        "calibration": {"source": data.source, "examples": int(len(calibration))},
        "gate": gate(float_path, int8_path, check_images, check_labels, output=output,
                     max_drop=max_drop),
    }
