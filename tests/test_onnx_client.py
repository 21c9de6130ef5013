"""The deployment client ``export/onnx_predict.py``: runs where TensorFlow and Keras cannot.

Every run is a subprocess whose ``import tensorflow`` / ``import keras`` (and ``ssal_keras``,
``tf2onnx``) raise ImportError, so the client is proven to need only NumPy, onnxruntime and
Pillow. Its probabilities are compared with the Keras model on the same pixels.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import ssal_keras
import ssal_keras.export as export
from ssal_keras.modeling import backbones

PIL = pytest.importorskip("PIL.Image")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(REPO, "export", "onnx_predict.py")
CLASS_NAMES = ["cat", "dog", "car", "ship"]
GROUPINGS = [[0, 0, 1, 1], [0, 1, 2, 0]]
BLOCKED = ("tensorflow", "keras", "tf_keras", "tf2onnx", "ssal_keras")


def _tiny(channels, name):
    return backbones.preact_resnet(
        block="basic", stage_blocks=(1, 1), stage_widths=(8, 16), stage_strides=(1, 2),
        stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False, num_classes=4,
        input_shape=(16, 16, channels), normalization="scale", name=name,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An SSAL export (RGB, every output, export.json) and a plain one (grey, base only)."""
    root = tmp_path_factory.mktemp("client")
    keras.utils.set_random_seed(2)
    model = ssal_keras.SSALModel(_tiny(3, "rgb"), branches=[
        ssal_keras.Branch(tap="stage1", grouping=GROUPINGS[0], head=["cbr(8,3)", "gap"]),
        ssal_keras.Branch(tap="stage2", grouping=GROUPINGS[1], head=["gap", "dense(8)"]),
    ], alpha=0.5)
    export.export_folder(model, str(root / "ssal"), formats="onnx", outputs="all",
                         class_names=CLASS_NAMES)
    plain = _tiny(1, "grey")
    export.export_folder(plain, str(root / "plain"), formats="onnx")

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    for i in range(2):
        PIL.fromarray(pixels[i]).save(root / f"img{i}.png")
    np.save(root / "batch.npy", pixels[2:].astype("float32"))
    grey = rng.integers(0, 256, size=(3, 16, 16), dtype=np.uint8)
    np.save(root / "grey.npy", grey)
    PIL.fromarray(rng.integers(0, 256, size=(20, 16, 3), dtype=np.uint8)).save(root / "big.png")
    np.save(root / "one_channel.npy", grey[..., None].astype("float32"))
    np.save(root / "scaled.npy", pixels[:1].astype("float32") * 2.0)
    (root / "corrupt.onnx").write_bytes(b"\x08\x07not an onnx model" * 50)
    # A plain copy of the model, without export.json beside it.
    (root / "bare").mkdir()
    shutil.copy(root / "ssal" / "model.onnx", root / "bare" / "model.onnx")

    reference = export.serving.reference_outputs(model, pixels.astype("float32"))
    grey_reference = export.serving.reference_outputs(plain, grey[..., None].astype("float32"))
    return root, reference, grey_reference


def _client(*args, cwd):
    """Runs the client where TensorFlow, Keras and our package cannot be imported."""
    blocker = os.path.join(cwd, "_blocked_imports")
    os.makedirs(blocker, exist_ok=True)
    for name in BLOCKED:
        with open(os.path.join(blocker, f"{name}.py"), "w") as f:
            f.write(f"raise ImportError('{name} is not available to the deployment client')\n")
    env = dict(os.environ, PYTHONPATH=blocker, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, CLIENT, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def _lines(result):
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_import_blocker_blocks(tmp_path):
    blocker = tmp_path / "_blocked_imports"
    _client("--help", cwd=str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(blocker))
    for name in ("tensorflow", "keras"):
        result = subprocess.run([sys.executable, "-c", f"import {name}"], env=env,
                                capture_output=True, text=True)
        assert result.returncode != 0 and "not available" in result.stderr


def test_client_matches_keras_without_tensorflow(exported):
    root, reference, _ = exported
    result = _client("--model", "ssal/model.onnx", "--images", "img0.png", "batch.npy",
                     "img1.png", "--top_k", "3", "--batch_size", "2", "--threads", "1",
                     cwd=str(root))
    lines = _lines(result)
    assert [line["image"] for line in lines] == [
        "img0.png", "batch.npy[0]", "batch.npy[1]", "batch.npy[2]", "img1.png"]
    order = [0, 2, 3, 4, 1]  # rows of the reference batch, in the order given
    for line, row in zip(lines, order):
        joint = reference["joint"][row]
        top = line["top"]
        assert len(top) == 3
        assert [t["class"] for t in top] == list(np.argsort(-joint, kind="stable")[:3])
        for t in top:
            assert abs(t["probability"] - joint[t["class"]]) <= 1e-4
            assert t["name"] == CLASS_NAMES[t["class"]]
            assert t["groups"] == [g[t["class"]] for g in GROUPINGS]


def test_client_reads_other_outputs(exported):
    root, reference, _ = exported
    base = _lines(_client("--model", "ssal/model.onnx", "--images", "img0.png",
                          "--output_name", "base", "--top_k", "4", cwd=str(root)))
    probs = {t["class"]: t["probability"] for t in base[0]["top"]}
    np.testing.assert_allclose([probs[c] for c in range(4)], reference["base"][0], atol=1e-4)
    aux = _lines(_client("--model", "ssal/model.onnx", "--images", "img0.png",
                         "--output_name", "aux_1", "--top_k", "9", cwd=str(root)))
    top = aux[0]["top"]
    assert sorted(t["group"] for t in top) == [0, 1, 2]  # k is capped at the group count
    for t in top:
        assert abs(t["probability"] - reference["aux_1"][0][t["group"]]) <= 1e-4
        assert t["classes"] == [c for c, g in enumerate(GROUPINGS[1]) if g == t["group"]]


def test_client_plain_export_grey_images_and_no_metadata(exported):
    root, _, grey_reference = exported
    lines = _lines(_client("--model", "plain/model.onnx", "--images", "grey.npy", "--top_k",
                           "1", cwd=str(root)))  # (N, H, W) for a one-channel model
    for line, probs in zip(lines, grey_reference["base"]):
        (top,) = line["top"]
        assert top["class"] == int(np.argmax(probs)) and top["groups"] == []
        assert top["name"] is None
    bare = _lines(_client("--model", "bare/model.onnx", "--images", "img0.png", "--top_k", "1",
                          cwd=str(root)))
    assert bare[0]["top"][0]["name"] is None and bare[0]["top"][0]["groups"] == []


def test_client_resizes_only_when_asked(exported):
    root, _, _ = exported
    lines = _lines(_client("--model", "ssal/model.onnx", "--images", "big.png", "--resize",
                           cwd=str(root)))
    assert lines[0]["image"] == "big.png" and len(lines[0]["top"]) == 4


@pytest.mark.parametrize("case,args,message", [
    ("wrong image size", ["--images", "big.png"],
     r"big.png is 20x16 \(HxW\); the model takes 16x16 images.*--resize"),
    ("wrong channel count", ["--images", "one_channel.npy"],
     r"one_channel.npy has 1 channel\(s\); the model takes .* 3 channel\(s\).*\(N, 16, 16, 3\)"),
    ("pixels out of range", ["--images", "scaled.npy"], r"raw pixels in 0..255"),
    ("missing model", ["--model", "nothing/model.onnx"],
     r"model file nothing/model.onnx not found"),
    ("corrupt model", ["--model", "corrupt.onnx"], r"cannot load corrupt.onnx as an ONNX model"),
    ("unknown output", ["--output_name", "aux_9"],
     r"--output_name aux_9 is not an output of the model; its outputs: .*joint"),
    ("missing image", ["--images", "nothing.png"], r"image file nothing.png not found"),
    ("unknown file type", ["--images", "ssal/export.json"], r"unknown image type .json"),
    ("bad option", ["--batch_size", "0"], r"--batch_size: must be a positive int"),
])
def test_client_bad_inputs_fail_in_one_line(exported, case, args, message):
    root, _, _ = exported
    given = list(args)
    if "--model" not in given:
        given += ["--model", "ssal/model.onnx"]
    if "--images" not in given:
        given += ["--images", "img0.png"]
    result = _client(*given, cwd=str(root))
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx_predict: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
