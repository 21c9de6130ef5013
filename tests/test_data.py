"""Datasets and input pipelines: every source, caps, held-out part, augmentation, strategies."""

import gzip
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ssal_keras import data
from ssal_keras.data import sources

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if path.lower().endswith((".jpg", ".jpeg")) else tf.io.encode_png
    tf.io.write_file(path, encode(np.asarray(image, np.uint8)))


def write_class_folders(root, counts, *, shape=(8, 8, 3), start=0):
    """Writes ``counts[c]`` PNGs per class ``c{c}``; image ``k`` is filled with value ``k``."""
    value = start
    for c, count in enumerate(counts):
        for i in range(count):
            write_image(os.path.join(root, f"c{c}", f"{i:03d}.png"), np.full(shape, value))
            value += 1
    return value


def examples(dataset):
    """``(images, labels)`` of an unbatched dataset, as NumPy arrays."""
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.stack(images), np.array(labels)


def first_pixels(dataset):
    return examples(dataset)[0].reshape(-1, int(np.prod(dataset.element_spec[0].shape)))[:, 0]


def one_line(error_info):
    assert "\n" not in str(error_info.value), str(error_info.value)
    return str(error_info.value)


def check_dataset(dataset, *, num_train, num_eval, image_shape, class_names):
    assert (dataset.num_train, dataset.num_eval) == (num_train, num_eval)
    assert dataset.image_shape == image_shape and dataset.class_names == list(class_names)
    assert dataset.num_classes == len(class_names)
    for split, count in ((dataset.train, num_train), (dataset.eval, num_eval)):
        assert int(split.cardinality()) == count
        assert tuple(split.element_spec[0].shape) == image_shape
        assert split.element_spec[1].dtype == tf.int32 and split.element_spec[1].shape == ()
        images, labels = examples(split)
        assert len(images) == count and labels.min() >= 0 and labels.max() < len(class_names)


# The Fashion-MNIST IDX reader -------------------------------------------------------------


def test_reads_idx_files(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([4, 0, 9]))
    x, y = data.load_fashion_mnist("test", data_dir=str(tmp_path))
    assert x.shape == (3, 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[..., 0], images)
    np.testing.assert_array_equal(y, [4, 0, 9])


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_fashion_mnist("validation", data_dir=str(tmp_path))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.load_fashion_mnist("test", data_dir=str(tmp_path))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.load_fashion_mnist("test", data_dir=str(tmp_path))


# Sources ----------------------------------------------------------------------------------


def write_fashion_mnist(folder, num_train=30, num_test=12):
    """IDX files where image ``i`` of a split is filled with ``i`` (train) or ``100 + i``."""
    for (images, labels), count, offset in ((data.fashion_mnist.IDX_FILES["train"], num_train, 0),
                                            (data.fashion_mnist.IDX_FILES["test"], num_test, 100)):
        values = offset + np.arange(count)
        write_idx(folder / images, np.ones((count, 28, 28)) * values[:, None, None])
        write_idx(folder / labels, np.arange(count) % 10)


def test_fashion_mnist_from_idx_files(tmp_path):
    write_fashion_mnist(tmp_path)
    dataset, held_out = data.load("fashion_mnist", data_dir=str(tmp_path), train_examples=20,
                                  eval_examples=5, held_out_examples=4)
    check_dataset(dataset, num_train=20, num_eval=5, image_shape=(28, 28, 1),
                  class_names=data.FASHION_MNIST_CLASSES)
    train, held = first_pixels(dataset.train), first_pixels(held_out)
    assert len(set(train)) == 20 and len(set(held)) == 4 and not set(train) & set(held)
    assert set(first_pixels(dataset.eval)) <= set(range(100, 112))
    images, labels = examples(dataset.train)
    np.testing.assert_array_equal(labels, images[:, 0, 0, 0] % 10)  # pairs stay together


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package():
    dataset, held_out = data.load("fashion_mnist", train_examples=50, eval_examples=20,
                                  held_out_examples=10)
    check_dataset(dataset, num_train=50, num_eval=20, image_shape=(28, 28, 1),
                  class_names=data.FASHION_MNIST_CLASSES)
    assert int(held_out.cardinality()) == 10


def test_fashion_mnist_falls_back_to_tfds(tmp_path, monkeypatch):
    monkeypatch.setattr(data.fashion_mnist, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with tfds.testing.mock_data(num_examples=6):
        dataset, _ = data.load("fashion_mnist", data_dir=str(tmp_path))
        check_dataset(dataset, num_train=6, num_eval=6, image_shape=(28, 28, 1),
                      class_names=tfds.builder("fashion_mnist").info.features["label"].names)
    with pytest.raises(FileNotFoundError) as error:
        data.load("fashion_mnist", data_dir=str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in one_line(error)


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_under_mock_data(name, shape):
    with tfds.testing.mock_data(num_examples=12):
        dataset, held_out = data.load(f"tfds:{name}", data_dir="/nonexistent",
                                      held_out_examples=3, train_examples=5, eval_examples=4)
        check_dataset(dataset, num_train=5, num_eval=4, image_shape=shape,
                      class_names=[str(c) for c in range(10)])
        train, held = (examples(d)[0].reshape(len(examples(d)[0]), -1)
                       for d in (dataset.train, held_out))
        assert len(held) == 3 and not {x.tobytes() for x in train} & {x.tobytes() for x in held}
        everything, _ = data.load(f"tfds:{name}:train:test", held_out_examples=3)
        assert everything.num_train == 9  # no caps: 12 - 3, counted without split metadata


def test_tfds_spec_parsing():
    assert sources._parse_tfds("mnist") == ("mnist", "train", None)
    assert sources._parse_tfds("mnist:3.0.1") == ("mnist:3.0.1", "train", None)
    assert sources._parse_tfds("cifar10:train[:90%]:train[90%:]") == (
        "cifar10", "train[:90%]", "train[90%:]")
    assert sources._parse_tfds("a/b:1.*.*:train:validation") == ("a/b:1.*.*", "train", "validation")
    with pytest.raises(ValueError) as error:
        sources._parse_tfds("mnist:train")
    assert "tfds:NAME:TRAIN_SPLIT:EVAL_SPLIT" in one_line(error)


def test_tfds_eval_split_fallback():
    info = lambda *splits: types.SimpleNamespace(splits=dict.fromkeys(splits))  # noqa: E731
    assert sources._default_eval_split("x", info()) == "test"  # mocked: no split metadata
    assert sources._default_eval_split("x", info("train", "test", "validation")) == "test"
    assert sources._default_eval_split("x", info("train", "validation")) == "validation"
    # imagenet2012's test split is unlabelled (-1): its default evaluation split is validation.
    everything = info("train", "test", "validation")
    assert sources._default_eval_split("imagenet2012:5.1.0", everything) == "validation"
    with pytest.raises(ValueError) as error:
        sources._default_eval_split("x", info("train"))
    assert "tfds:NAME:TRAIN_SPLIT:EVAL_SPLIT" in one_line(error)


def test_tfds_split_metadata():
    info = types.SimpleNamespace(splits={"train": types.SimpleNamespace(num_examples=5),
                                         "test": types.SimpleNamespace(num_examples=2)})
    sources._check_split("x", info, "train[:50%]+test")
    with pytest.raises(ValueError) as error:
        sources._check_split("x", info, "validation")
    assert "no split 'validation'; its splits: ['test', 'train']" in one_line(error)
    assert sources._tfds_count(info, "train", None) == 5  # metadata when there is some
    unknown = tf.data.Dataset.range(7).filter(lambda i: i < 4)  # cardinality unknown: counted
    assert sources._tfds_count(types.SimpleNamespace(splits={}), "train", unknown) == 4


def test_tfds_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.load("tfds:mnist", data_dir=str(tmp_path))
    message = one_line(error)
    assert "tfds:mnist is not prepared" in message and str(tmp_path) in message
    assert "tfds build mnist" in message
    with pytest.raises(ValueError) as error:
        data.load("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
    assert "no such dataset" in one_line(error)
    with pytest.raises(ValueError) as error:
        data.load("tfds:tf_flowers", data_dir=str(tmp_path))  # images of many sizes
    assert "not one static (H, W, C)" in one_line(error) and "--image_size=N" in str(error.value)


def test_folder_with_train_and_val(tmp_path):
    write_class_folders(tmp_path / "train", [3, 4])
    write_class_folders(tmp_path / "val", [0, 2], start=200)  # only c1 in val/: ids follow train
    dataset, _ = data.load(f"folder:{tmp_path}")
    check_dataset(dataset, num_train=7, num_eval=2, image_shape=(8, 8, 3), class_names=["c0", "c1"])
    images, labels = examples(dataset.eval)
    assert set(labels) == {1} and set(images[:, 0, 0, 0]) == {200, 201}
    images, labels = examples(dataset.train)
    np.testing.assert_array_equal(labels, images[:, 0, 0, 0] >= 3)


def test_folder_tiny_imagenet_layout(tmp_path):
    for c, wnid in enumerate(["n01", "n02"]):
        for i in range(2):
            write_image(str(tmp_path / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"),
                        np.full((8, 8, 3), 100 * c))
    write_image(str(tmp_path / "val" / "images" / "val_0.png"), np.full((8, 8, 3), 100))
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.png\tn02\t0\t0\t8\t8\n")
    dataset, _ = data.load(f"folder:{tmp_path}")
    check_dataset(dataset, num_train=4, num_eval=1, image_shape=(8, 8, 3),
                  class_names=["n01", "n02"])
    assert examples(dataset.eval)[1].tolist() == [1]


def test_folder_without_split_folders_gives_10_percent_to_eval(tmp_path):
    write_class_folders(tmp_path, [10, 25, 3], shape=(6, 7, 1))
    dataset, _ = data.load(f"folder:{tmp_path}")
    # 10% rounded, at least one: 1 of 10, 3 of 25 (2.5 rounds up), 1 of 3.
    check_dataset(dataset, num_train=33, num_eval=5, image_shape=(6, 7, 1),
                  class_names=["c0", "c1", "c2"])
    eval_images, eval_labels = examples(dataset.eval)
    assert np.bincount(eval_labels).tolist() == [1, 3, 1]
    assert not set(eval_images[:, 0, 0, 0]) & set(first_pixels(dataset.train))
    again, _ = data.load(f"folder:{tmp_path}", seed=5)  # the eval part does not depend on seed
    assert sorted(first_pixels(again.eval)) == sorted(eval_images[:, 0, 0, 0])


def test_folder_mixed_channels_decode_as_rgb(tmp_path):
    write_image(str(tmp_path / "a" / "0.png"), np.full((8, 8, 1), 7))
    write_image(str(tmp_path / "a" / "1.png"), np.full((8, 8, 1), 7))
    write_image(str(tmp_path / "b" / "0.jpg"), np.full((8, 8, 3), 128))
    write_image(str(tmp_path / "b" / "1.jpg"), np.full((8, 8, 3), 128))
    dataset, _ = data.load(f"folder:{tmp_path}")
    assert dataset.image_shape == (8, 8, 3)
    assert examples(dataset.train)[0].shape == (2, 8, 8, 3)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.load(f"folder:{tmp_path / 'absent'}")
    assert "no such folder" in one_line(error)
    with pytest.raises(ValueError) as error:
        data.load(f"folder:{tmp_path}")
    assert "no class sub-folders" in one_line(error)
    os.makedirs(tmp_path / "empty_class")
    with pytest.raises(ValueError) as error:
        data.load(f"folder:{tmp_path}")
    assert "holds no images" in one_line(error)
    write_class_folders(tmp_path / "sizes" / "train", [2])
    write_image(str(tmp_path / "sizes" / "val" / "c0" / "x.png"), np.zeros((10, 10, 3)))
    with pytest.raises(ValueError) as error:
        data.load(f"folder:{tmp_path / 'sizes'}")
    assert "images differ in size" in one_line(error) and "--image_size=N" in str(error.value)
    write_class_folders(tmp_path / "names" / "train", [2])
    write_image(str(tmp_path / "names" / "test" / "other" / "x.png"), np.zeros((8, 8, 3)))
    with pytest.raises(ValueError) as error:
        data.load(f"folder:{tmp_path / 'names'}")
    assert "train/ lacks" in one_line(error)
    write_class_folders(tmp_path / "one", [1])
    with pytest.raises(ValueError) as error:
        data.load(f"folder:{tmp_path / 'one'}")
    assert "at least 2" in one_line(error)


def write_npz(path, num_train=20, num_test=6, **extra):
    x_train, x_test = (np.ones((n, 6, 6), np.uint8) * values.astype(np.uint8)[:, None, None]
                       for n, values in ((num_train, np.arange(num_train)),
                                         (num_test, 200 + np.arange(num_test))))
    arrays = dict(x_train=x_train, y_train=(np.arange(num_train) % 3)[:, None],
                  x_test=x_test, y_test=np.arange(num_test) % 3)
    np.savez(path, **{**arrays, **extra})
    return path


def test_npz(tmp_path):
    path = write_npz(tmp_path / "d.npz", class_names=np.array(["x", "y", "z"]))
    dataset, held_out = data.load(f"npz:{path}", eval_examples=4, held_out_examples=2)
    check_dataset(dataset, num_train=18, num_eval=4, image_shape=(6, 6, 1), class_names="xyz")
    images, labels = examples(dataset.train)
    np.testing.assert_array_equal(labels, images[:, 0, 0, 0] % 3)
    plain, _ = data.load(f"npz:{write_npz(tmp_path / 'plain.npz')}")
    assert plain.class_names == ["0", "1", "2"]


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        data.load(f"npz:{tmp_path / 'absent.npz'}")
    assert "no such file" in one_line(error)
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4)), images=np.zeros(1))
    with pytest.raises(ValueError) as error:
        data.load(f"npz:{tmp_path / 'bad.npz'}")
    assert "lacks y_train, x_test, y_test" in one_line(error) and "'images'" in str(error.value)


def test_unknown_spec():
    for spec in ("cifar10", "tfds:", "hdf5:x.h5", None):
        with pytest.raises(ValueError) as error:
            data.load(spec)
        assert "valid forms: fashion_mnist, tfds:NAME" in one_line(error)


def test_held_out_part_and_caps(tmp_path):
    path = write_npz(tmp_path / "d.npz", num_train=40)
    load = lambda **kw: data.load(f"npz:{path}", **kw)  # noqa: E731
    dataset, held_out = load(held_out_examples=8, train_examples=25, seed=0)
    train, held = set(first_pixels(dataset.train)), set(first_pixels(held_out))
    assert len(train) == 25 and len(held) == 8 and not train & held
    other_seed, held_again = load(held_out_examples=8, train_examples=25, seed=1)
    assert set(first_pixels(held_again)) == held  # fixed: does not depend on the run's seed
    other_train = set(first_pixels(other_seed.train))
    assert other_train != train and not other_train & held
    smaller, fewer = load(held_out_examples=3)
    assert set(first_pixels(fewer)) < held and smaller.num_train == 37
    assert load()[1] is None
    for kwargs in ({"held_out_examples": 40}, {"train_examples": 0}, {"eval_examples": -1}):
        with pytest.raises(ValueError) as error:
            load(**kwargs)
        one_line(error)


def test_held_out_part_of_a_stream():
    with tfds.testing.mock_data(num_examples=10):
        dataset, held_out = data.load("tfds:mnist", held_out_examples=4)
        train, held = (examples(d)[0].reshape(-1, 784) for d in (dataset.train, held_out))
        complete, _ = data.load("tfds:mnist")
        everything = {x.tobytes() for x in examples(complete.train)[0].reshape(-1, 784)}
    assert (len(train), len(held), dataset.num_train) == (6, 4, 6)
    assert {x.tobytes() for x in train} | {x.tobytes() for x in held} == everything


# Pipelines --------------------------------------------------------------------------------


def dot_images(count, *, size=32, row=16, col=8):
    """Black images with one bright pixel at ``(row, col)``."""
    images = np.zeros((count, size, size, 1), np.uint8)
    images[:, row, col] = 255
    return tf.data.Dataset.from_tensor_slices((images, np.zeros(count, np.int32)))


def bright_positions(batch):
    images = batch.numpy()[..., 0]
    assert ((images == 255).sum(axis=(1, 2)) == 1).all()  # moved, never duplicated or lost
    _, rows, cols = np.nonzero(images == 255)
    return rows, cols


def first_batch(augment, *, seed=0, dataset=None, batch_size=256):
    dataset = dataset or dot_images(256)
    images, labels = next(iter(data.train_pipeline(dataset, batch_size=batch_size,
                                                   augment=augment, seed=seed)))
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    return images


def test_shift_moves_content_by_at_most_5_pixels_and_never_flips():
    rows, cols = bright_positions(first_batch("shift"))
    assert set(rows) == set(range(11, 22)) and set(cols) == set(range(3, 14))


def test_shift_flip_flips_some_images():
    rows, cols = bright_positions(first_batch("shift_flip"))
    flipped = cols >= 18  # column 8 mirrors to 23, then shifts to 18..28
    assert set(rows) == set(range(11, 22))
    assert set(cols[~flipped]) == set(range(3, 14)) and set(cols[flipped]) == set(range(18, 29))
    assert 0.3 < flipped.mean() < 0.7


def test_none_keeps_images():
    images = first_batch("none").numpy()
    assert images.shape == (256, 32, 32, 1) and (images[:, 16, 8] == 255).all()


def test_shift_fills_by_reflection():
    image = np.random.default_rng(0).integers(50, 200, (12, 10, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((image[None].repeat(64, 0),
                                                  np.zeros(64, np.int32)))
    batch = first_batch("shift", dataset=dataset, batch_size=64).numpy()
    assert batch.shape == (64, 12, 10, 3) and batch.min() >= 50  # no zeros at the borders
    padded = np.pad(image, [(5, 5), (5, 5), (0, 0)], mode="symmetric")  # Keras's "reflect"
    windows = {padded[y:y + 12, x:x + 10].tobytes() for y in range(11) for x in range(11)}
    assert all(b.astype(np.uint8).tobytes() in windows for b in batch)


def test_same_seed_same_batches_new_epoch_new_batches():
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(0).integers(0, 255, (64, 8, 8, 3)).astype(np.uint8),
         np.arange(64, dtype=np.int32)))

    def make(seed, shuffle_buffer=10000):
        return data.train_pipeline(dataset, batch_size=16, augment="shift_flip", seed=seed,
                                   drop_remainder=False, shuffle_buffer=shuffle_buffer)

    epoch = lambda pipeline: [(x.numpy(), y.numpy()) for x, y in pipeline]  # noqa: E731
    pipeline = make(3)
    first, second = epoch(pipeline), epoch(pipeline)
    again = epoch(make(3))
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][1], second[0][1])  # reshuffled
    assert not np.array_equal(first[0][0], epoch(make(4))[0][0])
    assert sorted(np.concatenate([y for _, y in first])) == list(range(64))
    unshuffled = make(3, shuffle_buffer=1)
    first, second = epoch(unshuffled), epoch(unshuffled)
    np.testing.assert_array_equal(first[0][1], second[0][1])
    assert not np.array_equal(first[0][0], second[0][0])  # new shifts and flips every epoch


def test_pipeline_batches_and_errors():
    dataset = dot_images(13, size=8, row=4, col=4)
    sizes = lambda batches: [len(y) for _, y in batches]  # noqa: E731
    assert sizes(data.train_pipeline(dataset, batch_size=4, augment="shift", seed=0)) == [4] * 3
    assert sizes(data.train_pipeline(dataset, batch_size=4, augment="shift", seed=0,
                                     drop_remainder=False)) == [4, 4, 4, 1]
    repeated = data.train_pipeline(dataset, batch_size=4, augment="shift", seed=0, repeat=True)
    assert len(list(repeated.take(10))) == 10
    batches = list(data.eval_pipeline(dataset, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 4, 1] and batches[0][0].dtype == tf.float32
    with pytest.raises(ValueError) as error:
        data.train_pipeline(dataset, batch_size=4, augment="flip", seed=0)
    assert "shift_flip" in one_line(error)
    with pytest.raises(ValueError) as error:
        data.eval_pipeline(dataset, batch_size=0)
    one_line(error)


def test_pipelines_take_a_dataset(tmp_path):
    dataset, _ = data.load(f"npz:{write_npz(tmp_path / 'd.npz')}")
    assert sum(len(y) for _, y in data.eval_pipeline(dataset, batch_size=4)) == dataset.num_eval
    train = data.train_pipeline(dataset, batch_size=4, augment="shift", seed=0)
    assert sum(len(y) for _, y in train) == dataset.num_train // 4 * 4


def test_channel_statistics():
    images = np.random.default_rng(0).integers(0, 256, (300, 5, 4, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.zeros(300, np.int32)))
    mean, std = data.channel_statistics(dataset)
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, images.reshape(-1, 3).std(0), rtol=1e-9)
    mean, _ = data.channel_statistics(dataset, max_examples=10)
    np.testing.assert_allclose(mean, images[:10].reshape(-1, 3).mean(0), rtol=1e-12)


def test_default_augmentation():
    assert data.default_augmentation("fashion_mnist") == "shift"
    assert data.default_augmentation("tfds:mnist") == "shift"
    assert data.default_augmentation("tfds:cifar100") == "shift_flip"
    assert data.default_augmentation("folder:/data/tiny-imagenet-200") == "shift_flip"


_TWO_REPLICAS = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ssal_keras import data
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
images = (np.arange(13, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 1), np.uint8))
dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(13, dtype=np.int32)))
local = lambda value: [t.numpy().tolist() for t in strategy.experimental_local_results(value)]
report = {"train": [], "eval": []}
for x, y in data.distributed_train_dataset(strategy, dataset, global_batch_size=4,
                                          augment="shift_flip", seed=0):
    shapes = [list(t.shape) for t in strategy.experimental_local_results(x)]
    report["train"].append({"shapes": shapes, "labels": local(y)})
for x, y in data.distributed_eval_dataset(strategy, dataset, global_batch_size=4):
    report["eval"].append(local(y))
try:
    data.distributed_eval_dataset(strategy, dataset, global_batch_size=5)
except ValueError as error:
    report["error"] = str(error)
# images of 8..20 rows (varying), resized to 6 x 6
mixed = tf.data.Dataset.range(13).map(
    lambda i: (tf.fill(tf.stack([8 + tf.cast(i, tf.int32), 10, 1]), tf.cast(i, tf.uint8)),
               tf.cast(i, tf.int32)))
shapes = lambda x: [list(t.shape) for t in strategy.experimental_local_results(x)]
report["mixed_train"] = [shapes(x) for x, _ in data.distributed_train_dataset(
    strategy, mixed, global_batch_size=4, augment="shift_flip", seed=0, image_size=6)]
report["mixed_eval"] = [local(y) for _, y in data.distributed_eval_dataset(
    strategy, mixed, global_batch_size=4, image_size=6)]
print(json.dumps(report))
"""


def test_distributed_datasets_on_two_replicas():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["train"]) == 3  # 13 // 4 steps, remainder dropped
    for step in report["train"]:
        assert step["shapes"] == [[2, 8, 8, 1], [2, 8, 8, 1]]  # per replica: 4 / 2
    seen = [label for step in report["train"] for replica in step["labels"] for label in replica]
    assert len(set(seen)) == 12
    assert report["eval"][-1] == [[12], []]  # the last, partial batch leaves replica 1 empty
    eval_seen = [label for step in report["eval"] for replica in step for label in replica]
    assert sorted(eval_seen) == list(range(13))  # every example exactly once
    assert "does not divide across 2 replicas" in report["error"]
    assert report["mixed_train"] == [[[2, 6, 6, 1], [2, 6, 6, 1]]] * 3
    assert sorted(y for step in report["mixed_eval"] for r in step for y in r) == list(range(13))


# Images of varying size: load(..., image_size=N) and the ImageNet transforms --------------


def write_mixed_folder(root, per_class=5):
    """Random PNGs of 20x30 and 40x24 (one grayscale 24x24 in c1), ``per_class`` per class."""
    rng = np.random.default_rng(0)
    for c in range(2):
        for i in range(per_class):
            shape = (24, 24, 1) if (c, i) == (1, 2) else [(20, 30, 3), (40, 24, 3)][i % 2]
            write_image(str(root / f"c{c}" / f"{i}.png"), rng.integers(0, 256, shape))


def resize_bilinear(image, height, width):
    """NumPy reference of TF2's bilinear resize (half-pixel centres, no antialiasing)."""
    def weights(size_in, size_out):
        coords = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        floor = np.floor(coords)
        lower = np.clip(floor, 0, size_in - 1).astype(int)
        upper = np.clip(np.ceil(coords), 0, size_in - 1).astype(int)
        return lower, upper, coords - floor

    image = image.astype(np.float64)
    lower, upper, lerp = weights(image.shape[0], height)
    image = image[lower] + (image[upper] - image[lower]) * lerp[:, None, None]
    lower, upper, lerp = weights(image.shape[1], width)
    return image[:, lower] + (image[:, upper] - image[:, lower]) * lerp[None, :, None]


def test_folder_of_mixed_sizes_with_image_size(tmp_path):
    write_mixed_folder(tmp_path)
    with pytest.raises(ValueError) as error:
        data.load(f"folder:{tmp_path}")
    assert "images differ in size" in one_line(error) and "--image_size=N" in str(error.value)
    dataset, _ = data.load(f"folder:{tmp_path}", image_size=16)
    assert (dataset.image_shape, dataset.image_size) == ((16, 16, 3), 16)
    assert (dataset.num_train, dataset.num_eval) == (8, 2)
    assert tuple(dataset.train.element_spec[0].shape) == (None, None, 3)
    sizes = {x.shape for x, _ in dataset.train}
    assert {(20, 30, 3), (40, 24, 3), (24, 24, 3)} <= sizes  # decoded unresized, all RGB
    for batches in (data.train_pipeline(dataset, batch_size=4, augment="shift_flip", seed=0),
                    data.eval_pipeline(dataset, batch_size=4)):
        images = np.concatenate([x.numpy() for x, _ in batches])
        assert images.shape[1:] == (16, 16, 3) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 255 and images.std() > 10
    # What the trainer passes: the raw splits, with the keyword.
    train = data.train_pipeline(dataset.train, batch_size=4, augment="shift", seed=0,
                                image_size=16)
    assert next(iter(train))[0].shape == (4, 16, 16, 3)
    with pytest.raises(ValueError) as error:  # the raw split without the keyword
        data.eval_pipeline(dataset.eval, batch_size=4)
    assert "pass image_size=N" in one_line(error)
    with pytest.raises(ValueError) as error:  # a size that contradicts the Dataset's
        data.eval_pipeline(dataset, batch_size=4, image_size=8)
    assert "differs from the Dataset's image_size=16" in one_line(error)


def test_image_size_on_a_dataset_of_one_size(tmp_path):
    dataset, _ = data.load(f"npz:{write_npz(tmp_path / 'd.npz')}", image_size=4)
    assert (dataset.image_shape, dataset.image_size) == ((4, 4, 1), 4)
    images, _ = next(iter(data.eval_pipeline(dataset, batch_size=3)))
    assert images.shape == (3, 4, 4, 1)
    plain, _ = data.load(f"npz:{tmp_path / 'd.npz'}")
    assert plain.image_size is None and plain.image_shape == (6, 6, 1)


@pytest.mark.parametrize("shape", [(20, 30, 3), (40, 24, 1)])
def test_eval_transform_resizes_the_shorter_side_and_crops_the_centre(shape):
    image = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    # 16 / 0.875 = 18.3: shorter side to 18; 20x30 -> 18x27, crop at (1, 5); 40x24 -> 30x18,
    # crop at (7, 1).
    height, width = (18, 27) if shape[0] < shape[1] else (30, 18)
    top, left = (height - 16) // 2, (width - 16) // 2
    expected = resize_bilinear(image, height, width)[top:top + 16, left:left + 16]
    dataset = tf.data.Dataset.from_tensors((image, np.int32(0)))
    for _ in range(2):  # deterministic
        batch, _ = next(iter(data.eval_pipeline(dataset, batch_size=1, image_size=16)))
        np.testing.assert_allclose(batch[0].numpy(), expected, atol=1e-3)
    train, _ = next(iter(data.train_pipeline(dataset, batch_size=1, augment="none", seed=5,
                                             image_size=16)))
    np.testing.assert_allclose(train[0].numpy(), expected, atol=1e-3)


def ramp_images(count, *, height=160, width=200):
    """RGB images whose channel 0 is the column index and channel 1 the row index."""
    rows, cols = np.mgrid[:height, :width]
    image = np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices((np.repeat(image[None], count, 0),
                                               np.arange(count, dtype=np.int32)))


def test_random_resized_crop_windows():
    dataset = ramp_images(64)
    size = 16
    shift, _ = next(iter(data.train_pipeline(dataset, batch_size=64, augment="shift", seed=0,
                                             image_size=size, shuffle_buffer=1)))
    shift = shift.numpy()
    assert shift.shape == (64, size, size, 3)
    # Bilinear sampling of a ramp: the sampled centres span (size - 1) / size of the window.
    widths = (shift[:, 0, -1, 0] - shift[:, 0, 0, 0]) * size / (size - 1)
    heights = (shift[:, -1, 0, 1] - shift[:, 0, 0, 1]) * size / (size - 1)
    areas, ratios = widths * heights / (160 * 200), widths / heights
    assert (widths > 0).all() and areas.min() > 0.075 and areas.max() <= 1.0
    assert areas.max() - areas.min() > 0.3  # many scales, not one
    assert ratios.min() > 0.72 and ratios.max() < 1.38  # 3/4 to 4/3, up to whole pixels
    # Same seed: the same windows; shift_flip mirrors some of them.
    flip, _ = next(iter(data.train_pipeline(dataset, batch_size=64, augment="shift_flip",
                                            seed=0, image_size=size, shuffle_buffer=1)))
    flip = flip.numpy()
    mirrored = np.array([np.array_equal(f, s[:, ::-1]) for f, s in zip(flip, shift)])
    same = np.array([np.array_equal(f, s) for f, s in zip(flip, shift)])
    assert (mirrored | same).all() and 0.25 < mirrored.mean() < 0.75


def test_image_size_same_seed_same_batches(tmp_path):
    write_mixed_folder(tmp_path)
    dataset, _ = data.load(f"folder:{tmp_path}", image_size=16)

    def epoch(pipeline):
        return np.concatenate([x.numpy() for x, _ in pipeline])

    def make(seed):
        return data.train_pipeline(dataset, batch_size=4, augment="shift_flip", seed=seed,
                                   drop_remainder=False)

    pipeline = make(3)
    first, second = epoch(pipeline), epoch(pipeline)
    np.testing.assert_array_equal(first, epoch(make(3)))
    assert not np.array_equal(first, second)  # new order and crops every epoch
    assert not np.array_equal(first, epoch(make(4)))
    evaluation = [epoch(data.eval_pipeline(dataset, batch_size=4)) for _ in range(2)]
    np.testing.assert_array_equal(*evaluation)


def test_tfds_of_varying_size_under_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        with pytest.raises(ValueError) as error:
            data.load("tfds:imagenet2012")
        assert "--image_size=N" in one_line(error)
        dataset, held_out = data.load("tfds:imagenet2012", image_size=16, held_out_examples=2,
                                      eval_examples=5)
        assert (dataset.image_shape, dataset.num_classes) == ((16, 16, 3), 1000)
        assert (dataset.num_train, dataset.num_eval, int(held_out.cardinality())) == (4, 5, 2)
        train = data.train_pipeline(dataset, batch_size=2, augment="shift_flip", seed=0)
        assert [tuple(x.shape) for x, _ in train] == [(2, 16, 16, 3)] * 2
        evaluation = data.eval_pipeline(dataset, batch_size=2)
        assert [tuple(x.shape) for x, _ in evaluation] == [(2, 16, 16, 3)] * 2 + [(1, 16, 16, 3)]
        confusion = data.eval_pipeline(held_out, batch_size=2, image_size=16)
        assert [tuple(x.shape) for x, _ in confusion] == [(2, 16, 16, 3)]


def test_channel_statistics_of_varying_size():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
              for h, w in ((5, 7), (9, 4), (3, 3))]
    dataset = tf.data.Dataset.from_generator(
        lambda: ((x, np.int32(0)) for x in images),
        output_signature=(tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((), tf.int32)))
    pixels = np.concatenate([x.reshape(-1, 3) for x in images])
    mean, std = data.channel_statistics(dataset)
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-9)
