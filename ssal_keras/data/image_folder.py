"""Image folders, one sub-folder per class: the file lists and labels of ``folder:PATH``.

Two layouts:

- ``PATH/train/<class>/...`` with ``PATH/val/<class>/...`` (or ``PATH/test/<class>/...``) for
  evaluation. Tiny ImageNet's own ``val/`` (``val/images/*.JPEG`` labelled by
  ``val/val_annotations.txt``) is read as it is.
- ``PATH/<class>/...`` only: the whole set; every class gives 10% of its images (rounded, at
  least one, evenly spaced in sorted file-name order, the same on every run) to evaluation.

Images are found recursively under each class folder (``*.png``, ``*.jpg``, ``*.jpeg``, any
case; Tiny ImageNet's ``train/<wnid>/images/``). Class ids are the sorted folder names of the
training part. A file with one channel among RGB files is decoded as RGB, an alpha channel is
dropped. By default all images must have one height and width (checked on the first image of
each class, then on every image as it is read); with ``mixed_sizes=True`` (``load(...,
image_size=N)``) they may differ, and the input pipelines resize them.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
EVAL_FRACTION = 0.1  # of each class, in the layout without train/
_EVAL_FOLDERS = ("val", "test")
_TINY_IMAGENET_LABELS = "val_annotations.txt"


@dataclasses.dataclass
class FileSplit:
    """Image files and their class ids."""

    paths: np.ndarray  # str
    labels: np.ndarray  # int32


def read_folder(path, *, mixed_sizes=False):
    """Lists a ``folder:PATH`` dataset (module docstring).

    Args:
        path: str. The dataset's folder.
        mixed_sizes: bool. Accept images of different heights and widths (the channels are
            still one number for all).

    Returns:
        ``(class_names, train, eval, image_shape)``: list of str, two ``FileSplit`` and the
        ``(height, width, channels)`` every image is decoded to (``(None, None, channels)``
        with ``mixed_sizes``).

    Raises:
        FileNotFoundError: if ``path`` is not a folder.
        ValueError: on a folder without images, an evaluation class unknown to training, or
            (without ``mixed_sizes``) images of different sizes.
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
    return class_names, train, eval_, _image_shape(train, eval_, mixed_sizes)


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


def _image_shape(train, eval_, mixed_sizes=False):
    """The common ``(height, width, channels)``, checked on each split's first image per class
    (``(None, None, channels)`` with ``mixed_sizes``).

    Raises:
        ValueError: if two of the checked images differ in height or width (not with
            ``mixed_sizes``).
    """
    shapes = {}
    for split in (train, eval_):
        _, first = np.unique(split.labels, return_index=True)
        for path in split.paths[first]:
            shapes[path] = tuple(_decode(path).shape)
    channels = 3 if any(shape[2] >= 3 for shape in shapes.values()) else 1
    if mixed_sizes:
        return None, None, channels
    (first_path, (height, width, _)), *others = shapes.items()
    for path, shape in others:
        if shape[:2] != (height, width):
            raise ValueError(f"images differ in size: {first_path} is {height}x{width}, {path} "
                             f"is {shape[0]}x{shape[1]}; pass --image_size=N to resize them "
                             "(load(..., image_size=N)), or resize the files to one size.")
    return height, width, channels


def _decode(path):
    try:
        return tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        raise ValueError(f"cannot decode {path}: {error.message.splitlines()[0]}") from None


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
