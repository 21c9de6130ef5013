#!/usr/bin/env python3
"""Classifies images with an exported SSAL model in ONNX Runtime: no TensorFlow, no Keras.

Needs only NumPy and onnxruntime (and Pillow for PNG/JPEG files):

    python export/onnx_predict.py --model OUT/model.onnx --images a.png b.jpg
    python export/onnx_predict.py --model OUT/model.onnx --images batch.npy --top_k 3

Prints one JSON line per image:

    {"image": "a.png", "top": [{"class": 3, "name": "cat", "probability": 0.91,
                                "groups": [1, 0, 7]}, ...]}

``groups`` are the class's group ids in each SSAL branch (``groupings[b][class]``) and
``name`` its class name, both read from ``export.json`` when it sits beside the model (else
``null`` and ``[]``). Images are raw pixels: files are decoded as they are, converted to the
model's channels (grey ``L`` or ``RGB``), never resized unless ``--resize`` is given; ``.npy``
files hold a batch ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel) in 0..255. With
``--output_name aux_<i>`` the top entries are groups (``{"group", "probability",
"classes"}``). Every error prints one line, ``onnx_predict: error: ...``, and exits with 2.

Python use: ``Predictor(model_path).predict(images)`` returns the probabilities of a batch.
"""

import argparse
import json
import os
import sys

import numpy as np

PROG = "onnx_predict"
EXIT_USAGE = 2
METADATA = "export.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_OUTPUTS = ("joint", "base")  # the first one the model has is the default


class UsageError(Exception):
    """A problem with the command line, the model or the images: reported as one line."""


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Predictor:
    """An exported model in ONNX Runtime, with its ``export.json`` when one sits beside it.

    Args:
        model_path: str. The ``.onnx`` file written by ``python -m ssal_keras.export``.
        threads: int or None. ONNX Runtime intra-op threads (``None``: its default).
        metadata_path: str or None. ``export.json`` to read; ``None``: the one beside the
            model, if any.

    Raises:
        UsageError: for a missing or unreadable model, or metadata that does not match it.
    """

    def __init__(self, model_path, *, threads=None, metadata_path=None):
        import onnxruntime

        if not os.path.isfile(model_path):
            raise UsageError(
                f"model file {model_path} not found; pass the model.onnx written by "
                "python -m ssal_keras.export (--model OUT/model.onnx)."
            )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(
                model_path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ORT raises its own types (InvalidProtobuf, Fail, ...)
            raise UsageError(
                f"cannot load {model_path} as an ONNX model ({_first_line(error)}); the file "
                "is damaged or not ONNX: export it again with python -m ssal_keras.export."
            ) from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].type != "tensor(float)":
            raise UsageError(
                f"{model_path} is not an image classifier export: it should take one float "
                f"NHWC input, it takes {[(i.name, i.shape, i.type) for i in inputs]}."
            )
        self.input_name = inputs[0].name
        _, height, width, channels = inputs[0].shape
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.metadata = self._read_metadata(model_path, metadata_path)
        if not all(isinstance(d, int) for d in (height, width, channels)):
            shape = (self.metadata or {}).get("input", {}).get("shape") or [None] * 4
            height, width, channels = shape[1:]
        if not all(isinstance(d, int) for d in (height, width, channels)):
            raise UsageError(f"{model_path} has no fixed input size {inputs[0].shape}.")
        self.height, self.width, self.channels = height, width, channels

    def _read_metadata(self, model_path, metadata_path):
        path = metadata_path or os.path.join(os.path.dirname(os.path.abspath(model_path)),
                                             METADATA)
        if not os.path.isfile(path):
            if metadata_path:
                raise UsageError(f"--metadata {metadata_path} not found.")
            return None
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError) as error:
            raise UsageError(
                f"cannot read {path} ({_first_line(error)}); fix it or remove it (the model "
                "runs without it, printing no names or groups)."
            ) from None
        if not isinstance(meta, dict):
            raise UsageError(f"{path} is not an export.json (not a JSON object).")
        widths = {o["name"]: o["shape"][-1] for o in meta.get("outputs", [])
                  if isinstance(o, dict) and "name" in o and "shape" in o}
        for output in self.session.get_outputs():
            width = output.shape[-1] if output.shape else None
            if output.name in widths and isinstance(width, int) and widths[output.name] != width:
                raise UsageError(
                    f"{path} does not describe {model_path}: output {output.name!r} has "
                    f"{width} values, export.json says {widths[output.name]}; keep each "
                    "export.json beside its own model."
                )
        return meta

    @property
    def class_names(self):
        return (self.metadata or {}).get("class_names")

    @property
    def groupings(self):
        return (self.metadata or {}).get("groupings") or []

    def default_output(self):
        """``joint`` if the model has it, else ``base``, else its only output."""
        for name in DEFAULT_OUTPUTS:
            if name in self.outputs:
                return name
        return self.outputs[0]

    def check_output(self, name):
        if name not in self.outputs:
            raise UsageError(
                f"--output_name {name} is not an output of the model; its outputs: "
                f"{', '.join(self.outputs)}."
            )
        return name

    def predict(self, images, output_name=None):
        """Probabilities of one output for a batch of raw images ``(N, H, W, C)``, 0..255."""
        name = self.check_output(output_name or self.default_output())
        images = np.ascontiguousarray(images, dtype=np.float32)
        (probs,) = self.session.run([name], {self.input_name: images})
        return probs

    def top(self, probs, k, output_name):
        """The ``k`` most probable entries of one image's output, as JSON-ready dicts."""
        order = np.argsort(-probs, kind="stable")[: min(k, probs.shape[-1])]
        if output_name.startswith("aux_") and output_name[4:].isdigit():
            branch = int(output_name[4:])
            grouping = self.groupings[branch] if branch < len(self.groupings) else None
            return [
                {
                    "group": int(g),
                    "probability": float(probs[g]),
                    "classes": None if grouping is None else
                    [c for c, gc in enumerate(grouping) if gc == g],
                }
                for g in order
            ]
        names = self.class_names
        return [
            {
                "class": int(c),
                "name": names[c] if names and c < len(names) else None,
                "probability": float(probs[c]),
                "groups": [int(g[c]) for g in self.groupings if c < len(g)],
            }
            for c in order
        ]


# --- inputs --------------------------------------------------------------------------------
def _open_npy(path, predictor):
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path} as a .npy array ({_first_line(error)}).") from None
    h, w, c = predictor.height, predictor.width, predictor.channels
    if array.ndim == 3 and c == 1:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[1:] != (h, w, c):
        expected = f"(N, {h}, {w}, {c})" + (f" or (N, {h}, {w})" if c == 1 else "")
        what = (f"{array.shape[-1]} channel(s)" if array.ndim == 4 and array.shape[1:3] == (h, w)
                else f"shape {array.shape}")
        raise UsageError(
            f"{path} has {what}; the model takes batches of {h}x{w} images with {c} "
            f"channel(s): save an array of shape {expected}."
        )
    if array.dtype.kind not in "uif":
        raise UsageError(f"{path} holds {array.dtype} values; it needs numbers (raw pixels).")
    if len(array) == 0:
        raise UsageError(f"{path} holds no images (shape {array.shape}).")
    low, high = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise UsageError(
            f"{path} has values in [{low:g}, {high:g}]; the model takes raw pixels in 0..255 "
            "(its normalisation is inside the graph): pass the unnormalised images."
        )
    if high <= 1.0 and array.dtype.kind == "f":
        print(f"{PROG}: warning: {path} has values in [{low:g}, {high:g}]; the model expects "
              "raw pixels in 0..255, not 0..1", file=sys.stderr)
    return array


def _image_mode(channels):
    if channels not in (1, 3):
        raise UsageError(
            f"the model takes {channels}-channel images; image files can only feed 1- or "
            "3-channel models: pass a .npy batch instead."
        )
    return "L" if channels == 1 else "RGB"


def _open_image(path):
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(
            "reading image files needs Pillow (pip install pillow); or pass a .npy batch."
        ) from None
    try:
        image = Image.open(path)
        image.size  # noqa: B018  (the header is read here; decoding waits)
        return image
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read image {path} ({_first_line(error)}).") from None


def plan_inputs(paths, predictor, *, resize=False):
    """Checks every input before any inference; returns a list of ``(id, loader)``."""
    items = []
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"image file {path} not found.")
        extension = os.path.splitext(path)[1].lower()
        if extension == ".npy":
            array = _open_npy(path, predictor)
            items += [(f"{path}[{i}]", (lambda a=array, i=i: np.asarray(a[i], np.float32)))
                      for i in range(len(array))]
        elif extension in IMAGE_EXTENSIONS:
            mode = _image_mode(predictor.channels)
            image = _open_image(path)
            size = (predictor.width, predictor.height)
            if image.size != size and not resize:
                raise UsageError(
                    f"{path} is {image.size[1]}x{image.size[0]} (HxW); the model takes "
                    f"{predictor.height}x{predictor.width} images: resize them, or pass "
                    "--resize to let this script resize (bilinear)."
                )
            image.close()
            items.append((path, lambda p=path, m=mode, s=size: _decode(p, m, s)))
        else:
            raise UsageError(
                f"{path}: unknown image type {extension or '(no extension)'}; give .npy or "
                f"an image file ({', '.join(IMAGE_EXTENSIONS)})."
            )
    if not items:
        raise UsageError("no images given; pass --images FILE [FILE ...].")
    return items


def _decode(path, mode, size):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if image.size != size:
                image = image.resize(size, Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot decode image {path} ({_first_line(error)}).") from None
    return array[..., np.newaxis] if array.ndim == 2 else array


# --- command line --------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(f"{message} (see --help)")


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, received {text!r}")
    return value


def build_parser():
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.onnx written by the exporter.")
    parser.add_argument("--images", required=True, nargs="+",
                        help="Image files (PNG, JPEG, ...) and/or .npy batches (N, H, W, C).")
    parser.add_argument("--top_k", type=_positive, default=5, help="Entries per image (5).")
    parser.add_argument("--batch_size", type=_positive, default=32,
                        help="Images per ONNX Runtime call (32).")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="ONNX Runtime intra-op threads (default: its own choice).")
    parser.add_argument("--output_name", default=None,
                        help="Output to read: joint (default), base or aux_<i>.")
    parser.add_argument("--metadata", default=None,
                        help="export.json to read (default: the one beside --model).")
    parser.add_argument("--resize", action="store_true",
                        help="Resize image files to the model's size instead of refusing them.")
    return parser


def run(argv=None, out=sys.stdout):
    args = build_parser().parse_args(argv)
    predictor = Predictor(args.model, threads=args.threads, metadata_path=args.metadata)
    output_name = predictor.check_output(args.output_name or predictor.default_output())
    items = plan_inputs(args.images, predictor, resize=args.resize)
    for start in range(0, len(items), args.batch_size):
        batch = items[start:start + args.batch_size]
        images = np.stack([load() for _, load in batch])
        probs = predictor.predict(images, output_name)
        for (image_id, _), p in zip(batch, probs):
            line = {"image": image_id, "top": predictor.top(p, args.top_k, output_name)}
            out.write(json.dumps(line) + "\n")
        out.flush()


def main(argv=None):
    try:
        run(argv)
    except UsageError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
