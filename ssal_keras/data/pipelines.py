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
"""

import numpy as np
import tensorflow as tf

from ssal_keras.data.sources import Dataset

AUGMENTATIONS = ("none", "shift", "shift_flip")
MAX_SHIFT = 5
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


def train_pipeline(dataset, *, batch_size, augment, seed, shuffle_buffer=10000,
                   drop_remainder=True, repeat=False):
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

    Returns:
        A ``tf.data.Dataset`` of ``(float32 images (B, H, W, C) in 0..255, int32 labels (B,))``.
    """
    _check_augment(augment)
    _check_positive("batch_size", batch_size)
    examples = _split(dataset, "train").shuffle(shuffle_buffer, seed=seed,
                                                reshuffle_each_iteration=True)
    if repeat:
        examples = examples.repeat()
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    augmented = tf.data.Dataset.zip((batches, seeds)).map(
        lambda batch, s: _to_float(augment_batch(batch[0], s, augment=augment), batch[1]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return augmented.prefetch(tf.data.AUTOTUNE)


def eval_pipeline(dataset, *, batch_size):
    """Batched evaluation input, every example once (the last batch may be partial).

    Args:
        dataset: ``Dataset`` (its ``eval`` split) or an unbatched ``tf.data.Dataset``.
        batch_size: int. Examples per batch.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 images in 0..255, int32 labels)``.
    """
    _check_positive("batch_size", batch_size)
    batches = _split(dataset, "eval").batch(batch_size)
    return batches.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def distributed_train_dataset(strategy, dataset, *, global_batch_size, augment, seed,
                              shuffle_buffer=10000, repeat=False, skip_steps=0):
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

    Returns:
        A ``tf.distribute.DistributedDataset``.
    """
    _check_global_batch(strategy, global_batch_size)
    examples = _split(dataset, "train")

    def input_fn(context):
        shard = examples
        if context.num_input_pipelines > 1:
            shard = shard.shard(context.num_input_pipelines, context.input_pipeline_id)
        batches = train_pipeline(
            shard, batch_size=context.get_per_replica_batch_size(global_batch_size),
            augment=augment, seed=seed + _PIPELINE_SEED_STRIDE * context.input_pipeline_id,
            shuffle_buffer=shuffle_buffer, drop_remainder=True, repeat=repeat,
        )
        # A global step takes one batch per replica, and a pipeline feeds several replicas.
        replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return batches.skip(skip_steps * replicas_per_pipeline)

    return strategy.distribute_datasets_from_function(input_fn)


def distributed_eval_dataset(strategy, dataset, *, global_batch_size):
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

    Returns:
        A ``tf.distribute.DistributedDataset``.
    """
    _check_global_batch(strategy, global_batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = eval_pipeline(dataset, batch_size=global_batch_size).with_options(options)
    return strategy.experimental_distribute_dataset(batches)


def channel_statistics(dataset, *, max_examples=50000):
    """Per-channel mean and standard deviation of the pixels, in raw-pixel units.

    One streaming pass over at most ``max_examples`` examples, summed in float64. The result
    feeds ``backbones.build(..., normalization=(mean, std))`` (the paper's mean/std runs).

    Args:
        dataset: ``Dataset`` (its ``train`` split) or an unbatched ``tf.data.Dataset``.
        max_examples: int. Examples read, from the start of the split.

    Returns:
        ``(mean, std)``: two tuples of floats, one per channel.
    """
    _check_positive("max_examples", max_examples)

    def batch_sums(images, labels):
        pixels = tf.reshape(tf.cast(images, tf.float64), [-1, tf.shape(images)[-1]])
        return (tf.reduce_sum(pixels, 0), tf.reduce_sum(tf.square(pixels), 0),
                tf.cast(tf.shape(pixels)[0], tf.float64))

    batches = _split(dataset, "train").take(max_examples).batch(1024)
    total = total_squares = count = 0.0
    for sums, squares, n in batches.map(batch_sums, num_parallel_calls=tf.data.AUTOTUNE):
        total, total_squares = total + sums.numpy(), total_squares + squares.numpy()
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
