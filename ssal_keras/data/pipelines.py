"""Input pipelines: shuffling, the authors' augmentation, batching, per-replica sharding.

Augmentation lives here, in ``tf.data``, not in the model: it cannot be XLA compiled, and the
exported model must not contain it (PITFALLS.md). Images stay raw pixels (0..255, float32);
normalisation is the model's first layer (``backbones.build(..., normalization=...)``).

Augmentations (``augment``):

- ``"shift_flip"``: the authors' CIFAR augmentation (SPEC section 5): a random translation of
  up to ``MAX_SHIFT`` = 5 pixels in x and y (integer, uniform in -5..5) with reflect fill, and a
  random horizontal flip. The translation is a reflect-pad by 5 then a random crop back to
  H x W. "Reflect" is meant as Keras's fill mode of that name (``d c b a | a b c d``, the
  edge pixel repeated), which is ``tf.pad``'s ``SYMMETRIC`` mode.
- ``"shift"``: the translation only. Use it for Fashion-MNIST (and digits). Flipping never
  changes a Fashion-MNIST label, but the images are centred and canonically oriented: in the
  test split, 99.8% of sneakers, 100% of ankle boots and 93% of sandals match their class's
  mean image better than their own mirror image does (all shoes point the same way), while the
  garments and bags are nearly mirror-symmetric (class means differ from their mirror by ~7%).
  So a flip is almost a no-op for the garments and, for the footwear (the classes confused with
  one another), makes images the test set never shows: an invariance to learn that is never
  asked for, which costs capacity and time in short runs. For digits a flip can change the
  class. ``default_augmentation`` picks ``"shift"`` for these datasets.
- ``"none"``.

The augmentation runs on whole batches (vectorised: a gather per axis), each image with its own
shift and flip, from stateless ops seeded per batch by a seeded random stream that changes every
epoch: the same ``seed`` gives the same batches.

Images of varying size (``image_size=N``: a ``Dataset`` loaded with ``load(...,
image_size=N)``, or the keyword of the pipelines for a raw ``tf.data.Dataset``): every image
becomes ``N x N`` before batching, one example at a time (``num_parallel_calls=AUTOTUNE``),
the ImageNet way (SPEC section 5, ResNet50 ImageNet; the transforms of the reference
TensorFlow and PyTorch ResNet50 recipes), bilinear resizing, pixels kept in 0..255 float32:

- evaluation (``resize_and_center_crop``): the shorter side resized to
  ``round(N / EVAL_CROP_FRACTION)`` (0.875: 256 for N = 224), aspect ratio kept, then the
  central ``N x N`` crop.
- training, ``"shift_flip"``: a random-resized crop (``random_resized_crop``: a window of
  8% to 100% of the image's area and aspect ratio 3/4 to 4/3, drawn by
  ``tf.image.stateless_sample_distorted_bounding_box``, the whole image after 100 failed
  attempts) resized to ``N x N``, then a random horizontal flip. ``"shift"``: the crop only,
  no flip. ``"none"``: the evaluation transform. The 5-pixel shift is not applied: the crop
  moves and scales the content already.
  Each example's crop and flip are seeded by the same kind of seeded random stream (one seed
  per example instead of one per batch): the same ``seed`` gives the same batches.
"""

import numpy as np
import tensorflow as tf

from ssal_keras.data.sources import Dataset

AUGMENTATIONS = ("none", "shift", "shift_flip")
MAX_SHIFT = 5
EVAL_CROP_FRACTION = 0.875  # evaluation: central N x N of the shorter side resized to N / 0.875
CROP_AREA_RANGE = (0.08, 1.0)  # random-resized crop: fraction of the image's area
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)  # random-resized crop: width / height
CROP_MAX_ATTEMPTS = 100  # then the whole image
RESIZE_METHOD = "bilinear"
_NO_FLIP_DATASETS = ("fashion_mnist", "mnist", "emnist", "kmnist", "svhn_cropped")
_PIPELINE_SEED_STRIDE = 1_000_003


def default_augmentation(spec):
    """The augmentation a dataset spec calls for: ``"shift"`` where flips are wrong, else the
    authors' ``"shift_flip"`` (module docstring).

    Args:
        spec: str. A ``load`` spec, e.g. ``"fashion_mnist"`` or ``"tfds:cifar100"``.

    Returns:
        str, one of ``AUGMENTATIONS``.
    """
    name = spec.split(":")[1] if spec.startswith("tfds:") else spec
    return "shift" if name.split("/")[0] in _NO_FLIP_DATASETS else "shift_flip"


def augment_batch(images, seed, *, augment):
    """Augments a batch of images, each with its own random shift and flip (module docstring).

    Args:
        images: tensor ``(B, H, W, C)``, any dtype; H and W larger than ``MAX_SHIFT``.
        seed: int tensor of shape ``(2,)``. Seed of the stateless random ops.
        augment: str. One of ``AUGMENTATIONS``.

    Returns:
        The augmented images, same shape and dtype.
    """
    _check_augment(augment)
    if augment == "none":
        return images
    m = MAX_SHIFT
    shift_y, shift_x, flip = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    count = tf.shape(images)[:1]
    padded = tf.pad(images, [[0, 0], [m, m], [m, m], [0, 0]], mode="SYMMETRIC")
    for axis, shift_seed in ((1, shift_y), (2, shift_x)):  # crop back at a random offset
        offset = tf.random.stateless_uniform(count, shift_seed, 0, 2 * m + 1, dtype=tf.int32)
        window = offset[:, tf.newaxis] + tf.range(tf.shape(images)[axis])[tf.newaxis]
        padded = tf.gather(padded, window, axis=axis, batch_dims=1)
    if augment == "shift_flip":
        flipped = tf.random.stateless_uniform(count, flip) < 0.5
        padded = tf.where(flipped[:, tf.newaxis, tf.newaxis, tf.newaxis],
                          tf.reverse(padded, axis=[2]), padded)
    return tf.ensure_shape(padded, images.shape)


def random_resized_crop(image, seed, *, image_size):
    """A random window of ``image`` resized to ``image_size x image_size`` (module docstring).

    Args:
        image: tensor ``(H, W, C)``, any size and dtype.
        seed: int tensor of shape ``(2,)``. Seed of the stateless window choice.
        image_size: int. Side of the result.

    Returns:
        float32 ``(image_size, image_size, C)``, in the input's value range.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE, max_attempts=CROP_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    crop = _resize(tf.slice(image, begin, size), image_size, image_size)
    return tf.ensure_shape(crop, (image_size, image_size, image.shape[-1]))


def resize_and_center_crop(image, *, image_size):
    """The evaluation transform: shorter side to ``round(image_size / EVAL_CROP_FRACTION)``
    (aspect ratio kept, each side rounded to the nearest pixel), then the central
    ``image_size x image_size`` (offsets rounded down).

    Args:
        image: tensor ``(H, W, C)``, any size and dtype.
        image_size: int. Side of the result.

    Returns:
        float32 ``(image_size, image_size, C)``, in the input's value range.
    """
    short_side = int(round(image_size / EVAL_CROP_FRACTION))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    scale = short_side / tf.cast(tf.minimum(height, width), tf.float64)
    scaled = lambda side: tf.maximum(  # noqa: E731
        tf.cast(tf.round(tf.cast(side, tf.float64) * scale), tf.int32), short_side)
    new_height, new_width = scaled(height), scaled(width)
    resized = _resize(image, new_height, new_width)
    top, left = (new_height - image_size) // 2, (new_width - image_size) // 2
    crop = resized[top:top + image_size, left:left + image_size]
    return tf.ensure_shape(crop, (image_size, image_size, image.shape[-1]))


def _resize(image, height, width):
    resized = tf.image.resize(image, tf.stack([height, width]), method=RESIZE_METHOD)
    return tf.cast(resized, tf.float32)


def _train_transform(image, seed, *, image_size, augment):
    """One example's training transform for ``image_size`` (module docstring)."""
    if augment == "none":
        return resize_and_center_crop(image, image_size=image_size)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_resized_crop(image, crop_seed, image_size=image_size)
    if augment == "shift_flip":
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def train_pipeline(dataset, *, batch_size, augment, seed, shuffle_buffer=10000,
                   drop_remainder=True, repeat=False, image_size=None):
    """Shuffled, augmented, batched training input.

    Args:
        dataset: ``Dataset`` (its ``train`` split) or an unbatched ``tf.data.Dataset`` of
            ``(image, label)``.
        batch_size: int. Examples per batch.
        augment: str. One of ``AUGMENTATIONS``.
        seed: int. Seeds the shuffle and the augmentation (both change every epoch).
        shuffle_buffer: int. Shuffle buffer size (examples).
        drop_remainder: bool. Drop the last partial batch (keep True under a strategy).
        repeat: bool. Repeat forever (reshuffled each pass).
        image_size: int or None. Random-resized crops of this side, for images of varying
            size (module docstring); None: a ``Dataset``'s own ``image_size``, else the images'
            common size is kept. Given with a ``Dataset``, it must equal its ``image_size``.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 images (B, H, W, C) in 0..255, int32 labels (B,))``;
        ``H = W = image_size`` with an ``image_size``.
    """
    _check_augment(augment)
    _check_positive("batch_size", batch_size)
    examples, image_size = _split_and_size(dataset, "train", image_size)
    examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        examples = examples.repeat()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    if image_size is not None:  # per example, before batching: the sizes vary
        transformed = tf.data.Dataset.zip((examples, seeds)).map(
            lambda example, s: (_train_transform(example[0], s, image_size=image_size,
                                                 augment=augment), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        batches = transformed.batch(batch_size, drop_remainder=drop_remainder)
        return batches.prefetch(tf.data.AUTOTUNE)
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)
    augmented = tf.data.Dataset.zip((batches, seeds)).map(
        lambda batch, s: _to_float(augment_batch(batch[0], s, augment=augment), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return augmented.prefetch(tf.data.AUTOTUNE)


def eval_pipeline(dataset, *, batch_size, image_size=None):
    """Batched evaluation input, every example once (the last batch may be partial).

    Args:
        dataset: ``Dataset`` (its ``eval`` split) or an unbatched ``tf.data.Dataset``.
        batch_size: int. Examples per batch.
        image_size: int or None. Resize and centre-crop every image to this side
            (``resize_and_center_crop``); None: a ``Dataset``'s own ``image_size``, else the
            images' common size is kept. Given with a ``Dataset``, it must equal its
            ``image_size``.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 images in 0..255, int32 labels)``.
    """
    _check_positive("batch_size", batch_size)
    examples, image_size = _split_and_size(dataset, "eval", image_size)
    if image_size is not None:  # per example, before batching: the sizes vary
        examples = examples.map(
            lambda image, label: (resize_and_center_crop(image, image_size=image_size), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return examples.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    batches = examples.batch(batch_size)
    return batches.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def distributed_train_dataset(strategy, dataset, *, global_batch_size, augment, seed,
                              shuffle_buffer=10000, repeat=False, skip_steps=0,
                              image_size=None):
    """``train_pipeline`` per input pipeline, through ``distribute_datasets_from_function``.

    Each input pipeline (one per worker) reads its shard of the examples
    (``shard(num_input_pipelines, input_pipeline_id)``; no shard with one pipeline) and batches
    ``global_batch_size / num_replicas_in_sync`` per replica, dropping the remainder. Pipeline
    ``i`` is seeded ``seed + 1000003 * i`` (pipeline 0 equals ``train_pipeline(seed=seed)``).
    With several workers the shards differ in size: prefer ``repeat=True`` and a fixed number
    of steps per epoch (``num_train // global_batch_size``).

    Args:
        strategy: tf.distribute.Strategy.
        dataset: ``Dataset`` (its ``train`` split) or an unbatched ``tf.data.Dataset``.
        global_batch_size: int. Examples per step over all replicas; a multiple of
            ``strategy.num_replicas_in_sync``.
        augment: str. One of ``AUGMENTATIONS``.
        seed: int. Base seed of the shuffle and the augmentation.
        shuffle_buffer: int. Shuffle buffer size per pipeline.
        repeat: bool. Repeat forever.
        skip_steps: int. Global steps to skip: a resumed run continues its epoch where the
            checkpoint left it (the order is the same for the same seed).
        image_size: int or None. As in ``train_pipeline``.

    Returns:
        A ``tf.distribute.DistributedDataset``.
    """
    _check_global_batch(strategy, global_batch_size)
    examples, image_size = _split_and_size(dataset, "train", image_size)

    def input_fn(context):
        shard = examples
        if context.num_input_pipelines > 1:
            shard = shard.shard(context.num_input_pipelines, context.input_pipeline_id)
        batches = train_pipeline(
            shard, batch_size=context.get_per_replica_batch_size(global_batch_size),
            augment=augment, seed=seed + _PIPELINE_SEED_STRIDE * context.input_pipeline_id,
            shuffle_buffer=shuffle_buffer, drop_remainder=True, repeat=repeat,
            image_size=image_size,
        )
        # A global step takes one batch per replica, and a pipeline feeds several replicas.
        replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return batches.skip(skip_steps * replicas_per_pipeline)

    return strategy.distribute_datasets_from_function(input_fn)


def distributed_eval_dataset(strategy, dataset, *, global_batch_size, image_size=None):
    """``eval_pipeline`` split across replicas, every example exactly once.

    Uses ``strategy.experimental_distribute_dataset`` on the global batches of
    ``eval_pipeline``: TF splits each global batch between the replicas, the last partial one
    too, where a replica may receive an empty batch (0 examples). So the steps are the batches
    of a one-device evaluation, and sums over replicas (correct predictions, example counts)
    are exact; do not average per-replica means. Several workers shard by data
    (``AutoShardPolicy.DATA``): no example is read twice or lost. (Training uses
    ``distribute_datasets_from_function`` instead, for per-worker input pipelines.)

    Args:
        strategy: tf.distribute.Strategy.
        dataset: ``Dataset`` (its ``eval`` split) or an unbatched ``tf.data.Dataset``.
        global_batch_size: int. Examples per step over all replicas; a multiple of
            ``strategy.num_replicas_in_sync``.
        image_size: int or None. As in ``eval_pipeline``.

    Returns:
        A ``tf.distribute.DistributedDataset``.
    """
    _check_global_batch(strategy, global_batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = eval_pipeline(dataset, batch_size=global_batch_size, image_size=image_size)
    batches = batches.with_options(options)
    return strategy.experimental_distribute_dataset(batches)


def channel_statistics(dataset, *, max_examples=50000):
    """Per-channel mean and standard deviation of the pixels, in raw-pixel units.

    One streaming pass over at most ``max_examples`` examples, summed in float64. The result
    feeds ``backbones.build(..., normalization=(mean, std))`` (the paper's mean/std runs).
    Images of varying size are summed as they are (unresized: every pixel counts once).

    Args:
        dataset: ``Dataset`` (its ``train`` split) or an unbatched ``tf.data.Dataset``.
        max_examples: int. Examples read, from the start of the split.

    Returns:
        ``(mean, std)``: two tuples of floats, one per channel.
    """
    _check_positive("max_examples", max_examples)

    def sums(images, labels):
        pixels = tf.reshape(tf.cast(images, tf.float64), [-1, tf.shape(images)[-1]])
        return (tf.reduce_sum(pixels, 0), tf.reduce_sum(tf.square(pixels), 0),
                tf.cast(tf.shape(pixels)[0], tf.float64))

    def add_up(*batched):
        return tuple(tf.reduce_sum(t, 0) for t in batched)

    examples = _split(dataset, "train").take(max_examples)
    if _same_size(examples):
        batches = examples.batch(1024).map(sums, num_parallel_calls=tf.data.AUTOTUNE)
    else:  # images of varying size cannot be batched: sum each, then add up
        batches = examples.map(sums, num_parallel_calls=tf.data.AUTOTUNE).batch(1024).map(add_up)
    total = total_squares = count = 0.0
    for sums_, squares, n in batches:
        total, total_squares = total + sums_.numpy(), total_squares + squares.numpy()
        count += float(n)
    if not count:
        raise ValueError("channel_statistics received an empty dataset.")
    mean = total / count
    std = np.sqrt(np.maximum(total_squares / count - mean**2, 0.0))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _split(dataset, name):
    if isinstance(dataset, Dataset):
        return getattr(dataset, name)
    if isinstance(dataset, tf.data.Dataset):
        return dataset
    raise TypeError(f"Expected a data.Dataset or a tf.data.Dataset. Received: {type(dataset)}")


def _same_size(examples):
    """Whether the images of an unbatched dataset have one static height and width."""
    shape = examples.element_spec[0].shape
    return shape.rank is not None and shape.rank >= 2 and shape[:-1].is_fully_defined()


def _split_and_size(dataset, name, image_size):
    """``(split, image_size)``: the unbatched split and the side to resize to (or None)."""
    split = _split(dataset, name)
    if image_size is not None:
        _check_positive("image_size", image_size)
        image_size = int(image_size)
    if isinstance(dataset, Dataset):
        if image_size is None:
            image_size = dataset.image_size
        elif image_size != dataset.image_size:
            raise ValueError(f"`image_size`={image_size} differs from the Dataset's "
                             f"image_size={dataset.image_size}; pass image_size=None, or load "
                             "the dataset with the size wanted.")
    if image_size is None and not _same_size(split):
        raise ValueError(f"The images vary in size (element shape "
                         f"{split.element_spec[0].shape}); pass image_size=N to resize them "
                         "(the Dataset's image_size, from load(..., image_size=N)).")
    return split, image_size


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def _check_augment(augment):
    if augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS}. Received: augment={augment!r}")


def _check_positive(name, value):
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")


def _check_global_batch(strategy, global_batch_size):
    _check_positive("global_batch_size", global_batch_size)
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"`global_batch_size`={global_batch_size} does not divide across "
                         f"{replicas} replicas; use a multiple of {replicas}.")
