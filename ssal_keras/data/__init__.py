"""Datasets and input pipelines for training (TensorFlow ``tf.data``).

- ``sources``: ``load(spec)`` reads Fashion-MNIST, TFDS, image folders or npz files as
  unbatched splits of raw pixels (``Dataset``), with caps and a held-out part. Damaged or
  inconsistent data (cut files, undecodable, empty, 16-bit or oversized images, stray labels,
  NaN or out-of-range pixels) is refused there, before training, in one line naming the file.
- ``pipelines``: shuffling (by default a new permutation of the whole training split every
  epoch, ``shuffled_positions``), the authors' augmentation (docs/authors_settings.md, section 7),
  batching, per-replica sharding under a ``tf.distribute`` strategy, per-channel statistics;
  for images of varying size (``load(..., image_size=N)``), ImageNet's random-resized crops
  (TensorFlow's, or torchvision's with ``crop_area``), colour jitter and centre crops.
- ``fashion_mnist``: the NumPy reader of Debian's Fashion-MNIST IDX files; ``image_folder``:
  the file lists of ``folder:PATH`` datasets.

Example::

    dataset, held_out = data.load("tfds:cifar100", data_dir="/data/tfds", held_out_examples=5000)
    batches = data.train_pipeline(dataset, batch_size=64, augment="shift_flip", seed=0)

    imagenet, _ = data.load("tfds:imagenet2012", data_dir="/data/tfds", image_size=224)
    batches = data.train_pipeline(imagenet.train, batch_size=256, augment="shift_flip",
                                  seed=0, image_size=imagenet.image_size,
                                  crop_area=(0.3, 4 / 3), color_jitter=0.4)  # the authors'
"""

from ssal_keras.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    load_fashion_mnist,
)
from ssal_keras.data.pipelines import (
    AUGMENTATIONS,
    EVAL_CROP_FRACTION,
    MAX_SHIFT,
    augment_batch,
    channel_statistics,
    check_shuffle,
    color_jitter_parameters,
    crop_window,
    default_augmentation,
    distributed_eval_dataset,
    distributed_train_dataset,
    eval_pipeline,
    random_color_jitter,
    random_resized_crop,
    resize_and_center_crop,
    parse_shuffle,
    shuffled_positions,
    train_pipeline,
)
from ssal_keras.data.sources import DEFAULT_DATASET, SPEC_FORMS, Dataset, load

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_DATASET",
    "Dataset",
    "EVAL_CROP_FRACTION",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "MAX_SHIFT",
    "SPEC_FORMS",
    "augment_batch",
    "channel_statistics",
    "check_shuffle",
    "color_jitter_parameters",
    "crop_window",
    "default_augmentation",
    "distributed_eval_dataset",
    "distributed_train_dataset",
    "eval_pipeline",
    "load",
    "load_fashion_mnist",
    "random_color_jitter",
    "random_resized_crop",
    "resize_and_center_crop",
    "parse_shuffle",
    "shuffled_positions",
    "train_pipeline",
]
