"""Image folders, one sub-folder per class: the file lists and labels of ``folder:PATH``.

Two layouts:

- ``PATH/train/<class>/...`` with ``PATH/val/<class>/...`` (or ``PATH/test/<class>/...``) for
  evaluation. Tiny ImageNet's own ``val/`` (``val/images/*.JPEG`` labelled by
  ``val/val_annotations.txt``) is read as it is.
- ``PATH/<class>/...`` only: the whole set; every class gives 10% of its images (rounded, at
  least one, evenly spaced in sorted file-name order, the same on every run) to evaluation.

Images are found recursively under each class folder (``*.png``, ``*.jpg``, ``*.jpeg``, any
case; Tiny ImageNet's ``train/<wnid>/images/``). Class ids are the sorted folder names of the
training part.

Checked at load, before any training step: every file of both parts is opened once (in
parallel threads; a progress line every ``PROGRESS_EVERY`` files for larger folders) and its
header read, never the whole image decoded. Refused: a missing file (``FileNotFoundError``), an
empty or unreadable one, a PNG whose chunks are cut short or fail their checksums, a JPEG
without its end marker that TensorFlow cannot decode either, an image over
``MAX_IMAGE_PIXELS`` pixels (from its header) and an image outside the channel policy below.
The error is one line naming the first such file (in path order) and how many more there are.
Without ``mixed_sizes`` every image must have the first training image's height and width; the
error names both files. (Not found at load: a JPEG damaged inside with its end marker intact;
only decoding every file would find it.)

Channel policy (the same as the deployment client's, ``export/onnx_predict.py``): images are
8-bit. Grey (also 1-bit) and colour (RGB; palette images and JPEG's CMYK count as colour) are
accepted; a dataset is RGB if any of its images is colour, else grey, and every image is
decoded to that many channels (a grey image among RGB ones is repeated into three channels:
Pillow's ``convert("RGB")`` does the same). An alpha channel is dropped (not composited), a
palette is expanded to its colours. 16-bit images (PNG of bit depth 16, Pillow modes ``I;16``
and ``I``) and 32-bit float images are refused: convert them to 8-bit. Files in other formats
than PNG and JPEG under those names (a GIF, BMP or WebP named ``.jpg``) are decoded once at
load by TensorFlow, the decoder training uses.
"""

import concurrent.futures
import dataclasses
import os
import re

import numpy as np
import tensorflow as tf
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
EVAL_FRACTION = 0.1  # of each class, in the layout without train/
# Height * width of the largest image file: a larger one is refused from its header, never
# decoded. The deployment client's limit (export/onnx_predict.py, MAX_PIXELS): an image the
# trainer takes, the client takes too.
MAX_IMAGE_PIXELS = 64_000_000
PROGRESS_EVERY = 10_000  # files between progress lines of the check; none for fewer files
_EVAL_FOLDERS = ("val", "test")
_TINY_IMAGENET_LABELS = "val_annotations.txt"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_END = b"\xff\xd9"
_GREY_MODES = ("1", "L", "LA", "La")
_COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
_TF_NOISE = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*")  # TF's op name around a message


@dataclasses.dataclass
class FileSplit:
    """Image files and their class ids."""

    paths: np.ndarray  # str
    labels: np.ndarray  # int32


def read_folder(path, *, mixed_sizes=False, log=print):
    """Lists a ``folder:PATH`` dataset and checks every file of it (module docstring).

    Args:
        path: str. The dataset's folder.
        mixed_sizes: bool. Accept images of different heights and widths (the channels are
            still one number for all).
        log: callable. Prints a progress line of the check (folders over ``PROGRESS_EVERY``
            files).

    Returns:
        ``(class_names, train, eval, image_shape)``: list of str, two ``FileSplit`` and the
        ``(height, width, channels)`` every image is decoded to (``(None, None, channels)``
        with ``mixed_sizes``).

    Raises:
        FileNotFoundError: if ``path`` is not a folder, or a listed image file is missing.
        ValueError: on a folder without images, an evaluation class unknown to training, a
            damaged, empty, too large or 16-bit image, or (without ``mixed_sizes``) images of
            different sizes.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"folder:{path}: no such folder; pass a folder with one sub-folder of images per "
            "class, or with train/ and val/ (or test/) sub-folders laid out that way."
        )
    train_dir = os.path.join(path, "train")
    if os.path.isdir(train_dir):
        class_names, train = _class_folders(train_dir)
        eval_ = _eval_folder(path, class_names)
    else:
        class_names, everything = _class_folders(path)
        train, eval_ = _split_each_class(everything, class_names)
    headers = check_files(np.concatenate([train.paths, eval_.paths]),
                          log=lambda line: log(f"folder:{path}: {line}"))
    return class_names, train, eval_, _image_shape(headers, mixed_sizes)


def _class_folders(root):
    """The images under ``root/<class>/`` (recursively) and their ids (sorted class names)."""
    class_names = sorted(
        e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
    )
    if not class_names:
        raise ValueError(f"{root} has no class sub-folders; put each class's images in "
                         "a sub-folder named after the class.")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = _image_files(os.path.join(root, name))
        if not files:
            raise ValueError(f"{os.path.join(root, name)} holds no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images.")
        paths += files
        labels += [label] * len(files)
    return class_names, _file_split(paths, labels)


def _image_files(folder):
    """Image files under ``folder``, recursively, in sorted order."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(parent, f) for f in files
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return sorted(found)


def _file_split(paths, labels):
    return FileSplit(np.asarray(paths, dtype=str), np.asarray(labels, dtype=np.int32))


def _eval_folder(path, class_names):
    """The evaluation split of the ``train/`` layout: ``val/`` or else ``test/``."""
    for name in _EVAL_FOLDERS:
        root = os.path.join(path, name)
        if os.path.isdir(root):
            break
    else:
        raise ValueError(f"folder:{path} has train/ but neither val/ nor test/; add one, or "
                         "put the class folders directly in it (10% of each becomes eval).")
    if os.path.isfile(os.path.join(root, _TINY_IMAGENET_LABELS)):
        return _tiny_imagenet_val(root, class_names)
    eval_names, split = _class_folders(root)
    unknown = sorted(set(eval_names) - set(class_names))
    if unknown:
        raise ValueError(f"{root} has class folders that train/ lacks: {unknown[:5]}; "
                         "both splits need the same class folder names.")
    ids = np.asarray([class_names.index(n) for n in eval_names], dtype=np.int32)
    return FileSplit(split.paths, ids[split.labels])


def _tiny_imagenet_val(root, class_names):
    """Tiny ImageNet's ``val/``: ``images/<file>`` labelled by ``val_annotations.txt``."""
    ids = {name: i for i, name in enumerate(class_names)}
    paths, labels = [], []
    with open(os.path.join(root, _TINY_IMAGENET_LABELS)) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            if fields[1] not in ids:
                raise ValueError(f"{root}/{_TINY_IMAGENET_LABELS} names class {fields[1]!r} "
                                 "that train/ lacks; both splits need the same classes.")
            paths.append(os.path.join(root, "images", fields[0]))
            labels.append(ids[fields[1]])
    if not paths:
        raise ValueError(f"{root}/{_TINY_IMAGENET_LABELS} lists no images.")
    return _file_split(paths, labels)


def _split_each_class(split, class_names):
    """Moves ``EVAL_FRACTION`` of each class (at least one, evenly spaced) to evaluation."""
    is_eval = np.zeros(len(split.paths), dtype=bool)
    for label, name in enumerate(class_names):
        members = np.flatnonzero(split.labels == label)
        if len(members) < 2:
            raise ValueError(f"class {name!r} has {len(members)} image; without train/ and "
                             "val/ folders each class needs at least 2 (10% go to eval).")
        count = max(1, int(EVAL_FRACTION * len(members) + 0.5))
        is_eval[members[np.linspace(0, len(members) - 1, count).round().astype(int)]] = True
    return (FileSplit(split.paths[~is_eval], split.labels[~is_eval]),
            FileSplit(split.paths[is_eval], split.labels[is_eval]))


def _image_shape(headers, mixed_sizes=False):
    """The ``(height, width, channels)`` all images are decoded to (``(None, None, channels)``
    with ``mixed_sizes``): 3 channels if any image is colour, else 1.

    Raises:
        ValueError: if an image's height and width differ from the first one's (not with
            ``mixed_sizes``).
    """
    channels = 3 if any(header.colour for header in headers) else 1
    if mixed_sizes:
        return None, None, channels
    first = headers[0]
    for other in headers:
        if (other.height, other.width) != (first.height, first.width):
            raise ValueError(
                f"images differ in size: {first.path} is {first.height}x{first.width}, "
                f"{other.path} is {other.height}x{other.width}; pass --image_size=N to "
                "resize them (load(..., image_size=N)), or resize the files to one size.")
    return first.height, first.width, channels


# The check of every file at load ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FileHeader:
    """What the check of one image file found: its size and colour, or why it is refused."""

    path: str
    height: int = 0
    width: int = 0
    colour: bool = False  # RGB, palette or CMYK; False: grey
    problem: str | None = None  # why the file cannot be used; None: it can
    missing: bool = False  # the file does not exist


def check_files(paths, *, log=print):
    """Checks every image file once, in parallel threads (``inspect_file``).

    Args:
        paths: sequence of str. The files.
        log: callable. Gets a progress line every ``PROGRESS_EVERY`` files, when there are
            more than that.

    Returns:
        list of ``FileHeader``, in ``paths`` order, none with a problem.

    Raises:
        FileNotFoundError: naming the first missing file (in ``paths`` order).
        ValueError: naming the first file with a problem, and how many more there are.
    """
    paths = [str(p) for p in paths]
    headers = []
    # Threads: the time goes mostly into waiting for file reads (they release the GIL), which
    # overlap; TensorFlow's decoding of the few files that need it runs in parallel too.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        for start in range(0, len(paths), PROGRESS_EVERY):
            headers += pool.map(inspect_file, paths[start:start + PROGRESS_EVERY])
            if len(paths) > PROGRESS_EVERY:
                log(f"checked {len(headers):,} of {len(paths):,} image files")
    bad = [header for header in headers if header.problem]
    if bad:
        more = f" ({len(bad) - 1} more bad file(s) after it)" if len(bad) > 1 else ""
        error = FileNotFoundError if bad[0].missing else ValueError
        raise error(f"{bad[0].path}: {bad[0].problem}{more}.")
    return headers


def inspect_file(path):
    """Checks one image file from its header (a PNG also by its chunk checksums, a JPEG by its
    end marker) without decoding it, except where TensorFlow must tell (``_decodes``).

    Returns:
        ``FileHeader``: the size and colour, or the problem.
    """
    try:
        if os.path.getsize(path) == 0:
            return FileHeader(path, problem="empty file (0 bytes); remove or replace it")
        with open(path, "rb") as f:
            head = f.read(32)
            f.seek(0)
            with Image.open(f) as image:
                header = _judge_header(path, head, image)
                if header.problem is None and image.format == "PNG":
                    image.verify()  # reads every chunk to IEND: cut or corrupted files fail
                if header.problem is None and image.format != "PNG" and not _ends_well(f):
                    header = _decodes(header)
    except FileNotFoundError:
        return FileHeader(path, problem="no such file; restore it or remove it from the dataset",
                          missing=True)
    except Image.UnidentifiedImageError:  # its message names a file object, not the format
        return FileHeader(path, problem="not an image file of a known format (PNG, JPEG); "
                                        "remove or replace it")
    except Exception as error:  # Pillow's parsers raise many types on damaged files
        return FileHeader(path, problem=f"cannot read the image ({_first_line(error)}); "
                                        "remove or replace it")
    return header


def _judge_header(path, head, image):
    """The ``FileHeader`` of an opened image: its size and colour, or why the module
    docstring's policy refuses it."""
    width, height = image.size
    sixteen_bit = head.startswith(_PNG_SIGNATURE) and len(head) > 24 and head[24] > 8
    if sixteen_bit or image.mode.startswith(("I", "F")):
        return FileHeader(path, problem=f"16-bit images are not supported: convert to 8-bit "
                                        f"(a {image.format} of mode {image.mode})")
    if width * height > MAX_IMAGE_PIXELS:
        return FileHeader(path, problem=(
            f"{height}x{width} = {width * height:,} pixels, over the maximum of "
            f"{MAX_IMAGE_PIXELS:,} (image_folder.MAX_IMAGE_PIXELS); downscale it or remove it"))
    if image.mode not in _GREY_MODES + _COLOUR_MODES:
        return FileHeader(path, problem=f"images of mode {image.mode} are not supported: "
                                        "convert to 8-bit grey or RGB")
    return FileHeader(path, height, width, colour=image.mode in _COLOUR_MODES)


def _ends_well(f):
    """Whether an open JPEG file ends with its end-of-image marker: a cut file does not."""
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 64))
    return f.read().rstrip(b"\0\r\n ").endswith(_JPEG_END)


def _decodes(header):
    """``header``, or the reason TensorFlow cannot decode the file: for files the header check
    cannot vouch for (a JPEG without its end marker, another format under an image name)."""
    try:
        tf.io.decode_image(tf.io.read_file(header.path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        return FileHeader(header.path, problem=f"cannot decode the image "
                                               f"({_first_line(error)}); remove or replace it")
    return header


def _first_line(error):
    """The first line of an error's message, without TensorFlow's op names."""
    text = getattr(error, "message", None) or str(error)
    lines = [line for line in text.splitlines() if line.strip()]
    return _TF_NOISE.sub("", lines[0]).strip() if lines else type(error).__name__


def decode_file(path, label, *, image_shape):
    """Reads one image file as uint8 ``image_shape`` (a ``tf.data`` map function).

    Args:
        path: string tensor. The file.
        label: int32 tensor. Passed through.
        image_shape: tuple. ``(height, width, channels)`` of every image; height and width
            None: any size (not checked).

    Returns:
        ``(image, label)``.
    """
    image = tf.io.decode_image(tf.io.read_file(path), channels=image_shape[-1],
                               expand_animations=False)
    if image_shape[0] is None or image_shape[1] is None:
        return tf.ensure_shape(image, (None, None, image_shape[-1])), label
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], image_shape[:2]))
    check = tf.debugging.Assert(same_size, [
        "This image differs in size from the folder's first image; pass --image_size=N to "
        "resize (load(..., image_size=N)):",
        path, tf.shape(image),
    ])
    with tf.control_dependencies([check]):
        image = tf.identity(image)
    return tf.ensure_shape(image, image_shape), label
