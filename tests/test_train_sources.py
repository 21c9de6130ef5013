"""The trainer on the other data sources, in-process: TFDS (mocked) and image folders."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ssal_keras.training import RunConfig, train

SMALL_RUN = dict(epochs=1, batch_size=16, learning_rate=0.05, warmup_epochs=0.0,
                 log_every_steps=2, eval_batch_size=32)


def test_tfds_dataset_through_mock_data(tmp_path):
    model_dir = str(tmp_path / "tfds")
    with tfds.testing.mock_data(num_examples=48):
        train(RunConfig(dataset="tfds:mnist", augment="shift", **SMALL_RUN), model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        record = json.load(f)
    assert record["completed"] and record["history"][0]["eval"]["examples"] == 48
    with open(os.path.join(model_dir, "class_names.json")) as f:
        assert json.load(f) == [str(i) for i in range(10)]


def write_png_folder(root, *, classes, per_class, size=(16, 16)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 4):
                image = rng.integers(0, 60, (*size, 3)) + 60 * index
                png = tf.io.encode_png(np.clip(image, 0, 255).astype(np.uint8))
                (folder / f"{i}.png").write_bytes(png.numpy())


def test_folder_dataset_with_ssal_branches(tmp_path):
    root = tmp_path / "images"
    write_png_folder(root, classes=["cat", "dog", "fox", "owl"], per_class=12)
    grouping_file = tmp_path / "g.txt"
    grouping_file.write_text("0\n0\n1\n1\n")
    model_dir = str(tmp_path / "folder_run")
    train(RunConfig(dataset=f"folder:{root}", normalization="mean_std",
                    groupings=(str(grouping_file),), taps=("stage1",), head=("gap",),
                    augment="shift_flip", **SMALL_RUN), model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        record = json.load(f)
    assert record["completed"] and len(record["aux_top1"]) == 1
    assert record["history"][0]["eval"]["examples"] == 16
    with open(os.path.join(model_dir, "class_names.json")) as f:
        assert json.load(f) == ["cat", "dog", "fox", "owl"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="/nonexistent"):
        train(RunConfig(dataset="folder:/nonexistent", **SMALL_RUN), str(tmp_path / "run"))


def test_mixed_size_images_with_image_size(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for split, count in (("train", 10), ("val", 3)):
        for index, name in enumerate(["a", "b"]):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                size = (20 + 4 * (i % 3), 30 - 3 * (i % 2), 3)
                image = np.clip(rng.integers(0, 80, size) + 120 * index, 0, 255).astype(np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    model_dir = str(tmp_path / "run")
    train(RunConfig(dataset=f"folder:{root}", image_size=16, **SMALL_RUN), model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        record = json.load(f)
    assert record["completed"] and record["history"][0]["eval"]["examples"] == 6
    import keras

    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), safe_mode=True)
    assert tuple(model.input.shape[1:]) == (16, 16, 3)
