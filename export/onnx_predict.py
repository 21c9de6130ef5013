#!/usr/bin/env python3
"""Classifies images with an exported SSAL model in ONNX Runtime: no TensorFlow, no Keras.

Needs only NumPy and onnxruntime (and Pillow for PNG/JPEG files):

    python export/onnx_predict.py --model OUT/model.onnx --images a.png b.jpg
    python export/onnx_predict.py --model OUT/model.onnx --images batch.npy --top_k 3

Prints one JSON line per image (strict JSON: never ``NaN``):

    {"image": "a.png", "top": [{"class": 3, "name": "cat", "probability": 0.91,
                                "groups": [1, 0, 7]}, ...]}

``groups`` are the class's group ids in each SSAL branch (``groupings[b][class]``) and
``name`` its class name, both read from ``export.json`` when it sits beside the model (else
``null`` and ``[]``). With ``--output_name aux_<i>`` the top entries are groups
(``{"group", "probability", "classes"}``).

Models: one float32 input ``[batch, H, W, C]`` of raw pixels (0..255) and float32 outputs
``[batch, K]``. A model with a fixed batch size (e.g. ``[1, H, W, C]``) is run in chunks of
that size (the last chunk padded, the padding's rows dropped).

Images are 8-bit raw pixels. An image file of another size than the model's ``H x W`` is
refused unless ``--resize`` is given; then it gets the trainer's evaluation transform
(``ssal_keras/data/pipelines.py`` ``resize_and_center_crop``): its shorter side is resized to
``round(N / EVAL_CROP_FRACTION)`` (0.875: 256 for N = 224; N = ``max(H, W)``, the model's side
for the square inputs the trainer makes), the other side in proportion (rounded to the nearest
pixel, at least that short side), then the central ``H x W`` is cropped (offsets rounded down),
never a squash to ``H x W``. Pillow's bilinear filter resizes (each channel in float, no
rounding to 8 bits); it antialiases when it downscales, while the trainer's ``tf.image.resize``
(bilinear, no antialias) does not, so the pixels are close to the trainer's but not identical:
equal when upscaling; downscaling 300x400 or 500x375 images for N = 224, at most 2.5 of 255 on
a smooth image and up to ~115 on random noise (against a NumPy copy of ``tf.image.resize``). An
image file already ``H x W`` is used as it is, like ``.npy`` batches (never resized).
Channel policy, the same as the trainer's data loader:

- grey (Pillow modes ``1``, ``L``, ``LA``) is expanded to RGB for 3-channel models; colour
  (``RGB``, ``RGBA``, palette ``P``/``PA``, ``CMYK``, ``YCbCr``) is converted to grey
  (Pillow's ``L``, ITU-R 601-2 luma) for 1-channel models; an alpha channel is dropped (not
  composited); a palette is expanded to its colours;
- 16-bit images (PNG of bit depth 16, TIFF of 16-bit samples, modes ``I;16``, ``I``) and float
  images (mode ``F``) are refused ("16-bit images are not supported: convert to 8-bit"), and
  so are other modes (``LAB``, ``HSV``, ...);
- files over ``MAX_PIXELS`` (64 megapixels) or over Pillow's own decompression-bomb limit
  (``PIL.Image.MAX_IMAGE_PIXELS``) are refused before they are decoded.

``.npy`` files hold a batch ``(N, H, W, C)`` (or ``(N, H, W)`` for one channel) of numbers in
0..255; they are read without pickle (``.npz`` archives and object or string arrays are
refused). Images are named ``batch.npy[i]``.

Errors: every one prints one line, ``onnx_predict: error: ...`` and exits with 2; no traceback.
The command line, the model, ``export.json`` and every input's header are checked before any
inference; a file that fails to decode, or an output that is NaN or inf, stops the run at its
batch (the lines of earlier batches stay printed). Among them: a model whose inputs or
outputs the client cannot serve (count, rank, dtype), a damaged model, a malformed
``export.json`` (naming the field), a file that is not a ``.npy`` array or an image, an image of
the wrong size, channels or depth, pixels that are NaN, inf or outside 0..255 (naming the first
bad image), an image file too large to decode, and a NaN or inf output (naming the image).

Python use: ``Predictor(model_path).predict(images)`` returns the probabilities of a batch.
"""

import argparse
import json
import os
import re
import sys
import warnings

import numpy as np

PROG = "onnx_predict"
EXIT_USAGE = 2
METADATA = "export.json"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ACCEPTED = f".npy arrays (N, H, W, C) of raw pixels or image files ({', '.join(IMAGE_EXTENSIONS)})"
DEFAULT_OUTPUTS = ("joint", "base")  # the first one the model has is the default
TENSOR_TYPE = "tensor(float)"  # the only element type served, in and out (float32)
MAX_PIXELS = 64_000_000  # largest image file decoded (width x height): 64 megapixels
NPY_CHUNK = 256  # images per pass of a .npy range check: a memory-mapped batch stays on disk
# Pillow's raw modes of 16-bit samples that it opens as 8-bit modes (PNG "RGB;16B", TIFF
# "RGB;16L", ...); BMP's 5-6-5 "BGR;16" has no byte-order suffix and stays accepted.
_RAWMODE_16_BIT = re.compile(r";16[BLN]$")
# The trainer's channel policy (ssal_keras/data/image_folder.py): the modes it takes.
GREY_MODES = ("1", "L", "LA", "La")
# The trainer's evaluation crop (ssal_keras/data/pipelines.py EVAL_CROP_FRACTION): --resize
# resizes the shorter side to round(N / EVAL_CROP_FRACTION), then crops the central N x N.
EVAL_CROP_FRACTION = 0.875
COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")


class UsageError(Exception):
    """A problem with the command line, the model or the images: reported as one line."""


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _describe(args):
    """ONNX Runtime's inputs or outputs as ``'name' [shape] type`` for an error message."""
    return "; ".join(f"{a.name!r} {a.shape} {a.type}" for a in args)


def session_options(threads=None):
    """ONNX Runtime session options for serving on CPUs (measured: BUILD_NOTES.md, "Export").

    ONNX Runtime's own defaults, set explicitly so that a deployment does not depend on them:
    every graph optimisation (constant folding, Conv+activation fusion, the NCHWc layout of
    x86 convolutions, QDQ fusion into integer kernels for int8 graphs); one graph run at a
    time (sequential execution, which leaves ``inter_op_num_threads`` unused) over
    ``threads`` intra-op threads (default: ONNX Runtime's, one per physical core, pinned);
    the intra-op threads spin between operators, as by default. The one change: denormal
    floats flushed to zero in the session's threads, which costs nothing where there are no
    denormals and avoids x86's slow path where a trained network's tiny weights and
    activations make them. ``benchmarks/inference.py`` times these options against ONNX
    Runtime's defaults, and each option alone (``--option_check``), in alternating processes.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3
    return options


class Predictor:
    """An exported model in ONNX Runtime, with its ``export.json`` when one sits beside it.

    Args:
        model_path: str. The ``.onnx`` file written by ``python -m ssal_keras.export``.
        threads: int or None. ONNX Runtime intra-op threads (``None``: its default).
        metadata_path: str or None. ``export.json`` to read; ``None``: the one beside the
            model, if any.

    Raises:
        UsageError: for a missing or unreadable model, a model this client cannot serve, or
            metadata that is malformed or does not match the model.
    """

    def __init__(self, model_path, *, threads=None, metadata_path=None):
        import onnxruntime

        if not os.path.isfile(model_path):
            raise UsageError(
                f"model file {model_path} not found; pass the model.onnx written by "
                "python -m ssal_keras.export (--model OUT/model.onnx)."
            )
        options = session_options(threads)
        try:
            self.session = onnxruntime.InferenceSession(
                model_path, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ORT raises its own types (InvalidProtobuf, Fail, ...)
            raise UsageError(
                f"cannot load {model_path} as an ONNX model ({_first_line(error)}); the file "
                "is damaged or not ONNX: export it again with python -m ssal_keras.export."
            ) from None
        self.model_path = model_path
        self.input_name, shape = self._check_input()
        batch, height, width, channels = shape
        self.batch_limit = batch if isinstance(batch, int) else None
        self._outputs = {o.name: o for o in self.session.get_outputs()}
        self.outputs = list(self._outputs)
        self.metadata_path, self.metadata = _read_metadata(model_path, metadata_path)
        if self.metadata is not None:
            _check_metadata(self.metadata, self.metadata_path, self)
        if not all(isinstance(d, int) for d in (height, width, channels)):
            spec = (self.metadata or {}).get("input") or {}
            height, width, channels = (spec.get("shape") or [None] * 4)[1:]
        if not all(isinstance(d, int) for d in (height, width, channels)):
            raise UsageError(f"{model_path} has no fixed input size {shape}.")
        self.height, self.width, self.channels = height, width, channels

    def _check_input(self):
        """The input's name and shape, if it is one float32 ``[batch, H, W, C]`` tensor."""
        inputs = self.session.get_inputs()
        shape = inputs[0].shape if len(inputs) == 1 else None
        if len(inputs) != 1 or inputs[0].type != TENSOR_TYPE or len(shape or ()) != 4:
            found = (f"{len(inputs)} inputs" if len(inputs) != 1 else
                     f"the input {_describe(inputs)} (rank {len(shape or ())})")
            raise UsageError(
                f"{self.model_path} cannot be served by this client: it has {found}; it needs "
                "one float32 input of shape [batch, H, W, C] (an image classifier export)."
            )
        if any(isinstance(d, int) and d < 1 for d in shape):
            raise UsageError(f"{self.model_path} has an input of shape {shape}; every fixed "
                             "dimension must be positive.")
        return inputs[0].name, list(shape)

    @property
    def class_names(self):
        return (self.metadata or {}).get("class_names")

    @property
    def groupings(self):
        return (self.metadata or {}).get("groupings") or []

    def output_width(self, name):
        """The fixed number of values of output ``name`` per image, or ``None``."""
        shape = self._outputs[name].shape if name in self._outputs else None
        return shape[-1] if shape and isinstance(shape[-1], int) else None

    def default_output(self):
        """``joint`` if the model has it, else ``base``, else its only output."""
        for name in DEFAULT_OUTPUTS:
            if name in self.outputs:
                return name
        return self.outputs[0]

    def check_output(self, name):
        """``name``, if it is an output this client can read: float32 ``[batch, K]``."""
        if name not in self.outputs:
            raise UsageError(
                f"--output_name {name} is not an output of the model; its outputs: "
                f"{', '.join(self.outputs)}."
            )
        output = self._outputs[name]
        if output.type != TENSOR_TYPE or len(output.shape or ()) != 2:
            raise UsageError(
                f"output {_describe([output])} of {self.model_path} cannot be served by this "
                "client: it reads float32 outputs of shape [batch, classes] (or groups); the "
                f"model's outputs: {_describe(self._outputs.values())}."
            )
        return name

    def predict(self, images, output_name=None):
        """Probabilities of one output for a batch of raw images ``(N, H, W, C)``, 0..255.

        A model with a fixed batch size runs in chunks of it; the result is the same as
        running the images one by one.
        """
        name = self.check_output(output_name or self.default_output())
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self.batch_limit is None:
            return self._run(name, images)
        step = self.batch_limit
        return np.concatenate([self._run(name, images[i:i + step])
                               for i in range(0, max(len(images), 1), step)])[:len(images)]

    def _run(self, name, images):
        count = len(images)
        if self.batch_limit and count < self.batch_limit:
            # Inference treats images independently: zero padding fills a fixed-size batch
            # without changing the real images' outputs, and its rows are dropped.
            padding = np.zeros((self.batch_limit - count, *images.shape[1:]), np.float32)
            images = np.concatenate([images, padding])
        try:
            (probs,) = self.session.run([name], {self.input_name: images})
        except Exception as error:  # ORT raises its own types (Fail, InvalidArgument, ...)
            raise UsageError(f"ONNX Runtime cannot run {self.model_path} on a batch of shape "
                             f"{images.shape} ({_first_line(error)}).") from None
        probs = np.asarray(probs)
        if probs.ndim != 2 or len(probs) != len(images):
            raise UsageError(f"output {name!r} of {self.model_path} has shape {probs.shape} "
                             f"for {len(images)} images; it should be [batch, classes].")
        return probs[:count]

    def top(self, probs, k, output_name):
        """The ``k`` most probable entries of one image's output, as JSON-ready dicts."""
        order = np.argsort(-probs, kind="stable")[: min(k, probs.shape[-1])]
        branch = _branch(output_name)
        if branch is not None:
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


def _branch(output_name):
    """The branch ``b`` of an ``aux_<b>`` output, else ``None``."""
    if output_name.startswith("aux_") and output_name[4:].isdigit():
        return int(output_name[4:])
    return None


# --- export.json ---------------------------------------------------------------------------
def _read_metadata(model_path, metadata_path):
    """``(path, the JSON object in it)`` of ``export.json`` (beside the model, or
    ``metadata_path``); ``(path, None)`` when there is none beside the model."""
    path = metadata_path or os.path.join(os.path.dirname(os.path.abspath(model_path)),
                                         METADATA)
    if not os.path.isfile(path):
        if metadata_path:
            raise UsageError(f"--metadata {metadata_path} not found.")
        return path, None
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError, RecursionError) as error:  # ValueError: also bad UTF-8
        raise UsageError(
            f"cannot read {path} ({_first_line(error)}); fix it or remove it (the model "
            "runs without it, printing no names or groups)."
        ) from None
    if not isinstance(meta, dict):
        raise UsageError(f"{path} is not an export.json (not a JSON object but "
                         f"{type(meta).__name__}).")
    return path, meta


def _field_error(path, field, problem):
    return UsageError(
        f"{path}: field {field!r} {problem}; fix it or remove the file (the model runs "
        "without it, printing no names or groups)."
    )


def _is_int(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_metadata_types(meta, path):
    """Refuses fields the client reads that have the wrong JSON types."""
    spec = meta.get("input")
    if spec is not None and not isinstance(spec, dict):
        raise _field_error(path, "input", "is not an object")
    shape = (spec or {}).get("shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 4 and all(
            d is None or _is_int(d, 1) for d in shape)):
        raise _field_error(path, "input.shape", f"is {shape!r}, not [batch, H, W, C] "
                           "(positive ints or null)")
    outputs = meta.get("outputs")
    if outputs is not None and not (isinstance(outputs, list) and all(
            isinstance(o, dict) and isinstance(o.get("name"), str)
            and isinstance(o.get("shape"), list) and o["shape"]
            and all(d is None or _is_int(d, 1) for d in o["shape"]) for o in outputs)):
        raise _field_error(path, "outputs", "is not a list of {\"name\": str, \"shape\": "
                           "[ints or null]} objects")
    if meta.get("num_classes") is not None and not _is_int(meta["num_classes"], 1):
        raise _field_error(path, "num_classes", f"is {meta['num_classes']!r}, not a "
                           "positive int")
    names = meta.get("class_names")
    if names is not None and not (isinstance(names, list)
                                  and all(isinstance(n, str) for n in names)):
        raise _field_error(path, "class_names", "is not a list of strings (or null)")
    groupings = meta.get("groupings")
    if groupings is not None and not (isinstance(groupings, list) and all(
            isinstance(g, list) and all(_is_int(c) for c in g) for g in groupings)):
        raise _field_error(path, "groupings", "is not a list of lists of group ids "
                           "(ints >= 0), one list per branch")


def _check_metadata(meta, path, predictor):
    """Refuses an ``export.json`` that is malformed or describes another model."""
    _check_metadata_types(meta, path)
    widths = {o["name"]: o["shape"][-1] for o in meta.get("outputs") or []}
    for name in predictor.outputs:
        width = predictor.output_width(name)
        if name in widths and width is not None and widths[name] not in (None, width):
            raise UsageError(
                f"{path} does not describe {predictor.model_path}: output {name!r} "
                f"has {width} values, export.json says {widths[name]}; keep each "
                "export.json beside its own model."
            )
    class_outputs = [n for n in DEFAULT_OUTPUTS if predictor.output_width(n) is not None]
    classes = (predictor.output_width(class_outputs[0]) if class_outputs
               else meta.get("num_classes"))
    if classes is not None and meta.get("num_classes") not in (None, classes):
        raise _field_error(path, "num_classes", f"is {meta['num_classes']}; the model has "
                           f"{classes} classes")
    names, groupings = meta.get("class_names"), meta.get("groupings") or []
    if classes is not None and names is not None and len(names) != classes:
        raise _field_error(path, "class_names", f"has {len(names)} names; the model has "
                           f"{classes} classes")
    for b, grouping in enumerate(groupings):
        if classes is not None and len(grouping) != classes:
            raise _field_error(path, f"groupings[{b}]", f"has {len(grouping)} entries; the "
                               f"model has {classes} classes")
        groups = predictor.output_width(f"aux_{b}")
        if groups is not None and grouping and max(grouping) >= groups:
            raise _field_error(path, f"groupings[{b}]", f"has group {max(grouping)}; output "
                               f"aux_{b} has {groups} groups")
    branches = [b for b in map(_branch, predictor.outputs) if b is not None]
    if groupings and branches and max(branches) >= len(groupings):
        raise _field_error(path, "groupings", f"has {len(groupings)} lists; the model has "
                           f"branches up to aux_{max(branches)}")


# --- inputs --------------------------------------------------------------------------------
def _load_npy(path):
    """The array in a ``.npy`` file, memory-mapped and never unpickled."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:  # also pickles and object arrays
        raise UsageError(f"cannot read {path} as a .npy array ({_first_line(error)}); "
                         f"--images takes {ACCEPTED}.") from None
    if not isinstance(array, np.ndarray):  # np.load opens any zip (.npz) whatever its name
        array.close()
        raise UsageError(f"{path} is an .npz archive, not a .npy array; --images takes "
                         f"{ACCEPTED}: save each batch with np.save.")
    if array.dtype.kind not in "uif":
        raise UsageError(f"{path} holds {array.dtype} values, not numbers; --images takes "
                         f"{ACCEPTED}.")
    return array


def _open_npy(path, predictor):
    array = _load_npy(path)
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
    if len(array) == 0:
        raise UsageError(f"{path} holds no images (shape {array.shape}).")
    low, high = _check_pixels(path, array)
    if high <= 1.0 and array.dtype.kind == "f":
        print(f"{PROG}: warning: {path} has values in [{low:g}, {high:g}]; the model expects "
              "raw pixels in 0..255, not 0..1", file=sys.stderr)
    return array


def _check_pixels(path, array):
    """The batch's smallest and largest values, if every image is finite and in 0..255.

    Raises:
        UsageError: naming the first image with NaN, inf or a value outside 0..255.
    """
    if array.dtype == np.uint8:
        return 0.0, 255.0  # cannot be out of range; the 0..1 warning is for floats
    low, high = np.inf, -np.inf
    for start in range(0, len(array), NPY_CHUNK):
        flat = np.asarray(array[start:start + NPY_CHUNK]).reshape(
            min(NPY_CHUNK, len(array) - start), -1)
        lows, highs = flat.min(axis=1), flat.max(axis=1)  # NaN propagates through both
        bad = ~(np.isfinite(lows) & np.isfinite(highs) & (lows >= 0) & (highs <= 255))
        if bad.any():
            i = int(np.argmax(bad))
            what = ("NaN or inf values" if not np.isfinite(flat[i]).all() else
                    f"values in [{lows[i]:g}, {highs[i]:g}]")
            raise UsageError(
                f"{path}[{start + i}] (the first bad image of {path}) has {what}; the model "
                "takes raw pixels in 0..255 (its normalisation is inside the graph): pass the "
                "unnormalised images."
            )
        low, high = min(low, float(lows.min())), max(high, float(highs.max()))
    return low, high


def _image_mode(channels):
    if channels not in (1, 3):
        raise UsageError(
            f"the model takes {channels}-channel images; image files can only feed 1- or "
            "3-channel models: pass a .npy batch instead."
        )
    return "L" if channels == 1 else "RGB"


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(
            "reading image files needs Pillow (pip install pillow); or pass a .npy batch."
        ) from None
    return Image


def _open_image(path):
    """The image file opened (its header read, its pixels not yet decoded) and checked."""
    Image = _pillow()
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: a bomb either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UsageError(f"image {path} is too large to decode safely ({_first_line(error)}); "
                         "downscale it first.") from None
    except Exception as error:  # plugins raise OSError, SyntaxError, struct.error, ...
        raise UsageError(f"cannot read image {path} ({_first_line(error)}); --images takes "
                         f"{ACCEPTED}.") from None
    width, height = image.size
    problem = None
    if width * height > MAX_PIXELS:
        problem = (f"is {height}x{width} (HxW), {width * height} pixels, over this client's "
                   f"limit of {MAX_PIXELS} (MAX_PIXELS): downscale it first")
    elif _is_deep(image):
        problem = (f"has {image.mode} pixels ({_rawmode(image) or image.mode}): 16-bit images "
                   "are not supported: convert to 8-bit")
    elif image.mode not in GREY_MODES + COLOUR_MODES:
        problem = (f"has mode {image.mode}: images of mode {image.mode} are not supported: "
                   "convert to 8-bit grey or RGB")
    if problem:
        image.close()
        raise UsageError(f"image {path} {problem}.")
    return image


def _rawmode(image):
    """Pillow's raw mode of the file's first tile (how its samples are stored), or ''."""
    tile = image.tile[0] if getattr(image, "tile", None) else None
    args = tile[3] if tile is not None and len(tile) > 3 else None
    args = args[0] if isinstance(args, tuple) and args else args
    return args if isinstance(args, str) else ""


def _is_deep(image):
    """Whether the image has more than 8 bits per sample (module docstring: refused)."""
    # "I;16*" and "I" (32-bit) and "F" (float) modes; Pillow also opens 48/64-bit PNG and
    # TIFF as 8-bit "RGB"/"RGBA", silently dropping the low bytes: their raw mode tells.
    return image.mode.startswith(("I", "F")) or bool(_RAWMODE_16_BIT.search(_rawmode(image)))


def plan_inputs(paths, predictor, *, resize=False):
    """Checks every input before any inference; returns a list of ``(id, loader)``."""
    items = []
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"image file {path} " + (
                "is a folder; pass the files in it." if os.path.isdir(path) else "not found."))
        extension = os.path.splitext(path)[1].lower()
        if extension == ".npy":
            array = _open_npy(path, predictor)
            items += [(f"{path}[{i}]", (lambda a=array, i=i: np.asarray(a[i], np.float32)))
                      for i in range(len(array))]
        elif extension in IMAGE_EXTENSIONS:
            mode = _image_mode(predictor.channels)
            with _open_image(path) as image:
                size = image.size
            if size != (predictor.width, predictor.height) and not resize:
                raise UsageError(
                    f"{path} is {size[1]}x{size[0]} (HxW); the model takes "
                    f"{predictor.height}x{predictor.width} images: resize them, or pass "
                    "--resize to let this script resize and centre-crop them (the trainer's "
                    "evaluation transform)."
                )
            size = (predictor.height, predictor.width)
            items.append((path, lambda p=path, m=mode, s=size: _decode(p, m, s)))
        else:
            raise UsageError(
                f"{path}: unknown image type {extension or '(no extension)'}; --images takes "
                f"{ACCEPTED}."
            )
    if not items:
        raise UsageError("no images given; pass --images FILE [FILE ...].")
    return items


def crop_geometry(height, width, crop_height, crop_width):
    """The trainer's evaluation resize-and-crop (``resize_and_center_crop``) of an image
    ``height x width`` for a model input ``crop_height x crop_width``: ``((new_height,
    new_width), (top, left))``, the resized size and the crop's offsets in it.

    The arithmetic of ``ssal_keras/data/pipelines.py``: the shorter side becomes
    ``short = round(N / EVAL_CROP_FRACTION)`` (``N = max(crop_height, crop_width)``: the side
    of the trainer's square inputs), each side ``max(round(side * short / min(height, width)),
    short)`` (rounding half to even, as ``tf.round``), the offsets ``(new - crop) // 2``.
    """
    short_side = int(round(max(crop_height, crop_width) / EVAL_CROP_FRACTION))
    scale = short_side / float(min(height, width))
    new_height, new_width = (max(int(np.round(side * scale)), short_side)
                             for side in (height, width))
    return ((new_height, new_width),
            ((new_height - crop_height) // 2, (new_width - crop_width) // 2))


def resize_and_center_crop(image, height, width):
    """A Pillow image resized (bilinear) and centre-cropped to ``height x width`` as the
    trainer evaluates (``crop_geometry``): float32 ``(height, width, C)``, in 0..255.

    Each channel is resized in float (Pillow's mode ``F``), so no rounding to 8 bits. Pillow's
    bilinear filter antialiases when it downscales (its support widens with the factor),
    ``tf.image.resize`` (bilinear, ``antialias=False``) does not: the pixels are close to the
    trainer's, not identical.
    """
    Image = _pillow()
    (new_height, new_width), (top, left) = crop_geometry(image.height, image.width,
                                                         height, width)
    channels = [np.asarray(band.convert("F").resize((new_width, new_height), Image.BILINEAR),
                           dtype=np.float32) for band in image.split()]
    resized = np.stack(channels, axis=-1)
    return np.clip(resized[top:top + height, left:left + width], 0.0, 255.0)


def _decode(path, mode, size):
    """The image file's pixels ``(H, W, C)``, float32, in the model's channels; an image of
    another size than ``size`` (``(H, W)``) is resized and centre-cropped to it."""
    with _open_image(path) as image:  # checked again: the file may have changed since
        try:
            if image.mode in ("P", "PA"):
                # Through RGBA, so a palette's transparency is dropped like any alpha
                # (and Pillow does not warn about it).
                image = image.convert("RGBA")
            image = image.convert(mode)
            if (image.height, image.width) != tuple(size):
                array = resize_and_center_crop(image, *size)
            else:
                array = np.asarray(image, dtype=np.float32)
        except UsageError:
            raise
        except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, ...
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
                        help="Images per ONNX Runtime call (32; a model with a fixed batch "
                             "size runs in chunks of it).")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="ONNX Runtime intra-op threads (default: its own choice).")
    parser.add_argument("--output_name", default=None,
                        help="Output to read: joint (default), base or aux_<i>.")
    parser.add_argument("--metadata", default=None,
                        help="export.json to read (default: the one beside --model).")
    parser.add_argument("--resize", action="store_true",
                        help="Resize and centre-crop image files of another size to the "
                             "model's, as the trainer evaluates (shorter side to "
                             "round(N / 0.875), central H x W), instead of refusing them.")
    return parser


def result_lines(predictor, batch, probs, top_k, output_name):
    """The JSON lines of one batch ``[(id, loader)]``, if every output is finite."""
    names = predictor.class_names
    if _branch(output_name) is None and names is not None and probs.shape[1] != len(names):
        raise UsageError(f"output {output_name!r} has {probs.shape[1]} classes; "
                         f"{METADATA} names {len(names)}: it describes another model.")
    lines = []
    for (image_id, _), p in zip(batch, probs):
        if not np.isfinite(p).all():
            raise UsageError(
                f"the model's output {output_name!r} for {image_id} is not finite (NaN or "
                "inf): the model or this image is broken; nothing is printed for it."
            )
        line = {"image": image_id, "top": predictor.top(p, top_k, output_name)}
        lines.append(json.dumps(line, allow_nan=False) + "\n")  # strict JSON, a guard
    return lines


def run(argv=None, out=None):
    """The command line: prints one JSON line per image to ``out`` (stdout)."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    predictor = Predictor(args.model, threads=args.threads, metadata_path=args.metadata)
    output_name = predictor.check_output(args.output_name or predictor.default_output())
    items = plan_inputs(args.images, predictor, resize=args.resize)
    for start in range(0, len(items), args.batch_size):
        batch = items[start:start + args.batch_size]
        images = np.stack([load() for _, load in batch])
        probs = predictor.predict(images, output_name)
        out.write("".join(result_lines(predictor, batch, probs, args.top_k, output_name)))
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
