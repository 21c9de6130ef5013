"""Datasets and input pipelines: every source, caps, held-out part, augmentation, strategies."""

import functools
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
from tests.conftest import write_idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUFFER = "buffer:10000"  # raw tf.data datasets have no random access for a full shuffle


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


# Damaged data: found at load, one line naming the file --------------------------------------


def write_pil(path, image):
    """Saves a Pillow image: the modes TensorFlow's encoders cannot write (palette, 16-bit)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path)


def random_pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def load_error(spec, error_type=ValueError, **kwargs):
    """The one-line message of the error ``data.load(spec, **kwargs)`` raises."""
    with pytest.raises(error_type) as error:
        data.load(spec, **kwargs)
    return one_line(error)


def test_folder_damaged_and_empty_files_are_found_at_load(tmp_path):
    from ssal_keras.training import RunConfig, train

    root = tmp_path / "images"
    write_class_folders(root / "train", [3, 3])
    write_class_folders(root / "val", [2, 2], start=100)
    spec = f"folder:{root}"
    empty = root / "val" / "c1" / "001.png"  # in the eval part, not a class's first image
    empty.write_bytes(b"")
    assert load_error(spec) == f"{empty}: empty file (0 bytes); remove or replace it."
    garbage = root / "train" / "c0" / "002.png"
    garbage.write_bytes(b"not an image at all" * 8)
    message = load_error(spec)  # the first bad file in path order, and a count of the others
    assert message.startswith(f"{garbage}: not an image file of a known format")
    assert message.endswith("(1 more bad file(s) after it).")
    # The trainer fails at load: nothing trained, nothing written.
    model_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="not an image file"):
        train(RunConfig(dataset=spec, epochs=1, batch_size=4), str(model_dir))
    assert not (model_dir / "metrics.json").exists()
    write_image(str(garbage), np.zeros((8, 8, 3)))
    write_image(str(empty), np.zeros((8, 8, 3)))
    cut_png = root / "train" / "c1" / "001.png"
    write_image(str(cut_png), random_pixels((8, 8, 3)))
    cut_png.write_bytes(cut_png.read_bytes()[:-30])  # a cut copy: the last chunks are missing
    assert load_error(spec).startswith(f"{cut_png}: cannot read the image (")
    write_image(str(cut_png), random_pixels((8, 8, 3)))
    cut_jpeg = root / "val" / "c0" / "001.jpg"
    write_image(str(cut_jpeg), random_pixels((8, 8, 3)))
    cut_jpeg.write_bytes(cut_jpeg.read_bytes()[:-40])
    message = load_error(spec)  # TensorFlow, the decoder training uses, cannot decode it
    assert message.startswith(f"{cut_jpeg}: cannot decode the image (") and "{{" not in message
    cut_jpeg.unlink()
    assert data.load(spec)[0].num_eval == 4  # all good again
    # A file listed in Tiny ImageNet's val_annotations.txt that is not there.
    tiny = tmp_path / "tiny"
    write_class_folders(tiny / "train", [2])
    (tiny / "val").mkdir()
    (tiny / "val" / "val_annotations.txt").write_text("gone.png\tc0\t0\t0\t8\t8\n")
    message = load_error(f"folder:{tiny}", FileNotFoundError)
    assert message.startswith(f"{tiny / 'val' / 'images' / 'gone.png'}: no such file")


def test_folder_sizes_are_checked_on_every_file(tmp_path):
    write_class_folders(tmp_path / "train", [3, 3])
    write_class_folders(tmp_path / "val", [2, 2])
    odd = tmp_path / "train" / "c1" / "002.png"  # not the first image of its class
    write_image(str(odd), np.zeros((8, 10, 3)))
    message = load_error(f"folder:{tmp_path}")
    first = tmp_path / "train" / "c0" / "000.png"
    assert message.startswith(f"images differ in size: {first} is 8x8, {odd} is 8x10;")
    assert "--image_size=N" in message
    assert data.load(f"folder:{tmp_path}", image_size=8)[0].image_shape == (8, 8, 3)


def test_folder_channel_policy(tmp_path):
    from PIL import Image

    rgb, grey = random_pixels((8, 8, 3)), random_pixels((8, 8), seed=1)
    colour = {"a/rgba.png": Image.fromarray(np.dstack([rgb, grey])),
              "a/palette.png": Image.fromarray(rgb).quantize(16),
              "b/grey.png": Image.fromarray(grey),
              "b/grey_alpha.png": Image.fromarray(np.dstack([grey, rgb[..., 0]]))}
    for name, image in colour.items():
        write_pil(str(tmp_path / "colour" / name), image)
    dataset, _ = data.load(f"folder:{tmp_path / 'colour'}")
    assert dataset.image_shape == (8, 8, 3)  # one colour image makes the dataset RGB
    decoded = np.concatenate([examples(dataset.train)[0], examples(dataset.eval)[0]])
    # Decoded as the deployment client converts them: Pillow's convert("RGB"), alpha dropped.
    expected = {np.asarray(image.convert("RGB")).tobytes() for image in colour.values()}
    assert {image.tobytes() for image in decoded} == expected
    grey_only = {"a/grey.png": Image.fromarray(grey), "a/bilevel.png": Image.fromarray(
        grey > 128), "b/grey_alpha.png": colour["b/grey_alpha.png"], "b/grey2.png":
        Image.fromarray(255 - grey)}
    for name, image in grey_only.items():
        write_pil(str(tmp_path / "grey" / name), image)
    dataset, _ = data.load(f"folder:{tmp_path / 'grey'}")
    assert dataset.image_shape == (8, 8, 1)
    decoded = np.concatenate([examples(dataset.train)[0], examples(dataset.eval)[0]])
    expected = {np.asarray(image.convert("L")).tobytes() for image in grey_only.values()}
    assert {image.tobytes() for image in decoded} == expected
    # 16-bit images, grey (Pillow's I;16) and RGB (48-bit), are refused by name.
    deep = tmp_path / "colour" / "a" / "deep.png"
    write_pil(str(deep), Image.fromarray(np.full((8, 8), 40000, np.uint16)))
    message = load_error(f"folder:{tmp_path / 'colour'}")
    assert message.startswith(f"{deep}: 16-bit images are not supported: convert to 8-bit")
    write_image(str(deep), np.zeros((8, 8, 3)))
    tf.io.write_file(str(deep), tf.io.encode_png(np.full((8, 8, 3), 40000, np.uint16)))
    message = load_error(f"folder:{tmp_path / 'colour'}", image_size=8)
    assert message.startswith(f"{deep}: 16-bit images are not supported: convert to 8-bit")


def test_folder_pixel_cap_and_progress(tmp_path, monkeypatch):
    write_class_folders(tmp_path, [5, 5])
    spec = f"folder:{tmp_path}"
    lines = []
    data.load(spec, log=lines.append)
    assert lines == []  # quiet for a small folder
    monkeypatch.setattr(data.image_folder, "PROGRESS_EVERY", 4)
    data.load(spec, log=lines.append)
    assert lines == [f"{spec}: checked {n} of 10 image files" for n in (4, 8, 10)]
    monkeypatch.setattr(data.image_folder, "MAX_IMAGE_PIXELS", 100)
    assert data.load(spec)[0].image_shape == (8, 8, 3)  # 64 pixels each
    big = tmp_path / "c1" / "003.png"
    write_image(str(big), random_pixels((10, 12, 3)))
    big.write_bytes(big.read_bytes()[:-30])  # cut: refused from its header, never decoded
    for image_size in (None, 8):
        message = load_error(spec, image_size=image_size)
        assert message == (f"{big}: 10x12 = 120 pixels, over the maximum of 100 "
                           "(image_folder.MAX_IMAGE_PIXELS); downscale it or remove it.")


def test_damaged_idx_files(tmp_path):
    def error_of(split="train"):
        with pytest.raises(ValueError) as error:
            data.load_fashion_mnist(split, data_dir=str(tmp_path))
        return one_line(error)

    write_fashion_mnist(tmp_path)
    images_file, labels_file = (str(tmp_path / name)
                                for name in data.fashion_mnist.IDX_FILES["train"])
    whole = open(images_file, "rb").read()
    for damaged in (whole[:len(whole) // 2], whole[:-4] + b"\0\0\0\0", b"plain bytes, no gzip"):
        open(images_file, "wb").write(damaged)  # a cut download, a bad size trailer, not gzip
        message = error_of()
        assert message.startswith(f"truncated or damaged IDX file {images_file} (")
        assert "re-install dataset-fashion-mnist" in message
    with pytest.raises(ValueError) as error:  # through the trainer's loader too
        data.load("fashion_mnist", data_dir=str(tmp_path))
    assert one_line(error).startswith(f"truncated or damaged IDX file {images_file}")
    header = bytes([0, 0, 0x08, 3]) + np.array([30, 28, 28], ">u4").tobytes()
    with gzip.open(images_file, "wb") as f:
        f.write(header + bytes(29 * 28 * 28))  # one image short of what the header says
    assert error_of() == (
        f"truncated or damaged IDX file {images_file}: its header says [30, 28, 28] (23,520 "
        "bytes of data) but 22,736 bytes follow; re-install dataset-fashion-mnist "
        "('apt-get install --reinstall dataset-fashion-mnist') or replace the file.")
    write_idx(images_file, np.zeros((30, 28, 27)))
    assert error_of().startswith(f"{images_file} holds images of shape (28, 27), not 28x28")
    write_idx(images_file, np.zeros((30, 28, 28)))
    write_idx(labels_file, np.array([0, 1, 2, 10] + [0] * 26))
    assert error_of().startswith(f"{labels_file}: label 3 is 10, outside 0..9;")


def test_npz_labels_outside_the_classes(tmp_path):
    stray = np.arange(20) % 10
    stray[13] = 255  # one stray label among 0..9: not a 256-class problem
    message = load_error(f"npz:{write_npz(tmp_path / 'a.npz', y_train=stray)}")
    assert message == (
        f"npz:{tmp_path / 'a.npz'}: without class_names the classes are 0..255 (the largest "
        "label, y_train[13]), but 245 of them never occur in y_train (first: 10); store "
        "class_names (one per class) in the npz, or fix the labels.")
    path = write_npz(tmp_path / "b.npz", y_test=np.array([0, 1, 2, 0, 1, 7]))
    message = load_error(f"npz:{path}")
    assert "classes are 0..7 (the largest label, y_test[5])" in message
    assert "5 of them never occur in y_train (first: 3)" in message
    negative = np.arange(20) % 3
    negative[4] = -1
    message = load_error(f"npz:{write_npz(tmp_path / 'c.npz', y_train=negative)}")
    assert message.endswith("y_train[4] is -1; labels are class ids 0, 1, ...: fix or drop "
                            "that example.")
    names = np.array(["x", "y", "z"])
    path = write_npz(tmp_path / "d.npz", class_names=names, y_test=np.array([0, 1, 3, 0, 1, 2]))
    assert load_error(f"npz:{path}").endswith(
        "y_test[2] is 3, outside 0..2 (class_names has 3 names); fix the label or add its "
        "class name.")
    # With class_names, a class without training examples is allowed.
    path = write_npz(tmp_path / "e.npz", class_names=np.array(["w", "x", "y", "z"]))
    assert data.load(f"npz:{path}")[0].num_classes == 4


def test_npz_pixels_must_be_raw_values(tmp_path):
    def error_of(**arrays):
        return load_error(f"npz:{write_npz(tmp_path / 'd.npz', **arrays)}")

    x_train = np.full((20, 6, 6), 100.0, np.float32)
    for bad, what in ((np.nan, "NaN or infinite pixels"), (np.inf, "NaN or infinite pixels"),
                      (256.5, "pixels in [100, 256.5]")):
        x_train[4, 2, 3] = bad
        assert error_of(x_train=x_train).endswith(
            f"d.npz: x_train[4] has {what}; images must hold raw pixels in 0..255 (not "
            "normalised ones): fix or drop that image.")
        x_train[4, 2, 3] = 100
    x_test = np.zeros((6, 6, 6), np.int16)
    x_test[2, 0, 0] = 300
    assert "x_test[2] has pixels in [0, 300]" in error_of(x_test=x_test)
    normalised = (np.arange(20)[:, None, None] * np.ones((1, 6, 6)) - 5) / 10
    assert "x_train[0] has pixels in [-0.5, -0.5]" in error_of(x_train=normalised)
    assert "x_train holds bool values" in error_of(x_train=np.ones((20, 6, 6), bool))
    dataset, _ = data.load(f"npz:{write_npz(tmp_path / 'd.npz', x_train=x_train)}")
    assert dataset.train.element_spec[0].dtype == tf.float32  # floats in 0..255 still train
    path = tmp_path / "d.npz"
    path.write_bytes(path.read_bytes()[:-100])  # a cut copy
    assert load_error(f"npz:{path}").startswith(
        f"npz:{path}: truncated, damaged or not an npz file (")


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
                                                   augment=augment, seed=seed,
                                                   shuffle="buffer:10000")))
    assert images.dtype == tf.float32 and labels.dtype == tf.int32
    return images


def test_shift_moves_content_by_at_most_4_pixels_and_never_flips():
    rows, cols = bright_positions(first_batch("shift"))
    assert set(rows) == set(range(12, 21)) and set(cols) == set(range(4, 13))


def test_shift_flip_flips_some_images():
    rows, cols = bright_positions(first_batch("shift_flip"))
    flipped = cols >= 18  # column 8 mirrors to 23, then shifts to 19..27
    assert set(rows) == set(range(12, 21))
    assert set(cols[~flipped]) == set(range(4, 13)) and set(cols[flipped]) == set(range(19, 28))
    assert 0.3 < flipped.mean() < 0.7


# Keras's integer shift range 5: choice(range(5)) * choice([-1, +1])
# (docs/authors_settings.md, section 7.1).
KERAS_SHIFTS = np.arange(-4, 5)
KERAS_SHIFT_P = np.where(KERAS_SHIFTS == 0, 0.2, 0.1)


@pytest.mark.parametrize("augment", ["shift", "shift_flip"])
def test_shift_distribution_is_keras_integer_range(augment):
    count = 4000
    shifts = []
    flips = []
    for seed in (0, 1):  # two batches: (dy, dx) of each image, from its bright pixel
        rows, cols = bright_positions(first_batch(
            augment, seed=seed, dataset=dot_images(count, size=24, row=12, col=5),
            batch_size=count))
        flipped = cols > 11  # shifted to 1..9, or flipped after it: 23 - (5 + dx) in 14..22
        flips.append(flipped)
        shifts.append(np.stack([rows - 12, np.where(flipped, 18 - cols, cols - 5)], 1))
    shifts, flips = np.concatenate(shifts), np.concatenate(flips)
    if augment == "shift_flip":
        assert abs(flips.mean() - 0.5) < 5 * np.sqrt(0.25 / len(flips))
    else:
        assert not flips.any()
    n = len(shifts)
    for axis in range(2):
        values, counts = np.unique(shifts[:, axis], return_counts=True)
        np.testing.assert_array_equal(values, KERAS_SHIFTS)  # -4..4: never 5
        spread = 5 * np.sqrt(n * KERAS_SHIFT_P * (1 - KERAS_SHIFT_P))  # binomial, 5 sigma
        assert (np.abs(counts - n * KERAS_SHIFT_P) < spread).all(), (axis, counts)
    # Independent axes: chi-square of the 9 x 9 table against the product distribution.
    table = np.zeros((9, 9))
    np.add.at(table, (shifts[:, 0] + 4, shifts[:, 1] + 4), 1)
    expected = n * np.outer(KERAS_SHIFT_P, KERAS_SHIFT_P)
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 80 + 5 * np.sqrt(2 * 80), chi2  # 80 degrees of freedom, 5 sigma
    assert abs(np.corrcoef(shifts.T)[0, 1]) < 0.05


def test_none_keeps_images():
    images = first_batch("none").numpy()
    assert images.shape == (256, 32, 32, 1) and (images[:, 16, 8] == 255).all()


def test_shift_fills_by_reflection():
    image = np.random.default_rng(0).integers(50, 200, (12, 10, 3)).astype(np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices((image[None].repeat(400, 0),
                                                  np.zeros(400, np.int32)))
    batch = first_batch("shift", dataset=dataset, batch_size=400).numpy()
    assert batch.shape == (400, 12, 10, 3) and batch.min() >= 50  # no zeros at the borders
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode="symmetric")  # Keras's "reflect"
    # Window (y, x) of the padding moves the content by (4 - y, 4 - x).
    windows = {padded[y:y + 12, x:x + 10].tobytes(): (4 - y, 4 - x)
               for y in range(9) for x in range(9)}
    assert len(windows) == 81
    shifts = np.array([windows[b.astype(np.uint8).tobytes()] for b in batch])
    assert set(shifts[:, 0]) == set(shifts[:, 1]) == set(range(-4, 5))
    # Half-sample symmetric: the edge pixel is repeated (... b a | a b ...), e.g. moved down 1:
    # rows a a b c ..., moved left 2: columns ... x y z z y.
    down = [b for (dy, dx), b in zip(shifts, batch) if (dy, dx) == (1, 0)]
    assert down and all((b[0] == image[0]).all() and (b[1:] == image[:-1]).all() for b in down)
    left = [b for (dy, dx), b in zip(shifts, batch) if (dy, dx) == (0, -2)]
    assert left and all((b[:, :8] == image[:, 2:]).all() and (b[:, 8] == image[:, 9]).all()
                        and (b[:, 9] == image[:, 8]).all() for b in left)


def test_same_seed_same_batches_new_epoch_new_batches():
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(0).integers(0, 255, (64, 8, 8, 3)).astype(np.uint8),
         np.arange(64, dtype=np.int32)))

    def make(seed, shuffle="buffer:10000"):
        return data.train_pipeline(dataset, batch_size=16, augment="shift_flip", seed=seed,
                                   drop_remainder=False, shuffle=shuffle)

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
    unshuffled = make(3, shuffle="buffer:1")
    first, second = epoch(unshuffled), epoch(unshuffled)
    np.testing.assert_array_equal(first[0][1], second[0][1])
    assert not np.array_equal(first[0][0], second[0][0])  # new shifts and flips every epoch


def test_pipeline_batches_and_errors():
    dataset = dot_images(13, size=8, row=4, col=4)
    sizes = lambda batches: [len(y) for _, y in batches]  # noqa: E731
    train = functools.partial(data.train_pipeline, dataset, shuffle=BUFFER)
    assert sizes(train(batch_size=4, augment="shift", seed=0)) == [4] * 3
    assert sizes(train(batch_size=4, augment="shift", seed=0,
                       drop_remainder=False)) == [4, 4, 4, 1]
    repeated = train(batch_size=4, augment="shift", seed=0, repeat=True)
    assert len(list(repeated.take(10))) == 10
    batches = list(data.eval_pipeline(dataset, batch_size=4))
    assert [len(y) for _, y in batches] == [4, 4, 4, 1] and batches[0][0].dtype == tf.float32
    with pytest.raises(ValueError) as error:
        train(batch_size=4, augment="flip", seed=0)
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
                                          augment="shift_flip", seed=0, shuffle="buffer:100"):
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
    strategy, mixed, global_batch_size=4, augment="shift_flip", seed=0, image_size=6,
    shuffle="buffer:100")]
# the authors' ImageNet crop and colour jitter: passed through to every input pipeline
authors = [strategy.experimental_local_results(x) for x, _ in data.distributed_train_dataset(
    strategy, mixed, global_batch_size=4, augment="shift_flip", seed=0, image_size=6,
    crop_area=(0.3, 4 / 3), color_jitter=0.4, shuffle="buffer:100")]
report["authors_shapes"] = [[list(t.shape) for t in step] for step in authors]
values = np.concatenate([t.numpy().ravel() for step in authors for t in step])
report["authors_jittered"] = bool(np.abs(values - np.round(values)).max() > 1e-3)
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
    assert report["authors_shapes"] == [[[2, 6, 6, 1], [2, 6, 6, 1]]] * 3
    assert report["authors_jittered"]  # constant images of integer value, scaled by brightness
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
                                image_size=16, shuffle=BUFFER)
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
                                             image_size=16, shuffle=BUFFER)))
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
                                             image_size=size, shuffle="buffer:1")))
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
                                            seed=0, image_size=size, shuffle="buffer:1")))
    flip = flip.numpy()
    mirrored = np.array([np.array_equal(f, s[:, ::-1]) for f, s in zip(flip, shift)])
    same = np.array([np.array_equal(f, s) for f, s in zip(flip, shift)])
    assert (mirrored | same).all() and 0.25 < mirrored.mean() < 0.75


def ramp_windows(batch, size):
    """``(areas, ratios)`` of the windows that made crops of ``ramp_images`` (160 x 200)."""
    widths = (batch[:, 0, -1, 0] - batch[:, 0, 0, 0]) * size / (size - 1)
    heights = (batch[:, -1, 0, 1] - batch[:, 0, 0, 1]) * size / (size - 1)
    return widths * heights / (160 * 200), widths / heights


def test_default_crop_is_unchanged():
    """crop_area=None, color_jitter=0: TensorFlow's Inception crop, exactly as before."""
    dataset = ramp_images(16)
    size = 16
    for augment in ("shift", "shift_flip"):
        batch, _ = next(iter(data.train_pipeline(dataset, batch_size=16, augment=augment,
                                                 seed=7, image_size=size, shuffle="buffer:1")))
        explicit, _ = next(iter(data.train_pipeline(
            dataset, batch_size=16, augment=augment, seed=7, image_size=size,
            shuffle="buffer:1", crop_area=None, color_jitter=0.0)))
        np.testing.assert_array_equal(batch.numpy(), explicit.numpy())
        seeds = tf.data.Dataset.random(seed=7, rerandomize_each_iteration=True).batch(2)
        for (image, _), seed, crop in zip(dataset, seeds.take(16), batch):
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
            begin, window, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
                seed=crop_seed, min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
                area_range=(0.08, 1.0), max_attempts=100, use_image_if_no_bounding_boxes=True)
            expected = tf.image.resize(tf.slice(image, begin, window), (size, size))
            if augment == "shift_flip":
                expected = tf.image.stateless_random_flip_left_right(expected, flip_seed)
            np.testing.assert_array_equal(crop.numpy(), expected.numpy())


def crop_windows(shape, crop_area, count=2000):
    windows = tf.data.Dataset.range(count).map(
        lambda i: tf.stack(data.crop_window(tf.constant(shape), tf.stack([i, 3]),
                                            crop_area=crop_area)))
    return next(iter(windows.batch(count))).numpy().T  # top, left, height, width


def test_crop_window_is_torchvisions_random_resized_crop():
    top, left, height, width = crop_windows((160, 200, 3), (0.3, 4 / 3))
    # Windows always fit: areas above 1 are redrawn.
    assert (height > 0).all() and (width > 0).all()
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 160).all() and (left + width <= 200).all()
    areas, ratios = height * width / (160 * 200), width / height
    # round(sqrt(a r)) * round(sqrt(a / r)): within a pixel of the drawn area and ratio.
    assert areas.min() > 0.28 and areas.max() <= 1.0
    assert areas.min() < 0.32 and areas.max() > 0.95 and 0.55 < areas.mean() < 0.7
    assert ratios.min() > 0.74 and ratios.max() < 1.35
    assert ratios.min() < 0.77 and ratios.max() > 1.3
    # Placed uniformly: the offset fills its range.
    assert (top == 0).any() and (top + height == 160).any()
    free = height < 160
    assert abs((top[free] / (160 - height[free])).mean() - 0.5) < 0.05
    # The fallback: nothing fits, so the largest centred crop with the ratio clamped.
    for shape, expected in (((160, 200, 3), (0, 0, 160, 200)),  # ratio 1.25: whole image
                            ((100, 200, 3), (0, 33, 100, 133)),  # 2 > 4/3: w = round(100 * 4/3)
                            ((200, 100, 3), (33, 0, 133, 100))):  # 1/2 < 3/4: h = round(100 / .75)
        windows = crop_windows(shape, (2.0, 3.0), count=8)
        assert (windows.T == expected).all(), (shape, windows.T)
    # The same seed, the same window; torchvision's default scale (0.08, 1) also works.
    np.testing.assert_array_equal(crop_windows((160, 200, 3), (0.08, 1.0), count=64),
                                  crop_windows((160, 200, 3), (0.08, 1.0), count=64))


def test_crop_area_in_the_pipeline():
    dataset = ramp_images(64)
    size = 16
    batch, _ = next(iter(data.train_pipeline(dataset, batch_size=64, augment="shift", seed=0,
                                             image_size=size, shuffle="buffer:1",
                                             crop_area=(0.3, 4 / 3))))
    areas, ratios = ramp_windows(batch.numpy(), size)
    assert areas.min() > 0.28 and areas.max() <= 1.0 and areas.max() - areas.min() > 0.4
    assert ratios.min() > 0.72 and ratios.max() < 1.38
    default, _ = next(iter(data.train_pipeline(dataset, batch_size=64, augment="shift", seed=0,
                                               image_size=size, shuffle="buffer:1")))
    assert ramp_windows(default.numpy(), size)[0].min() < 0.3  # the default reaches 8%


def color_jitter_reference(image, factors, order):
    """NumPy ``ColorJitter`` (torchvision's tensor ops, PIL's grayscale weights), given draws."""
    image = image.astype(np.float64)
    for op in order:
        gray = image @ np.array([0.299, 0.587, 0.114])
        reference = [0.0, gray.mean(), gray[..., None]][op]
        image = np.clip(factors[op] * image + (1 - factors[op]) * reference, 0, 255)
    return image


def test_color_jitter_applies_the_three_ops_in_the_drawn_order():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3)).astype(np.float32)
    image[0] = 250  # saturates: the order matters
    orders, differs = [], 0
    for i in range(60):
        seed = tf.constant([i, 11])
        factors, order = (t.numpy() for t in data.color_jitter_parameters(seed, strength=0.4))
        orders.append(tuple(order))
        jittered = data.random_color_jitter(image, seed, strength=0.4).numpy()
        np.testing.assert_allclose(jittered, color_jitter_reference(image, factors, order),
                                   atol=2e-3)
        fixed = color_jitter_reference(image, factors, (0, 1, 2))
        differs += not np.allclose(jittered, fixed, atol=2e-3)
        assert jittered.min() >= 0 and jittered.max() <= 255
    assert differs > 0  # a random order, not brightness-contrast-saturation always
    np.testing.assert_array_equal(data.random_color_jitter(image, seed, strength=0.0), image)
    # 1-channel images: saturation is a no-op, contrast blends with the mean.
    single = data.random_color_jitter(image[..., :1], seed, strength=0.4).numpy()
    assert single.shape == (6, 7, 1) and single.min() >= 0 and single.max() <= 255


def test_color_jitter_draws():
    draws = [data.color_jitter_parameters(tf.constant([i, 5]), strength=0.4)
             for i in range(600)]
    factors = np.array([f.numpy() for f, _ in draws])
    orders = [tuple(o.numpy()) for _, o in draws]
    assert factors.min() >= 0.6 and factors.max() <= 1.4  # [max(0, 1 - 0.4), 1 + 0.4]
    assert factors.min() < 0.62 and factors.max() > 1.38
    assert (np.abs(factors.mean(0) - 1) < 0.05).all()
    assert abs(np.corrcoef(factors.T)[0, 1]) < 0.15  # one draw per factor
    counts = np.array([orders.count(p) for p in sorted(set(orders))])
    assert sorted(set(orders)) == sorted(
        [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
    assert (np.abs(counts - 100) < 5 * np.sqrt(600 / 6 * 5 / 6)).all()  # uniform permutations


def constant_images(count, value, shape=(20, 30, 3)):
    images = np.broadcast_to(np.asarray(value, np.uint8), (count,) + shape)
    return tf.data.Dataset.from_tensor_slices((np.array(images), np.zeros(count, np.int32)))


def test_color_jitter_in_the_pipeline():
    def batch(dataset, **kwargs):
        return next(iter(data.train_pipeline(
            dataset, batch_size=200, augment="shift_flip", seed=1, image_size=8,
            shuffle="buffer:1", crop_area=(0.3, 4 / 3), **kwargs)))[0].numpy()

    # Gray: contrast and saturation keep it, brightness scales it by 0.6..1.4.
    gray = batch(constant_images(200, 100), color_jitter=0.4)
    assert (gray == gray[:, :1, :1, :1]).all()  # each image stays one constant gray
    values = gray[:, 0, 0, 0]
    assert values.min() >= 60 - 1e-3 and values.max() <= 140 + 1e-3
    assert values.min() < 65 and values.max() > 135
    bright = batch(constant_images(200, 250), color_jitter=0.4)
    assert bright.max() == 255 and (bright == 255).mean() > 0.3 and bright.min() >= 150 - 1e-3
    coloured = batch(constant_images(200, (200, 100, 20)), color_jitter=0.4)
    assert coloured.min() >= 0 and coloured.max() <= 255
    spread = coloured.max(-1) - coloured.min(-1)  # saturation and contrast move the channels
    assert spread.min() < 150 and spread.max() > 200
    # No jitter: pixels unchanged (the same crops and flips as without the keyword).
    random = ramp_images(200, height=20, width=30)
    np.testing.assert_array_equal(batch(random, color_jitter=0.0), batch(random))
    assert not np.array_equal(batch(random, color_jitter=0.4), batch(random))


def test_crop_area_and_color_jitter_errors():
    dataset = ramp_images(4, height=20, width=30)
    train = lambda **kw: data.train_pipeline(  # noqa: E731
        dataset, batch_size=2, augment=kw.pop("augment", "shift_flip"), seed=0, shuffle=BUFFER,
        **kw)
    for bad in [(0.5, 0.3), (0, 1), (-0.1, 1), 0.3, (0.3,), (0.3, 1, 2), "0.3,1", (True, 1),
                (0.3, "x", 1.0), (0.3, None), {0.3, 1.0}, (0.3, float("nan")),
                (0.3, float("inf"))]:
        with pytest.raises(ValueError) as error:
            train(image_size=8, crop_area=bad)
        message = one_line(error)
        assert f"crop_area={bad!r}" in message and "0 < min <= max" in message
    for bad in [-0.1, 1.0, 1.5, "0.4", None, True, float("nan")]:
        with pytest.raises(ValueError) as error:
            train(image_size=8, color_jitter=bad)
        message = one_line(error)
        assert f"color_jitter={bad!r}" in message and "[0, 1)" in message
    # They apply to the random-resized crop only.
    with pytest.raises(ValueError) as error:
        train(crop_area=(0.3, 4 / 3))  # fixed-size images: shifts, no crop
    assert "crop_area=(0.3, 1.3333333333333333)" in one_line(error)
    assert "no image_size" in str(error.value)
    with pytest.raises(ValueError) as error:
        train(image_size=8, color_jitter=0.4, augment="none")
    assert "color_jitter=0.4" in one_line(error) and "augment='none'" in str(error.value)
    with pytest.raises(ValueError) as error:
        data.distributed_train_dataset(tf.distribute.get_strategy(), dataset, global_batch_size=2,
                                       augment="shift_flip", seed=0, image_size=8,
                                       color_jitter=2)
    assert "color_jitter=2" in one_line(error)
    with pytest.raises(ValueError) as error:
        data.crop_window(tf.constant([8, 8, 3]), tf.constant([0, 0]), crop_area=(1, 0.5))
    assert "crop_area=(1, 0.5)" in one_line(error)
    # Valid values pass, ints included.
    assert next(iter(train(image_size=8, crop_area=[1, 1], color_jitter=0)))[0].shape == (
        2, 8, 8, 3)


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
        with pytest.raises(ValueError) as error:  # TFRecord files of varying size: a stream
            data.train_pipeline(dataset, batch_size=2, augment="shift_flip", seed=0)
        assert "--file_format=array_record" in one_line(error)
        assert "--shuffle=buffer:N" in str(error.value)
        train = data.train_pipeline(dataset, batch_size=2, augment="shift_flip", seed=0,
                                    shuffle=BUFFER)
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


# Full shuffle: a new permutation of the whole training split every epoch ------------------


def epoch_values(batches):
    """The first pixel of every image of a pass, in order (each image is filled with its id)."""
    return [int(v) for x, _ in batches for v in x.numpy()[:, 0, 0, 0]]


def id_sources(tmp_path):
    """Every kind of random-access source, each of 23 training images filled with their id."""
    (tmp_path / "idx").mkdir()
    write_fashion_mnist(tmp_path / "idx", num_train=23)
    write_class_folders(tmp_path / "folder" / "train", [12, 11])
    write_class_folders(tmp_path / "folder" / "val", [1, 1], start=200)
    return {"fashion_mnist": dict(data_dir=str(tmp_path / "idx")),
            f"npz:{write_npz(tmp_path / 'd.npz', num_train=23)}": {},
            f"folder:{tmp_path / 'folder'}": {}}


def test_full_shuffle_permutes_every_example_anew_each_epoch(tmp_path):
    for spec, kwargs in id_sources(tmp_path).items():
        dataset, _ = data.load(spec, seed=0, **kwargs)
        assert dataset.train_example_at is not None, spec
        stored = sorted(epoch_values(data.train_pipeline(
            dataset, batch_size=5, augment="none", seed=0, shuffle="buffer:1",
            drop_remainder=False)))
        epochs = [epoch_values(data.train_pipeline(dataset, batch_size=5, augment="none",
                                                   seed=seed, drop_remainder=False))
                  for seed in (7, 8, 7)]
        assert all(sorted(order) == stored for order in epochs), spec  # each once, all of them
        assert epochs[0] == epochs[2] and epochs[0] != epochs[1], spec  # seeded, new each epoch
        assert epochs[0] != sorted(epochs[0])
        repeated = epoch_values(data.train_pipeline(dataset, batch_size=23, augment="none",
                                                    seed=7, repeat=True).take(2))
        assert repeated[:23] == epochs[0] and sorted(repeated[23:]) == stored
        assert repeated[23:] != repeated[:23]  # the second pass is another permutation


def test_full_shuffle_resumes_at_a_batch_without_reading_the_ones_before():
    count = 1000
    positions = list(data.shuffled_positions(count, seed=3).as_numpy_iterator())
    assert sorted(positions) == list(range(count))
    assert positions[250:] == list(data.shuffled_positions(count, seed=3, start=250)
                                   .as_numpy_iterator())
    # The shares of three input pipelines partition one permutation.
    shares = [list(data.shuffled_positions(count, seed=3, shard=(3, i)).as_numpy_iterator())
              for i in range(3)]
    assert sorted(sum(shares, [])) == list(range(count)) and shares[1] == positions[1::3]
    for bad in [(0, 0), (2, 2), (2, -1), "2"]:
        with pytest.raises(ValueError) as error:
            data.shuffled_positions(count, seed=3, shard=bad)
        assert "shard" in one_line(error)


@pytest.mark.parametrize("image_size", [None, 12])
def test_skipped_batches_equal_the_rest_of_the_uninterrupted_pass(tmp_path, image_size):
    """What the trainer relies on to resume mid-epoch: the same batches, augmentation included
    (per batch; per example with ``image_size``), from the skipped batch on."""
    write_class_folders(tmp_path / "train", [10, 9], shape=(16, 14, 3))
    write_class_folders(tmp_path / "val", [1, 1], start=200, shape=(16, 14, 3))
    dataset, _ = data.load(f"folder:{tmp_path}", image_size=image_size)
    for shuffle in ("full", "buffer:4"):
        pipeline = functools.partial(data.train_pipeline, dataset, batch_size=3, seed=5,
                                     augment="shift_flip", shuffle=shuffle, repeat=True)
        whole = [x.numpy() for x, _ in pipeline().take(9)]
        resumed = [x.numpy() for x, _ in pipeline(skip_batches=4).take(5)]
        assert len(resumed) == 5
        for a, b in zip(whole[4:], resumed):
            np.testing.assert_array_equal(a, b)


def test_tfds_training_splits_get_random_access(tmp_path):
    """One image size: read into memory at load; varying sizes in ArrayRecord files: TFDS's
    data source; in TFRecord files: a stream (test_tfds_of_varying_size_under_mock_data)."""
    with tfds.testing.mock_data(num_examples=12):
        dataset, held_out = data.load("tfds:cifar10", data_dir="/nonexistent",
                                      held_out_examples=3, train_examples=5)
        in_order = examples(dataset.train)[0]
        at = np.stack([dataset.train_example_at(tf.constant(i, tf.int64))[0].numpy()
                       for i in range(5)])
        np.testing.assert_array_equal(at, in_order)  # the file order, as the stream's
        assert len(epoch_values(data.train_pipeline(dataset, batch_size=5, augment="none",
                                                    seed=0))) == 5
    builder = ArrayRecordImages(data_dir=str(tmp_path), file_format="array_record")
    builder.download_and_prepare()
    dataset, held_out = data.load("tfds:array_record_images", data_dir=str(tmp_path),
                                  image_size=8, held_out_examples=2)
    assert dataset.num_train == 10 and int(held_out.cardinality()) == 2
    order = [int(v) for x, _ in data.train_pipeline(dataset, batch_size=5, augment="none",
                                                    seed=1, drop_remainder=False)
             for v in x.numpy()[:, 0, 0, 0]]
    ids = sorted(int(x[0, 0, 0]) for x, _ in dataset.train.as_numpy_iterator())
    # Resized from uniform images: each id survives the resize exactly.
    assert sorted(order) == ids and order != ids


class ArrayRecordImages(tfds.core.GeneratorBasedBuilder):
    """12 training images of varying size in ArrayRecord files, image ``i`` filled with ``i``."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"),
                                     features=tfds.features.FeaturesDict({
                                         "image": tfds.features.Image(shape=(None, None, 3)),
                                         "label": tfds.features.ClassLabel(num_classes=2)}))

    def _split_generators(self, _):
        return {"train": self._generate_examples(range(12)),
                "test": self._generate_examples(range(100, 104))}

    def _generate_examples(self, ids):
        for i in ids:
            yield i, {"image": np.full((8 + i % 5, 9, 3), i, np.uint8), "label": i % 2}


def test_shuffle_setting_is_checked_and_old_runs_keep_their_buffer():
    from ssal_keras.training import RunConfig

    assert RunConfig().shuffle == "full"
    assert RunConfig(shuffle="buffer:64").shuffle == "buffer:64"
    for bad in ("buffer", "buffer:0", "buffer:x", "random", ""):
        with pytest.raises(ValueError) as error:
            RunConfig(shuffle=bad)
        assert f"shuffle={bad!r}" in one_line(error) and "buffer:N" in str(error.value)
    # A run recorded before --shuffle existed shuffled through 10,000 examples: it resumes so.
    record = RunConfig().to_dict()
    del record["shuffle"]
    assert RunConfig.from_dict(record).shuffle == "buffer:10000"
