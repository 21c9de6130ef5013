"""Image classification datasets as unbatched ``tf.data`` splits of raw pixels: ``load``.

Dataset specs (``load(spec)``; the trainer's ``--dataset``):

- ``"fashion_mnist"``: the IDX files of Debian's ``dataset-fashion-mnist`` in ``data_dir`` or
  else ``/usr/share/datasets/fashion-mnist``; if neither holds them, TFDS's ``fashion_mnist``
  prepared in ``data_dir``.
- ``"tfds:NAME"`` or ``"tfds:NAME:TRAIN_SPLIT:EVAL_SPLIT"``: a TFDS dataset already prepared in
  ``data_dir`` (never downloaded). Default splits: ``train``, and ``test`` or, for a dataset
  without one, ``validation``. ``NAME`` may carry a config and version
  (``cifar10_corrupted/brightness_1:1.0.0``); splits may be sliced (``train[:90%]``).
- ``"folder:PATH"``: one sub-folder of images per class (``image_folder.py`` has both layouts).
- ``"npz:PATH"``: arrays ``x_train, y_train, x_test, y_test`` (the ``keras.datasets`` layout),
  images ``(N, H, W)`` or ``(N, H, W, C)`` in raw pixel values, optional ``class_names``.

Selection, so that runs compare:

- The held-out part (``held_out_examples``) is a fixed pseudo-random choice that depends only on
  the dataset and its size, not on ``seed``: a baseline trained with any seed and the same
  ``held_out_examples`` never saw those examples, and a smaller held-out part is a subset of a
  larger one.
- ``train_examples`` then keeps the first N of the rest: for in-memory sources (Fashion-MNIST
  IDX, npz, folder file lists) after a shuffle seeded by ``seed`` (once, at load time; folder
  lists are sorted by class otherwise); for TFDS in the dataset's file order (TFDS shuffles
  examples when it prepares a dataset).
- ``eval_examples`` keeps the first N of the evaluation split: in-memory sources in a fixed
  pseudo-random order (independent of ``seed``, so every run evaluates the same subset), TFDS
  in file order.

Every returned split has a known ``cardinality()`` equal to its count.

Random access (``Dataset.train_example_at``), which the full shuffle of the input pipelines
needs (a new permutation of the whole training split every epoch, as the authors' loaders
draw): Fashion-MNIST IDX and npz arrays, folder file lists, and TFDS training splits of one
image size that fit in ``TFDS_IN_MEMORY_BYTES`` (read into memory at load: CIFAR, Tiny
ImageNet at 64x64), and other TFDS sets prepared as ArrayRecord files (``tfds build
--file_format=array_record``: ImageNet), through TFDS's data source. TFDS sets in TFRecord
files that do not fit in memory are read front to back and need ``--shuffle=buffer:N``.

Image sizes: without ``image_size`` every image of a dataset must have one static
``(H, W, C)`` (a TFDS dataset of variable-size images, as ``imagenet2012``, or a folder of
mixed sizes is refused). With ``image_size=N``, images may have any height and width (the
channels stay fixed): the splits hold them as decoded (uint8), unresized, and
``Dataset.image_shape`` is ``(N, N, C)``, the shape the input pipelines (``pipelines.py``)
resize and crop them to, the ImageNet way (random-resized crops for training, resize and
centre crop for evaluation). A dataset of one size may be loaded with ``image_size`` too.

Checked at load, before the first training step (each problem is one ``ValueError``, or
``FileNotFoundError`` for a missing file, naming the file and, in arrays, the index):

- Folders: every image file of both parts (``image_folder.py``: damaged, empty, too large or
  16-bit files, mixed sizes without ``image_size``, the channel policy).
- Fashion-MNIST IDX files: cut or damaged gzip streams, headers that do not match their data,
  labels outside 0..9 (``fashion_mnist.py``).
- npz files: a cut or damaged archive; pixels must be raw values 0..255 (uint8, or integers or
  finite floats in that range: NaN, inf, negative or larger values, as in normalised images,
  are refused with the first bad image's index). Labels are class ids >= 0. Without
  ``class_names`` the classes are ``0..max(label)`` (over both splits) and every one of them
  must occur in ``y_train``: a stray label (255 among 0..9) is refused instead of making a
  256-class problem; the error names the first absent id and the largest label's index. With
  ``class_names`` every label must lie in ``0..len(class_names) - 1`` (a class without
  training examples is allowed).
- TFDS datasets are TFDS's own prepared files, read as they are.
"""

import dataclasses
import os
import re
import zipfile

import numpy as np
import tensorflow as tf

from ssal_keras.data import fashion_mnist, image_folder

# What a run reads when it names no dataset: the built-in data of the quick start.
DEFAULT_DATASET = "fashion_mnist"
SPEC_FORMS = "fashion_mnist, tfds:NAME[:TRAIN_SPLIT:EVAL_SPLIT], folder:PATH, npz:PATH"
_HELD_OUT_SEED = 20200110  # fixed: the held-out part must not depend on the run's seed
_EVAL_ORDER_SEED = 1
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_PIXEL_CHECK_CHUNK = 4096  # images per step of the pixel check
#: A TFDS training split of one image size up to this many bytes of pixels (CIFAR's 50,000
#: images: 154 MB) is read into memory at load, which gives the full shuffle random access;
#: a larger one, or one of varying sizes (ImageNet), is read front to back from its files.
TFDS_IN_MEMORY_BYTES = 4 * 2**30
_VERSION = re.compile(r"[0-9*]+\.[0-9*]+\.[0-9*]+")
# TFDS datasets whose ``test`` split has no labels (-1): the default evaluation split is
# ``validation`` (imagenet2012 5.1.0 added an unlabelled test split).
_UNLABELLED_TEST_SPLIT = ("imagenet2012", "imagenet2012_subset", "imagenet2012_multilabel",
                          "imagenet2012_real", "imagenet2012_corrupted")


@dataclasses.dataclass
class Dataset:
    """A classification dataset: unbatched ``(image, label)`` splits of raw pixels.

    Attributes:
        train: tf.data.Dataset. ``(image, label)``: uint8 (float32 for float npz arrays)
            ``image_shape`` pixels in 0..255, int32 scalar label. Held-out part removed.
            With ``image_size``: images of their own height and width (``(None, None, C)``
            for sources of varying size), resized by the input pipelines.
        eval: tf.data.Dataset. The test (or validation) split, the same way.
        num_classes: int. Number of classes.
        class_names: list. A str per class id.
        image_shape: tuple. ``(height, width, channels)`` of the model's input: the images'
            own shape, or ``(image_size, image_size, channels)``.
        num_train: int. Examples in ``train`` (after the held-out part and the cap).
        num_eval: int. Examples in ``eval`` (after the cap).
        image_size: int or None. The side the input pipelines resize and crop every image to
            (``load(..., image_size=N)``); None: images are used at their own, common size.
        train_example_at: callable or None. Random access to ``train``: an int64 scalar
            tensor ``i`` (``0 <= i < num_train``) to the ``(image, label)`` that ``train``
            gives at position ``i``, usable in ``tf.data`` maps (the full shuffle of
            ``pipelines.train_pipeline``). None where the source is read front to back.
    """

    train: tf.data.Dataset
    eval: tf.data.Dataset
    num_classes: int
    class_names: list
    image_shape: tuple
    num_train: int
    num_eval: int
    image_size: int | None = None
    train_example_at: object = None


@dataclasses.dataclass
class _IndexedSplit:
    """A split held in memory (arrays or file names), read in any order.

    ``example_at``: an int64 scalar tensor (an index) to its ``(image, label)``, in ``tf.data``
    maps. ``seeded_order``: whether ``train_examples`` keeps the first N after a shuffle
    seeded by ``seed`` (False: in the source's own order, as TFDS's files have it).
    """

    count: int
    example_at: object  # callable: int64 scalar tensor -> (image, label)
    seeded_order: bool = True

    def read(self, indices):
        """The examples at ``indices`` (an int array), in that order, unbatched."""
        return tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64)).map(
            self.example_at, num_parallel_calls=tf.data.AUTOTUNE)

    def example_at_each(self, indices):
        """``example_at`` through ``indices``: position ``i`` gives example ``indices[i]``."""
        table = tf.constant(np.asarray(indices, np.int64))
        return lambda position: self.example_at(tf.gather(table, position))


@dataclasses.dataclass
class _StreamSplit:
    """A split read front to back (TFDS)."""

    count: int
    dataset: tf.data.Dataset


@dataclasses.dataclass
class _Source:
    train: object  # _IndexedSplit or _StreamSplit
    eval: object
    class_names: list
    image_shape: tuple


def load(spec, *, data_dir=None, train_examples=None, eval_examples=None,
         held_out_examples=0, seed=0, image_size=None, log=print):
    """Loads a dataset as unbatched splits of raw pixels (module docstring: specs, selection).

    Args:
        spec: str. ``"fashion_mnist"``, ``"tfds:NAME[:TRAIN_SPLIT:EVAL_SPLIT]"``,
            ``"folder:PATH"`` or ``"npz:PATH"``.
        data_dir: str or None. Folder of the Fashion-MNIST IDX files or of prepared TFDS
            datasets (None: Debian's folder, TFDS's default); unused by folder and npz.
        train_examples: int or None. Keep at most this many training examples.
        eval_examples: int or None. Keep at most this many evaluation examples.
        held_out_examples: int or None. Training examples set aside (never in ``train``), e.g.
            for the confusion matrix behind ``--groupings=auto``; None or 0: none.
        seed: int. Orders the training examples before ``train_examples`` (in-memory sources).
        image_size: int or None. Accept images of any height and width, to be resized by the
            input pipelines to ``image_size x image_size`` (module docstring); None: all
            images must share one size, the model's input size.
        log: callable. Prints a progress line while a large folder's files are checked.

    Returns:
        ``(dataset, held_out)``: a ``Dataset`` and the held-out unbatched
        ``tf.data.Dataset`` (None when ``held_out_examples`` is 0).

    Raises:
        ValueError: on a bad spec, argument or dataset content (module docstring), in one line.
        FileNotFoundError: if the dataset, or a file of it, is not there.
    """
    for name, value, least in (("train_examples", train_examples, 1),
                               ("eval_examples", eval_examples, 1),
                               ("held_out_examples", held_out_examples, 0),
                               ("image_size", image_size, 1)):
        if value is not None and (not isinstance(value, (int, np.integer))
                                  or isinstance(value, bool) or value < least):
            raise ValueError(f"`{name}` must be None or an int >= {least}. "
                             f"Received: {name}={value!r}")
    held_out_examples = held_out_examples or 0
    image_size = None if image_size is None else int(image_size)
    source = _read_source(spec, data_dir, mixed_sizes=image_size is not None, log=log)
    if held_out_examples >= source.train.count:
        raise ValueError(f"`held_out_examples`={held_out_examples} leaves no training example: "
                         f"{spec} has {source.train.count}.")
    train, held_out, num_train, train_example_at = _select_train(
        source.train, held_out_examples, train_examples, seed)
    eval_, num_eval = _select_eval(source.eval, eval_examples)
    if image_size is None:
        image_shape = tuple(int(d) for d in source.image_shape)
    else:
        image_shape = (image_size, image_size, int(source.image_shape[-1]))
    dataset = Dataset(train=train, eval=eval_, num_classes=len(source.class_names),
                      class_names=list(source.class_names), image_shape=image_shape,
                      num_train=num_train, num_eval=num_eval, image_size=image_size,
                      train_example_at=train_example_at)
    return dataset, held_out


def _read_source(spec, data_dir, mixed_sizes=False, log=print):
    """The ``_Source`` of ``spec``; ``mixed_sizes``: accept images of varying height and width
    (their ``image_shape`` is then ``(None, None, C)``); ``log``: progress of a folder's check."""
    scheme, _, rest = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if spec == "fashion_mnist":
        return _fashion_mnist_source(data_dir)
    if scheme == "tfds" and rest:
        return _tfds_source(rest, data_dir, mixed_sizes)
    if scheme == "folder" and rest:
        return _folder_source(os.path.expanduser(rest), mixed_sizes, log)
    if scheme == "npz" and rest:
        return _npz_source(os.path.expanduser(rest))
    raise ValueError(f"Unknown dataset {spec!r}; valid forms: {SPEC_FORMS}.")


# Selection ---------------------------------------------------------------------------------


def _held_out_indices(count, held_out_examples):
    return np.random.default_rng(_HELD_OUT_SEED).permutation(count)[:held_out_examples]


def _select_train(split, held_out_examples, train_examples, seed):
    """``(train, held_out or None, num_train, train_example_at or None)``; the module docstring
    says which examples."""
    held = _held_out_indices(split.count, held_out_examples)
    num_train = split.count - held_out_examples
    if train_examples is not None:
        num_train = min(num_train, train_examples)
    example_at = None
    if isinstance(split, _IndexedSplit):
        rest = np.setdiff1d(np.arange(split.count), held)
        if split.seeded_order:
            rest = np.random.default_rng(seed).permutation(rest)
        chosen = rest[:num_train]
        train, example_at = split.read(chosen), split.example_at_each(chosen)
        held_out = split.read(held) if held_out_examples else None
    else:
        train, held_out = _filter_stream(split.dataset, held, split.count)
        train = train.take(num_train)
    train = train.apply(tf.data.experimental.assert_cardinality(num_train))
    if held_out is not None:
        held_out = held_out.apply(tf.data.experimental.assert_cardinality(held_out_examples))
    return train, held_out, num_train, example_at


def _filter_stream(dataset, held, count):
    """Splits a stream by position: ``(the rest, the examples at positions held or None)``."""
    if not len(held):
        return dataset, None
    mask = np.zeros(count, dtype=bool)
    mask[held] = True
    mask = tf.constant(mask)
    numbered = dataset.enumerate()
    rest = numbered.filter(lambda i, example: tf.logical_not(tf.gather(mask, i)))
    chosen = numbered.take(int(held.max()) + 1).filter(lambda i, example: tf.gather(mask, i))
    drop_index = lambda i, example: example  # noqa: E731
    return rest.map(drop_index), chosen.map(drop_index)


def _select_eval(split, eval_examples):
    count = split.count if eval_examples is None else min(split.count, eval_examples)
    if isinstance(split, _IndexedSplit):
        order = np.arange(split.count)
        if split.seeded_order:
            order = np.random.default_rng(_EVAL_ORDER_SEED).permutation(split.count)
        eval_ = split.read(order[:count])
    else:
        eval_ = split.dataset.take(count)
    return eval_.apply(tf.data.experimental.assert_cardinality(count)), count


# In-memory sources: Fashion-MNIST IDX files, npz, folders ----------------------------------


def _array_split(images, labels, *, seeded_order=True):
    """An ``_IndexedSplit`` over arrays; non-uint8 images become float32."""
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    images, labels = tf.constant(images), tf.constant(labels.astype(np.int32))
    return _IndexedSplit(int(images.shape[0]),
                         lambda i: (tf.gather(images, i), tf.gather(labels, i)), seeded_order)


def _file_split(split, image_shape):
    paths, labels = tf.constant(split.paths), tf.constant(split.labels)

    def example_at(index):
        return image_folder.decode_file(tf.gather(paths, index), tf.gather(labels, index),
                                        image_shape=image_shape)

    return _IndexedSplit(len(split.paths), example_at)


def _fashion_mnist_source(data_dir):
    folders = [f for f in (data_dir, fashion_mnist.FASHION_MNIST_DIR) if f]
    for idx_folder in folders:
        if all(os.path.isfile(os.path.join(idx_folder, name))
               for pair in fashion_mnist.IDX_FILES.values() for name in pair):
            train, test = (fashion_mnist.load_fashion_mnist(s, data_dir=idx_folder)
                           for s in ("train", "test"))
            return _Source(_array_split(*train), _array_split(*test),
                           list(fashion_mnist.FASHION_MNIST_CLASSES), (28, 28, 1))
    try:
        return _tfds_source("fashion_mnist", data_dir)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: no IDX files in {' or '.join(folders)} and no prepared "
            f"TFDS fashion_mnist in {data_dir or 'TFDS default data_dir'}; install it with "
            "'apt-get install dataset-fashion-mnist' or pass --data_dir."
        ) from None


def _folder_source(path, mixed_sizes=False, log=print):
    class_names, train, eval_, image_shape = image_folder.read_folder(
        path, mixed_sizes=mixed_sizes, log=log)
    return _Source(_file_split(train, image_shape), _file_split(eval_, image_shape),
                   class_names, image_shape)


def _npz_source(path):
    files, arrays = _read_npz(path)
    missing = [k for k in _NPZ_KEYS if k not in files]
    if missing:
        raise ValueError(f"npz:{path} lacks {', '.join(missing)}; it holds {files} but needs "
                         f"{', '.join(_NPZ_KEYS)} (class_names optional).")
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    (x_train, y_train), (x_test, y_test) = (_npz_split(path, arrays, x, y)
                                            for x, y in (_NPZ_KEYS[:2], _NPZ_KEYS[2:]))
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"npz:{path}: x_train images are {x_train.shape[1:]} but x_test "
                         f"images {x_test.shape[1:]}; they must match.")
    num_classes = _npz_class_count(path, y_train, y_test, names)
    return _Source(_array_split(x_train, y_train), _array_split(x_test, y_test),
                   names or [str(c) for c in range(num_classes)], x_train.shape[1:])


def _read_npz(path):
    """``(names of all arrays, {name: array} of those used)``, read whole: a cut or damaged
    file fails here, at load, not mid-training."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"npz:{path}: no such file; pass a .npz holding "
                                f"{', '.join(_NPZ_KEYS)} (the keras.datasets layout).")
    try:
        arrays = np.load(path, allow_pickle=False)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise ValueError("one array, not an archive of named arrays")
        with arrays:
            used = [k for k in arrays.files if k in _NPZ_KEYS + ("class_names",)]
            return sorted(arrays.files), {k: arrays[k] for k in used}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # cut, damaged, pickled
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        if "pickle" in reason:  # numpy's own advice (allow_pickle) would run the file's code
            reason = "not an npz archive, or one of Python objects"
        raise ValueError(f"npz:{path}: truncated, damaged or not an npz file ({reason}); write "
                         "it again with numpy.savez (number arrays, class_names as str).") from None


def _npz_split(path, arrays, x_key, y_key):
    images, labels = arrays[x_key], arrays[y_key]
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or not len(images):
        raise ValueError(f"npz:{path}: {x_key} must be (N, H, W) or (N, H, W, C) with N > 0; "
                         f"received shape {images.shape}.")
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(f"npz:{path}: {y_key} must hold one integer per image; received "
                         f"{labels.dtype} {labels.shape} for {len(images)} images.")
    _check_pixels(path, x_key, images)
    return images, labels


def _check_pixels(path, key, images):
    """Refuses images that are not raw pixels 0..255 (NaN, inf, negative or over 255: e.g.
    normalised ones), naming the first such image, rather than training to a NaN loss."""
    if images.dtype.kind not in "uif":
        raise ValueError(f"npz:{path}: {key} holds {images.dtype} values; it needs numbers "
                         "(raw pixels 0..255).")
    if images.dtype == np.uint8:
        return  # always in range
    for start in range(0, len(images), _PIXEL_CHECK_CHUNK):  # bounded memory for big arrays
        chunk = images[start:start + _PIXEL_CHECK_CHUNK].reshape(-1, np.prod(images.shape[1:]))
        with np.errstate(invalid="ignore"):
            bad = ~((chunk >= 0) & (chunk <= 255)).all(axis=1)  # NaN compares False
        if bad.any():
            index = start + int(np.argmax(bad))
            image = images[index]
            what = ("NaN or infinite pixels" if not np.isfinite(image).all() else
                    f"pixels in [{image.min():g}, {image.max():g}]")
            raise ValueError(f"npz:{path}: {key}[{index}] has {what}; images must hold raw "
                             "pixels in 0..255 (not normalised ones): fix or drop that image.")


def _npz_class_count(path, y_train, y_test, names):
    """The number of classes, after checking every label against it (module docstring).

    Without ``names``: classes ``0..max(label)``, each of which must occur in ``y_train`` (a
    stray label, as 255 among 0..9, must not make a 256-class problem). With ``names``: labels
    in ``0..len(names) - 1``.
    """
    splits = (("y_train", y_train), ("y_test", y_test))
    for key, labels in splits:
        if labels.min() < 0:
            index = int(np.argmax(labels < 0))
            raise ValueError(f"npz:{path}: {key}[{index}] is {labels[index]}; labels are class "
                             "ids 0, 1, ...: fix or drop that example.")
    if names is not None:
        for key, labels in splits:
            if labels.max() >= len(names):
                index = int(np.argmax(labels >= len(names)))
                raise ValueError(f"npz:{path}: {key}[{index}] is {labels[index]}, outside "
                                 f"0..{len(names) - 1} (class_names has {len(names)} names); "
                                 "fix the label or add its class name.")
        return len(names)
    key, labels = max(splits, key=lambda split: split[1].max())
    index = int(np.argmax(labels))
    num_classes = int(labels[index]) + 1
    present = np.unique(y_train)  # sorted ids 0..num_classes - 1
    if len(present) < num_classes:
        gaps = np.flatnonzero(present != np.arange(len(present)))  # present[i] > i: i absent
        first_absent = int(gaps[0]) if len(gaps) else len(present)
        raise ValueError(
            f"npz:{path}: without class_names the classes are 0..{num_classes - 1} (the "
            f"largest label, {key}[{index}]), but {num_classes - len(present)} of them never "
            f"occur in y_train (first: {first_absent}); store class_names (one per class) in "
            "the npz, or fix the labels.")
    return num_classes


# TFDS ---------------------------------------------------------------------------------------


def _tfds_source(rest, data_dir, mixed_sizes=False):
    """A prepared TFDS dataset, ``rest`` = ``NAME[:VERSION][:TRAIN_SPLIT:EVAL_SPLIT]``."""
    import tensorflow_datasets as tfds

    name, train_split, eval_split = _parse_tfds(rest)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"tfds:{name}: TFDS has no such dataset; see tfds.list_builders() or "
                         "https://www.tensorflow.org/datasets/catalog.") from None
    info = builder.info
    image_key, label_key = _supervised_keys(name, info)
    eval_split = eval_split or _default_eval_split(name, info)
    for split in (train_split, eval_split):
        _check_split(name, info, split)
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    shape = tuple(image_feature.shape)
    if len(shape) != 3 or shape[-1] is None:
        raise ValueError(f"tfds:{name} has images of shape {shape}, not (H, W, C) with a known "
                         "number of channels; it is not an image classification set for this "
                         "program.")
    if None in shape and not mixed_sizes:
        raise ValueError(f"tfds:{name} has images of shape {shape}, not one static (H, W, C); "
                         "pass --image_size=N to resize them (load(..., image_size=N)).")
    if not hasattr(label_feature, "names"):
        raise ValueError(f"tfds:{name}: its label {label_key!r} is not a ClassLabel.")
    if str(builder.info.file_format).lower().endswith("array_record"):
        # ArrayRecord files (tfds build --file_format=array_record) are read through TFDS's
        # data source, any example by its index (TFDS has no tf.data reader for them).
        train, eval_ = (_data_source_split(builder.as_data_source(split=s),
                                           (image_key, label_key), shape)
                        for s in (train_split, eval_split))
    else:
        train, eval_ = (_tfds_split(builder, name, s, data_dir)
                        for s in (train_split, eval_split))
        train = _random_access(train, shape)
    return _Source(train, eval_, list(label_feature.names), shape)


def _random_access(split, shape):
    """A TFDS training split from TFRecord files with random access, for the full shuffle:
    read into memory when its images have one size and fit in ``TFDS_IN_MEMORY_BYTES``; else
    the stream as it was."""
    if None not in shape and split.count * int(np.prod(shape)) <= TFDS_IN_MEMORY_BYTES:
        return _in_memory(split)
    return split


def _data_source_split(source, keys, shape):
    """An ``_IndexedSplit`` over a TFDS data source (ArrayRecord files: any example by its
    index, decoded by TFDS in Python)."""
    image_key, label_key = keys

    dtype = np.uint8 if np.asarray(source[0][image_key]).dtype == np.uint8 else np.float32

    def read(index):  # as _supervised_example converts the streamed examples
        example = source[int(index)]
        return np.asarray(example[image_key]).astype(dtype), np.int32(example[label_key])

    def example_at(index):
        image, label = tf.numpy_function(read, [index], (tf.as_dtype(dtype), tf.int32),
                                         stateful=False)
        return tf.ensure_shape(image, shape), tf.ensure_shape(label, ())

    return _IndexedSplit(len(source), example_at, seeded_order=False)


def _in_memory(split):
    """A TFDS split of one image size read into memory (``_random_access``)."""
    images, labels = [], []
    for image_batch, label_batch in split.dataset.batch(4096).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return _array_split(np.concatenate(images), np.concatenate(labels), seeded_order=False)


def _parse_tfds(rest):
    parts = re.split(r":(?![^\[]*\])", rest)  # not the colons of slices like train[:90%]
    if len(parts) > 1 and _VERSION.fullmatch(parts[1]):
        parts = [f"{parts[0]}:{parts[1]}"] + parts[2:]
    if len(parts) == 1:
        return parts[0], "train", None
    if len(parts) == 3 and all(parts):
        return tuple(parts)
    raise ValueError(f"Bad TFDS spec 'tfds:{rest}'; use tfds:NAME or "
                     "tfds:NAME:TRAIN_SPLIT:EVAL_SPLIT.")


def _supervised_keys(name, info):
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"tfds:{name} has no (image, label) supervised keys "
                         f"(supervised_keys={keys}); it is not an image classification set.")
    return keys


def _default_eval_split(name, info):
    """``test``, or ``validation`` for a dataset without a labelled test split (imagenet2012's
    test split has no labels)."""
    splits = set(info.splits.keys())
    if name.split(":")[0].split("/")[0] in _UNLABELLED_TEST_SPLIT:
        return "validation"
    if not splits or "test" in splits:  # no split metadata under tfds.testing.mock_data
        return "test"
    if "validation" in splits:
        return "validation"
    raise ValueError(f"tfds:{name} has neither a test nor a validation split ({sorted(splits)}); "
                     "name the splits: tfds:NAME:TRAIN_SPLIT:EVAL_SPLIT.")


def _check_split(name, info, split):
    available = set(info.splits.keys())
    for part in split.split("+"):
        base = part.split("[")[0].strip()
        if available and base not in available:
            raise ValueError(f"tfds:{name} has no split {base!r}; its splits: {sorted(available)}.")


def _tfds_split(builder, name, split, data_dir):
    try:
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except AssertionError:  # what TFDS raises for a dataset not prepared
        root = data_dir or "TFDS default data_dir (~/tensorflow_datasets)"
        raise FileNotFoundError(
            f"tfds:{name} is not prepared in {root}; prepare it once with 'tfds build {name} "
            f"--data_dir=DIR' and pass --data_dir=DIR (this program never downloads)."
        ) from None
    dataset = dataset.map(_supervised_example, num_parallel_calls=tf.data.AUTOTUNE)
    return _StreamSplit(_tfds_count(builder.info, split, dataset), dataset)


def _supervised_example(image, label):
    if image.dtype != tf.uint8:
        image = tf.cast(image, tf.float32)
    return image, tf.cast(label, tf.int32)


def _tfds_count(info, split, dataset):
    """Exact example count: split metadata, else cardinality, else one counting pass (mocks)."""
    if info.splits:
        try:
            return int(info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError):
            pass
    count = int(dataset.cardinality())
    if count >= 0:
        return count
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
