"""Input pipelines: shuffling, the authors' augmentation, batching, per-replica sharding.

Augmentation lives here, in ``tf.data``, not in the model: it cannot be XLA compiled, and the
exported model must not contain it (docs/stack_notes.md, section 5). Images stay raw pixels (0..255,
float32); normalisation is the model's first layer (``backbones.build(..., normalization=...)``).

Augmentations (``augment``):

- ``"shift_flip"``: the authors' CIFAR augmentation (docs/authors_settings.md, section 7.1):
  Keras's ``ImageDataGenerator(width_shift_range=5, height_shift_range=5,
  horizontal_flip=True, fill_mode='reflect')``. With an *integer* range, keras_preprocessing
  draws each shift as ``choice(range(5)) * choice([-1, +1])``: the row and the column shift
  are integers in -4..+4, drawn independently, with P(0) = 0.2 and P(+-k) = 0.1 for
  k = 1..4 (a shift of 5 never occurs; ``MAX_SHIFT`` = 4). Here each shift is
  ``magnitude * sign``, the magnitude uniform in 0..4 and the sign +-1 with probability 1/2:
  that distribution exactly. It is symmetric, so which way a positive shift moves the content
  (Keras's convention or its mirror) does not matter. The translation is a pad by 4 then a
  crop back to H x W at the drawn offset. The fill is Keras's (scipy's) ``reflect`` mode,
  half-sample symmetric (``... b a | a b ...``, the edge pixel repeated), which is ``tf.pad``'s
  ``SYMMETRIC`` mode (not numpy's or PyTorch's "reflect"). Then a horizontal flip, p = 0.5.
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
the ImageNet way (docs/authors_settings.md, section 7.2; the transforms of the reference
TensorFlow and PyTorch ResNet50 recipes), bilinear resizing, pixels kept in 0..255 float32:

- evaluation (``resize_and_center_crop``): the shorter side resized to
  ``round(N / EVAL_CROP_FRACTION)`` (0.875: 256 for N = 224), aspect ratio kept, then the
  central ``N x N`` crop.
- training, ``"shift_flip"``: a random-resized crop (``random_resized_crop``) resized to
  ``N x N``, then, with ``color_jitter > 0``, a colour jitter (``random_color_jitter``), then
  a random horizontal flip (p = 0.5). ``"shift"``: the same without the flip. ``"none"``: the
  evaluation transform (no crop, jitter or flip). The 4-pixel shift is not applied: the crop
  moves and scales the content already.

  - ``crop_area=None`` (default): the TensorFlow (Inception) crop,
    ``tf.image.stateless_sample_distorted_bounding_box``: 8% to 100% of the image's area,
    aspect ratio 3/4 to 4/3, the whole image after 100 failed attempts.
  - ``crop_area=(min, max)``: torchvision's ``RandomResizedCrop(N, scale=(min, max))``
    (``get_params``): up to 10 tries of an area uniform in ``min..max`` of the image's and an
    aspect ratio (width / height) log-uniform in 3/4..4/3, ``w = round(sqrt(area * ratio))``,
    ``h = round(sqrt(area / ratio))``; the first that fits (``0 < w <= W``, ``0 < h <= H``) is
    placed uniformly; if none fits, the largest centred crop with the aspect ratio clamped to
    3/4..4/3 (the whole image when its own ratio is in range). ``max`` may exceed 1: such
    areas never fit and are redrawn. The authors' ImageNet loader
    (docs/authors_settings.md, section 7.2) uses ``(0.3, 4/3)``; torchvision's default is
    ``(0.08, 1)``.
  - ``color_jitter=s`` (> 0): torchvision's ``ColorJitter(brightness=s, contrast=s,
    saturation=s, hue=0)`` (the authors': 0.4): three factors, each uniform in
    ``1 - s .. 1 + s``, applied in a random order per image: brightness (blend with black),
    contrast (blend with the mean of the grayscale image), saturation (blend with the
    grayscale image), each clamped to 0..255.

  Each example's crop, jitter and flip are seeded by the same kind of seeded random stream
  (one seed per example instead of one per batch): the same ``seed`` gives the same batches.
"""

import numpy as np
import tensorflow as tf

from ssal_keras.data.sources import Dataset

AUGMENTATIONS = ("none", "shift", "shift_flip")
MAX_SHIFT = 4  # Keras's integer shift range 5 draws choice(range(5)) * +-1: at most 4
EVAL_CROP_FRACTION = 0.875  # evaluation: central N x N of the shorter side resized to N / 0.875
CROP_AREA_RANGE = (0.08, 1.0)  # random-resized crop: fraction of the image's area
CROP_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)  # random-resized crop: width / height
CROP_MAX_ATTEMPTS = 100  # then the whole image
TORCHVISION_CROP_ATTEMPTS = 10  # crop_area=(min, max): then the centre crop
GRAYSCALE_WEIGHTS = (0.299, 0.587, 0.114)  # PIL's convert("L") (ITU-R 601-2 luma)
PIXEL_RANGE = (0.0, 255.0)  # raw pixels: the colour jitter clamps to this
RESIZE_METHOD = "bilinear"
_NO_FLIP_DATASETS = ("fashion_mnist", "mnist", "emnist", "kmnist", "svhn_cropped")
_PIPELINE_SEED_STRIDE = 1_000_003
SHUFFLE_FORMS = "full, or buffer:N (N >= 1 examples; buffer:1 keeps the source's order)"
#: The shuffle of runs recorded before ``--shuffle`` existed (a 10,000-example buffer).
LEGACY_SHUFFLE = "buffer:10000"


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

    Each image's row and column shifts are drawn independently as ``magnitude * sign``, the
    magnitude uniform in ``0..MAX_SHIFT`` (4) and the sign +-1 with probability 1/2: Keras's
    integer ``width_shift_range=5`` / ``height_shift_range=5`` exactly (P(0) = 0.2,
    P(+-k) = 0.1). The distribution is symmetric, so the direction convention does not
    matter. The fill is half-sample symmetric (``tf.pad`` ``SYMMETRIC``, Keras's "reflect").

    Args:
        images: tensor ``(B, H, W, C)``, any dtype; H and W at least ``MAX_SHIFT``.
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
        magnitude_seed, sign_seed = tf.unstack(
            tf.random.experimental.stateless_split(shift_seed, 2))
        magnitude = tf.random.stateless_uniform(count, magnitude_seed, 0, m + 1, dtype=tf.int32)
        sign = 2 * tf.random.stateless_uniform(count, sign_seed, 0, 2, dtype=tf.int32) - 1
        offset = m + magnitude * sign  # 0..2m; the content moves by -(offset - m)
        window = offset[:, tf.newaxis] + tf.range(tf.shape(images)[axis])[tf.newaxis]
        padded = tf.gather(padded, window, axis=axis, batch_dims=1)
    if augment == "shift_flip":
        flipped = tf.random.stateless_uniform(count, flip) < 0.5
        padded = tf.where(flipped[:, tf.newaxis, tf.newaxis, tf.newaxis],
                          tf.reverse(padded, axis=[2]), padded)
    return tf.ensure_shape(padded, images.shape)


def random_resized_crop(image, seed, *, image_size, crop_area=None):
    """A random window of ``image`` resized to ``image_size x image_size`` (module docstring).

    Args:
        image: tensor ``(H, W, C)``, any size and dtype.
        seed: int tensor of shape ``(2,)``. Seed of the stateless window choice.
        image_size: int. Side of the result.
        crop_area: None or ``(min, max)``. None: TensorFlow's Inception crop (8% to 100% of
            the area, ``tf.image.stateless_sample_distorted_bounding_box``). ``(min, max)``,
            ``0 < min <= max``: torchvision's ``RandomResizedCrop(scale=(min, max))``
            (``crop_window``); the authors' ImageNet crop is ``(0.3, 4/3)``.

    Returns:
        float32 ``(image_size, image_size, C)``, in the input's value range.
    """
    crop_area = _check_crop_area(crop_area)
    if crop_area is None:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
            min_object_covered=0.0, aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
            area_range=CROP_AREA_RANGE, max_attempts=CROP_MAX_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.slice(image, begin, size)
    else:
        top, left, height, width = crop_window(tf.shape(image), seed, crop_area=crop_area)
        window = image[top:top + height, left:left + width]
    crop = _resize(window, image_size, image_size)
    return tf.ensure_shape(crop, (image_size, image_size, image.shape[-1]))


def crop_window(shape, seed, *, crop_area):
    """torchvision's ``RandomResizedCrop.get_params``, stateless: the window of a crop.

    Up to ``TORCHVISION_CROP_ATTEMPTS`` (10) tries, all drawn at once: an area uniform in
    ``crop_area`` times the image's, an aspect ratio (width / height) log-uniform in
    ``CROP_ASPECT_RATIO_RANGE``, ``w = round(sqrt(area * ratio))``,
    ``h = round(sqrt(area / ratio))`` (half to even, as Python's ``round``). The first try
    with ``0 < w <= W`` and ``0 < h <= H`` is placed with its top-left corner uniform over the
    positions that fit. If none fits: the image's aspect ratio clamped to the range, the
    largest such window (``round``ed), centred (offsets rounded down); the whole image when
    its ratio is in range.

    Args:
        shape: int tensor ``(H, W, C)`` (or ``(H, W)``), the image's shape.
        seed: int tensor of shape ``(2,)``. Seed of the stateless draws.
        crop_area: ``(min, max)``, ``0 < min <= max``. Fraction of the image's area.

    Returns:
        ``(top, left, height, width)``: four int32 scalars.
    """
    low, high = _check_crop_area(crop_area)
    ratio_low, ratio_high = CROP_ASPECT_RATIO_RANGE
    height, width = tf.cast(shape[0], tf.int32), tf.cast(shape[1], tf.int32)
    height_f, width_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area_seed, ratio_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 4))
    tries = [TORCHVISION_CROP_ATTEMPTS]
    area = height_f * width_f * tf.random.stateless_uniform(
        tries, area_seed, low, high, dtype=tf.float64)
    ratio = tf.exp(tf.random.stateless_uniform(
        tries, ratio_seed, np.log(ratio_low), np.log(ratio_high), dtype=tf.float64))
    widths = tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32)
    heights = tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32)
    fits = (widths > 0) & (widths <= width) & (heights > 0) & (heights <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    def drawn():
        h, w = heights[first], widths[first]
        top = tf.random.stateless_uniform([], top_seed, 0, height - h + 1, dtype=tf.int32)
        left = tf.random.stateless_uniform([], left_seed, 0, width - w + 1, dtype=tf.int32)
        return top, left, h, w

    def centre():
        in_ratio = width_f / height_f
        h = tf.where(in_ratio < ratio_low,
                     tf.cast(tf.round(width_f / ratio_low), tf.int32), height)
        w = tf.where(in_ratio > ratio_high,
                     tf.cast(tf.round(height_f * ratio_high), tf.int32), width)
        return (height - h) // 2, (width - w) // 2, h, w

    return tf.cond(tf.reduce_any(fits), drawn, centre)


def random_color_jitter(image, seed, *, strength):
    """torchvision's ``ColorJitter(brightness=s, contrast=s, saturation=s, hue=0)``, stateless.

    Three factors, each uniform in ``1 - s .. 1 + s``, and a random order of the three
    operations (``color_jitter_parameters``); each operation blends the image with a
    reference and clamps to ``PIXEL_RANGE`` (0..255): brightness with black, contrast with the
    mean of the grayscale image, saturation with the grayscale image (PIL's weights
    ``GRAYSCALE_WEIGHTS``; a 1-channel image is its own grayscale). Pixels stay float (PIL
    would round each step to uint8).

    Args:
        image: float tensor ``(H, W, C)``, C = 1 or 3, raw pixels in 0..255.
        seed: int tensor of shape ``(2,)``. Seed of the stateless draws.
        strength: float in ``[0, 1)``. ``s``; 0 returns ``image`` unchanged.

    Returns:
        float32 ``(H, W, C)`` in 0..255.
    """
    strength = _check_color_jitter(strength)
    image = tf.cast(image, tf.float32)
    if not strength:
        return image
    factors, order = color_jitter_parameters(seed, strength=strength)
    for step in range(3):
        image = tf.switch_case(order[step], [
            lambda x=image, f=factors[i], i=i: _COLOR_OPS[i](x, f) for i in range(3)])
    return image


def color_jitter_parameters(seed, *, strength):
    """The draws of ``random_color_jitter``: ``(factors, order)``.

    Args:
        seed: int tensor of shape ``(2,)``.
        strength: float in ``[0, 1)``.

    Returns:
        ``factors``: float32 ``(3,)``, the brightness, contrast and saturation factors, each
        uniform in ``max(0, 1 - strength) .. 1 + strength``. ``order``: int32 ``(3,)``, a
        uniformly random permutation of ``0, 1, 2`` (brightness, contrast, saturation): the
        order in which they are applied.
    """
    strength = _check_color_jitter(strength)
    factor_seed, order_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    factors = tf.random.stateless_uniform([3], factor_seed, max(0.0, 1.0 - strength),
                                          1.0 + strength)
    order = tf.argsort(tf.random.stateless_uniform([3], order_seed))  # int32
    return factors, order


def _grayscale(image):
    if image.shape[-1] == 1:
        return image
    if image.shape[-1] != 3:
        raise ValueError(f"The colour jitter needs images of 1 or 3 channels. Received: "
                         f"shape={image.shape}")
    return tf.tensordot(image, tf.constant(GRAYSCALE_WEIGHTS, image.dtype), 1)[..., tf.newaxis]


def _blend(image, reference, factor):
    return tf.clip_by_value(factor * image + (1.0 - factor) * reference, *PIXEL_RANGE)


_COLOR_OPS = (  # brightness, contrast, saturation (torchvision's adjust_*)
    lambda image, factor: _blend(image, 0.0, factor),
    lambda image, factor: _blend(image, tf.reduce_mean(_grayscale(image)), factor),
    lambda image, factor: _blend(image, _grayscale(image), factor),
)


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


def _train_transform(image, seed, *, image_size, augment, crop_area, color_jitter):
    """One example's training transform for ``image_size`` (module docstring)."""
    if augment == "none":
        return resize_and_center_crop(image, image_size=image_size)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_resized_crop(image, crop_seed, image_size=image_size, crop_area=crop_area)
    if color_jitter:
        jitter_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        image = random_color_jitter(image, jitter_seed, strength=color_jitter)
    if augment == "shift_flip":
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def train_pipeline(dataset, *, batch_size, augment, seed, shuffle="full",
                   drop_remainder=True, repeat=False, image_size=None, crop_area=None,
                   color_jitter=0.0, skip_batches=0, shard=(1, 0)):
    """Shuffled, augmented, batched training input.

    Args:
        dataset: ``Dataset`` (its ``train`` split) or an unbatched ``tf.data.Dataset`` of
            ``(image, label)``.
        batch_size: int. Examples per batch.
        augment: str. One of ``AUGMENTATIONS``.
        seed: int. Seeds the shuffle and the augmentation (both change every epoch).
        shuffle: str. ``"full"``: a new seeded permutation of the whole split every pass
            (``shuffled_positions``; needs a ``Dataset`` whose source allows random access);
            ``"buffer:N"``: ``tf.data``'s shuffle through an N-example buffer, for a
            ``tf.data.Dataset`` or a source read front to back (``parse_shuffle``).
        drop_remainder: bool. Drop the last partial batch (keep True under a strategy).
        repeat: bool. Repeat forever (reshuffled each pass).
        skip_batches: int. Start at this batch: the same batches, with the same
            augmentation, as the pipeline without it from that batch on. A full shuffle
            skips positions without reading them; a buffer reads and drops the batches.
        shard: ``(count, index)``. Read only this input pipeline's share: with a full
            shuffle every ``count``-th position of the one permutation (seeded ``seed``)
            from ``index``, so the shares partition each pass; with a buffer ``tf.data``'s
            ``shard`` of the split. Share ``index``'s augmentation and buffer are seeded
            ``seed + 1000003 * index``.
        image_size: int or None. Random-resized crops of this side, for images of varying
            size (module docstring); None: a ``Dataset``'s own ``image_size``, else the images'
            common size is kept. Given with a ``Dataset``, it must equal its ``image_size``.
        crop_area: None or ``(min, max)``, ``0 < min <= max``. The random-resized crop
            (``random_resized_crop``): None, TensorFlow's Inception crop (8% to 100%);
            ``(min, max)``, torchvision's ``RandomResizedCrop(scale=(min, max))`` (the
            authors' ImageNet: ``(0.3, 4/3)``). Only with an ``image_size`` and an
            ``augment`` other than ``"none"``.
        color_jitter: float in ``[0, 1)``. Strength of torchvision's ``ColorJitter`` on
            brightness, contrast and saturation after the crop (``random_color_jitter``; the
            authors' ImageNet: 0.4); 0: none. Nonzero only with an ``image_size`` and an
            ``augment`` other than ``"none"``.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 images (B, H, W, C) in 0..255, int32 labels (B,))``;
        ``H = W = image_size`` with an ``image_size``.
    """
    _check_augment(augment)
    _check_positive("batch_size", batch_size)
    crop_area, color_jitter = _check_crop_area(crop_area), _check_color_jitter(color_jitter)
    kind = parse_shuffle(shuffle)[0]
    examples, image_size = _split_and_size(dataset, "train", image_size)
    _check_image_augmentation(image_size, augment, crop_area, color_jitter)
    shard = _check_shard(shard)
    # A full shuffle starts at batch ``skip_batches`` without reading what comes before it; a
    # buffer draws its order as it reads, so it reads those batches and drops them (below).
    skipped = skip_batches if kind == "full" else 0
    examples = _ordered_examples(dataset, examples, shuffle, seed=seed, repeat=repeat,
                                 shard=shard, start=skipped * batch_size)
    seed += _PIPELINE_SEED_STRIDE * shard[1]
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    if image_size is not None:  # per example, before batching: the sizes vary
        transformed = tf.data.Dataset.zip((examples, seeds.skip(skipped * batch_size))).map(
            lambda example, s: (_train_transform(example[0], s, image_size=image_size,
                                                 augment=augment, crop_area=crop_area,
                                                 color_jitter=color_jitter), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        batches = transformed.batch(batch_size, drop_remainder=drop_remainder)
    else:
        batches = tf.data.Dataset.zip((examples.batch(batch_size, drop_remainder=drop_remainder),
                                       seeds.skip(skipped))).map(
            lambda batch, s: _to_float(augment_batch(batch[0], s, augment=augment), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return batches.skip(skip_batches - skipped).prefetch(tf.data.AUTOTUNE)


def _ordered_examples(dataset, examples, shuffle, *, seed, repeat, shard, start):
    """The training examples of one input pipeline in ``shuffle``'s order, from ``start``
    (full shuffle only; ``train_pipeline``'s arguments)."""
    kind, buffer_size = parse_shuffle(shuffle)
    if kind == "full":
        check_shuffle(dataset, shuffle)
        positions = shuffled_positions(dataset.num_train, seed=seed, start=start,
                                       repeat=repeat, shard=shard)
        return positions.map(dataset.train_example_at, num_parallel_calls=tf.data.AUTOTUNE)
    count, index = shard
    if count > 1:
        examples = examples.shard(count, index)
    examples = examples.shuffle(buffer_size, seed=seed + _PIPELINE_SEED_STRIDE * index,
                                reshuffle_each_iteration=True)
    return examples.repeat() if repeat else examples


def parse_shuffle(spec):
    """``(kind, buffer size)`` of a ``shuffle`` setting: ``("full", None)`` or
    ``("buffer", N)``.

    Raises:
        ValueError: any other value, in one line naming the valid forms.
    """
    if spec == "full":
        return "full", None
    kind, _, size = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if kind == "buffer" and size.isdigit() and int(size) >= 1:
        return "buffer", int(size)
    raise ValueError(f"shuffle={spec!r}: must be {SHUFFLE_FORMS}.")


def shuffled_positions(count, *, seed, start=0, repeat=False, shard=(1, 0)):
    """The order of a full shuffle: positions into a split of ``count`` examples.

    Pass ``r`` over the split is the permutation
    ``tf.random.experimental.index_shuffle(i, [seed, r], count - 1)`` for ``i`` in
    ``0..count-1``: a new permutation of every example each pass (the authors' Keras loader
    permutes the whole training set every epoch), computed from the position alone, so a
    resumed run starts anywhere in it without reading what comes before.

    Args:
        count: int. Examples in the split.
        seed: int. The permutation's seed (the trainer's: ``seed + epoch``).
        start: int. Position in this shard's sequence to begin at.
        repeat: bool. Go on with pass 1, 2, ... (each its own permutation) forever.
        shard: ``(shards, index)``. Every ``shards``-th position of the one sequence, from
            ``index``: the input pipelines' shares of each pass are disjoint and complete.

    Returns:
        A ``tf.data.Dataset`` of int64 positions.
    """
    shards, index = _check_shard(shard)
    if count < 1:
        raise ValueError(f"a full shuffle needs at least one example; the split has {count}.")
    total = None if repeat else -(-(count - index) // shards)  # this shard's share of a pass
    steps = tf.data.Dataset.range(start, total) if total is not None else (
        tf.data.Dataset.counter(start))
    last = tf.constant(count - 1, tf.int64)

    def position(step):
        sequence = tf.cast(step, tf.int64) * shards + index
        key = tf.stack([tf.constant(seed, tf.int64), sequence // count])
        return tf.random.experimental.index_shuffle(sequence % count, key, last)

    return steps.map(position)


def check_shuffle(dataset, shuffle):
    """Raises a one-line ValueError unless ``shuffle`` is valid and, for ``"full"``,
    ``dataset`` gives random access to its training examples (``Dataset.train_example_at``)."""
    if parse_shuffle(shuffle)[0] != "full":
        return
    if not isinstance(dataset, Dataset):
        raise ValueError(f"shuffle='full' needs random access to the examples, which a "
                         f"{type(dataset).__name__} does not give; pass the Dataset of "
                         "ssal_keras.data.load, or shuffle='buffer:N'.")
    if dataset.train_example_at is None:
        raise ValueError("shuffle='full' needs random access to the training examples, and "
                         "this source is read front to back (TFDS TFRecord files too large "
                         "for memory); prepare it with 'tfds build --file_format=array_record' "
                         "or pass --shuffle=buffer:N (e.g. buffer:10000).")


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
                              shuffle="full", repeat=False, skip_steps=0, image_size=None,
                              crop_area=None, color_jitter=0.0):
    """``train_pipeline`` per input pipeline, through ``distribute_datasets_from_function``.

    Each input pipeline (one per worker) reads its share of the examples (``train_pipeline``'s
    ``shard``: of the one permutation under a full shuffle, ``tf.data``'s ``shard`` under a
    buffer) and batches ``global_batch_size / num_replicas_in_sync`` per replica, dropping the
    remainder; pipeline 0 equals ``train_pipeline(seed=seed)``. With several
    workers the shares differ in size: prefer ``repeat=True`` and a fixed number of steps per
    epoch (``num_train // global_batch_size``).

    Args:
        strategy: tf.distribute.Strategy.
        dataset: ``Dataset`` (its ``train`` split) or an unbatched ``tf.data.Dataset``.
        global_batch_size: int. Examples per step over all replicas; a multiple of
            ``strategy.num_replicas_in_sync``.
        augment: str. One of ``AUGMENTATIONS``.
        seed: int. Base seed of the shuffle and the augmentation.
        shuffle: str. As in ``train_pipeline``: ``"full"`` or ``"buffer:N"`` (per pipeline).
        repeat: bool. Repeat forever.
        skip_steps: int. Global steps to skip: a resumed run continues its epoch where the
            checkpoint left it (the order is the same for the same seed).
        image_size: int or None. As in ``train_pipeline``.
        crop_area: None or ``(min, max)``. As in ``train_pipeline``.
        color_jitter: float in ``[0, 1)``. As in ``train_pipeline``.

    Returns:
        A ``tf.distribute.DistributedDataset``.
    """
    _check_global_batch(strategy, global_batch_size)
    _check_augment(augment)
    parse_shuffle(shuffle)
    crop_area, color_jitter = _check_crop_area(crop_area), _check_color_jitter(color_jitter)
    _, image_size = _split_and_size(dataset, "train", image_size)

    def input_fn(context):
        # A global step takes one batch per replica, and a pipeline feeds several replicas.
        replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return train_pipeline(
            dataset, batch_size=context.get_per_replica_batch_size(global_batch_size),
            augment=augment, seed=seed, shuffle=shuffle, drop_remainder=True, repeat=repeat,
            image_size=image_size, crop_area=crop_area, color_jitter=color_jitter,
            skip_batches=skip_steps * replicas_per_pipeline,
            shard=(context.num_input_pipelines, context.input_pipeline_id),
        )

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


def _check_shard(shard):
    """``shard`` as ``(count, index)`` with ``0 <= index < count``; a one-line ValueError."""
    valid = (isinstance(shard, (tuple, list)) and len(shard) == 2
             and all(isinstance(v, (int, np.integer)) for v in shard)
             and 0 <= shard[1] < shard[0])
    if not valid:
        raise ValueError(f"`shard` must be (count, index) with 0 <= index < count. Received: "
                         f"shard={shard!r}")
    return int(shard[0]), int(shard[1])


def _check_augment(augment):
    if augment not in AUGMENTATIONS:
        raise ValueError(f"`augment` must be one of {AUGMENTATIONS}. Received: augment={augment!r}")


def _check_crop_area(crop_area):
    """``crop_area`` as a tuple of two floats (or None); a one-line ValueError if invalid."""
    if crop_area is None:
        return None
    valid = (isinstance(crop_area, (tuple, list)) and len(crop_area) == 2
             and all(_is_number(v) for v in crop_area)
             and 0 < crop_area[0] <= crop_area[1] < np.inf)
    if not valid:
        raise ValueError("`crop_area` must be None or two numbers (min, max) with 0 < min <= max, "
                         "fractions of the image's area (e.g. (0.08, 1.0); the authors' "
                         f"ImageNet: (0.3, 4/3)). Received: crop_area={crop_area!r}")
    return float(crop_area[0]), float(crop_area[1])


def _check_color_jitter(color_jitter):
    """``color_jitter`` as a float; a one-line ValueError if invalid."""
    valid = _is_number(color_jitter) and 0 <= color_jitter < 1
    if not valid:
        raise ValueError("`color_jitter` must be a number in [0, 1) (0: none; the authors' "
                         f"ImageNet: 0.4). Received: color_jitter={color_jitter!r}")
    return float(color_jitter)


def _is_number(value):
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def _check_image_augmentation(image_size, augment, crop_area, color_jitter):
    """``crop_area`` and ``color_jitter`` only where they apply (the random-resized crop)."""
    for name, value, default in (("crop_area", crop_area, None),
                                 ("color_jitter", color_jitter, 0.0)):
        if value == default:
            continue
        if image_size is None:
            raise ValueError(f"`{name}` applies to images resized to `image_size` (the "
                             "ImageNet-style random-resized crop), but no image_size is set "
                             f"(fixed-size images take shifts); leave {name}={default!r}. "
                             f"Received: {name}={value!r}")
        if augment == "none":
            raise ValueError(f"`{name}` contradicts augment='none' (the evaluation transform); "
                             f"use augment='shift_flip' or leave {name}={default!r}. "
                             f"Received: {name}={value!r}")


def _check_positive(name, value):
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")


def _check_global_batch(strategy, global_batch_size):
    _check_positive("global_batch_size", global_batch_size)
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(f"`global_batch_size`={global_batch_size} does not divide across "
                         f"{replicas} replicas; use a multiple of {replicas}.")
