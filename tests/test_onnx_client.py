"""The deployment client ``export/onnx_predict.py``: runs where TensorFlow and Keras cannot.

Every run of the first tests is a subprocess whose ``import tensorflow`` / ``import keras`` (and
``ssal_keras``, ``tf2onnx``) raise ImportError, so the client is proven to need only NumPy,
onnxruntime and Pillow. Its probabilities are compared with the Keras model on the same pixels.
The hostile-input tests then call its ``main`` in-process (fast), on the same export and on
small hand-built ONNX models.
"""

import importlib.util
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import keras
import numpy as np
import pytest
from onnx import TensorProto, helper

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


# --- hostile input, in-process -------------------------------------------------------------
@pytest.fixture(scope="module")
def client():
    """The client module itself (loaded from its file, as users copy it)."""
    spec = importlib.util.spec_from_file_location("onnx_predict", CLIENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(client, capsys, *args, cwd):
    """``main(args)`` run in ``cwd``: ``(exit code, stdout, stderr)``."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = client.main(list(args))
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return code, out, err


def _error(client, capsys, *args, cwd, message):
    """The one error line of a refused call (nothing printed), checked against the regex
    ``message``."""
    code, out, err = _call(client, capsys, *args, cwd=cwd)
    assert code == 2 and out == "", (args, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("onnx_predict: error: "), err
    assert "Traceback" not in err and re.search(message, lines[0]), lines[0]
    return lines[0]


def _onnx(path, nodes, inputs, outputs, initializers=()):
    """Writes a hand-built ONNX model (opset 17); inputs and outputs are (name, type, shape)."""
    graph = helper.make_graph(
        nodes, "hand_built", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what ONNX Runtime of any recent version loads
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


F = TensorProto.FLOAT


def _mean_model(path, shape=("batch", 4, 4, 3), last="softmax"):
    """A classifier over channel means: ``joint = softmax(mean / 50)`` (or the NaN-prone
    ``sqrt(mean - 10)``), shape ``[batch, C]``."""
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2], keepdims=0)]
    if last == "softmax":
        nodes += [helper.make_node("Mul", ["mean", "scale"], ["scaled"]),
                  helper.make_node("Softmax", ["scaled"], ["joint"], axis=1)]
        constant = helper.make_tensor("scale", F, [], [0.02])
    else:
        nodes += [helper.make_node("Sub", ["mean", "shift"], ["shifted"]),
                  helper.make_node("Sqrt", ["shifted"], ["joint"])]
        constant = helper.make_tensor("shift", F, [], [10.0])
    _onnx(path, nodes, [("images", F, list(shape))], [("joint", F, [shape[0], shape[-1]])],
          [constant])


@pytest.fixture(scope="module")
def hand_built(tmp_path_factory):
    """Small ONNX models: servable (fixed batch 1 or 2, grey, NaN-prone) and not."""
    root = tmp_path_factory.mktemp("hand_built")
    for name, shape in (("mean", ("batch", 4, 4, 3)), ("fixed1", (1, 4, 4, 3)),
                        ("fixed2", (2, 4, 4, 3)), ("grey", ("batch", 4, 4, 1))):
        _mean_model(root / f"{name}.onnx", shape)
    _mean_model(root / "nan.onnx", last="sqrt")
    reduce = helper.make_node("ReduceMean", ["images"], ["joint"], axes=[1, 2], keepdims=0)
    _onnx(root / "two_inputs.onnx",
          [helper.make_node("Add", ["images", "more"], ["sum"]),
           helper.make_node("ReduceMean", ["sum"], ["joint"], axes=[1, 2], keepdims=0)],
          [("images", F, ["b", 4, 4, 3]), ("more", F, ["b", 4, 4, 3])], [("joint", F, ["b", 3])])
    _onnx(root / "rank3_input.onnx",
          [helper.make_node("ReduceMean", ["images"], ["joint"], axes=[1], keepdims=0)],
          [("images", F, ["b", 4, 12])], [("joint", F, ["b", 12])])
    _onnx(root / "double_input.onnx", [reduce], [("images", TensorProto.DOUBLE, ["b", 4, 4, 3])],
          [("joint", TensorProto.DOUBLE, ["b", 3])])
    _onnx(root / "rank4_output.onnx", [helper.make_node("Relu", ["images"], ["joint"])],
          [("images", F, ["b", 4, 4, 3])], [("joint", F, ["b", 4, 4, 3])])
    _onnx(root / "int_output.onnx",
          [reduce, helper.make_node("ArgMax", ["joint"], ["label"], axis=1, keepdims=1)],
          [("images", F, ["b", 4, 4, 3])], [("label", TensorProto.INT64, ["b", 1])])
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    np.save(root / "pixels.npy", pixels)
    return root, pixels


def _probabilities(out):
    """``[{class: probability}]`` of the JSON lines printed."""
    return [{t["class"]: t["probability"] for t in json.loads(line)["top"]}
            for line in out.splitlines()]


# The hostile-input tests loop over tables of cases inside one test each: every test item
# pays conftest's Keras reset (a gc.collect with TensorFlow loaded, ~0.4 s here).
def test_fixed_batch_model_runs_in_chunks(client, capsys, hand_built):
    root, pixels = hand_built
    for model in ("fixed1", "fixed2"):  # batch [1, ...]; [2, ...] with a padded last chunk
        code, out, err = _call(client, capsys, "--model", f"{model}.onnx", "--images",
                               "pixels.npy", cwd=root)
        assert code == 0, err
        one_by_one = []
        for i in range(len(pixels)):
            np.save(root / f"{model}_{i}.npy", pixels[i:i + 1])
            code, single, err = _call(client, capsys, "--model", f"{model}.onnx", "--images",
                                      f"{model}_{i}.npy", cwd=root)
            assert code == 0, err
            one_by_one += _probabilities(single)
        assert _probabilities(out) == one_by_one and len(one_by_one) == 3, model
        predictor = client.Predictor(str(root / f"{model}.onnx"))
        np.testing.assert_array_equal(
            predictor.predict(pixels), np.concatenate([predictor.predict(p[None]) for p in pixels]))


UNSERVABLE_MODELS = [
    ("two_inputs", r"two_inputs.onnx cannot be served by this client: it has 2 inputs; it "
                   r"needs one float32 input of shape \[batch, H, W, C\]"),
    ("rank3_input", r"it has the input 'images' \['b', 4, 12\] tensor\(float\) \(rank 3\); it "
                    r"needs"),
    ("double_input", r"'images' .* tensor\(double\) \(rank 4\); it needs one float32 input"),
    ("rank4_output", r"output 'joint' \['b', 4, 4, 3\] tensor\(float\) of rank4_output.onnx "
                     r"cannot be served.*float32 outputs of shape \[batch, classes\]"),
    ("int_output", r"output 'label' \['b', 1\] tensor\(int64\) .* cannot be served"),
]


def test_unservable_model_fails_in_one_line(client, capsys, hand_built):
    root, _ = hand_built
    for model, message in UNSERVABLE_MODELS:
        _error(client, capsys, "--model", f"{model}.onnx", "--images", "pixels.npy", cwd=root,
               message=message)


def test_nan_output_is_refused_naming_the_image(client, capsys, hand_built):
    root, _ = hand_built
    batch = np.stack([np.full((4, 4, 3), 200, np.uint8), np.zeros((4, 4, 3), np.uint8)])
    np.save(root / "dark.npy", batch)  # sqrt(mean - 10): NaN for the black image
    _error(client, capsys, "--model", "nan.onnx", "--images", "dark.npy", cwd=root,
           message=r"output 'joint' for dark.npy\[1\] is not finite \(NaN or inf\)")
    # The batches before the bad one stay printed, as strict JSON.
    code, out, err = _call(client, capsys, "--model", "nan.onnx", "--images", "dark.npy",
                           "--batch_size", "1", cwd=root)
    assert code == 2 and [json.loads(line)["image"] for line in out.splitlines()] == [
        "dark.npy[0]"]
    assert err.count("\n") == 1 and "dark.npy[1] is not finite" in err


def _png_16_bit_rgb(path, pixels):
    """A 48-bit RGB PNG (Pillow cannot write one; it reads it as 8-bit RGB)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))


def test_channel_policy(client, capsys, hand_built):
    """Alpha is dropped, palettes are converted, grey feeds RGB models and RGB grey ones."""
    root, pixels = hand_built
    rng = np.random.default_rng(3)
    alpha = rng.integers(0, 256, size=(4, 4, 1), dtype=np.uint8)
    PIL.fromarray(np.concatenate([pixels[0], alpha], axis=-1)).save(root / "rgba.png")
    palette = PIL.fromarray(pixels[1]).quantize(colors=8)
    palette.info["transparency"] = 0
    palette.save(root / "palette.png")
    PIL.fromarray(pixels[2, ..., 0]).save(root / "grey.png")
    expected = np.stack([pixels[0], np.asarray(palette.convert("RGB")),
                         np.repeat(pixels[2, ..., :1], 3, axis=-1)])
    np.save(root / "expected.npy", expected)
    code, out, err = _call(client, capsys, "--model", "mean.onnx", "--images", "rgba.png",
                           "palette.png", "grey.png", cwd=root)
    code_npy, out_npy, _ = _call(client, capsys, "--model", "mean.onnx", "--images",
                                 "expected.npy", cwd=root)
    assert code == code_npy == 0 and err == "", err
    assert _probabilities(out) == _probabilities(out_npy)
    code, out, err = _call(client, capsys, "--model", "grey.onnx", "--images", "rgba.png",
                           cwd=root)
    np.save(root / "luma.npy", np.asarray(PIL.fromarray(pixels[0]).convert("L"))[None])
    assert code == 0 and _probabilities(out) == _probabilities(
        _call(client, capsys, "--model", "grey.onnx", "--images", "luma.npy", cwd=root)[1])


def test_16_bit_images_are_refused(client, capsys, hand_built):
    """And images of other modes than the trainer's grey and colour ones."""
    root, pixels = hand_built
    PIL.fromarray(pixels[0, ..., 0].astype(np.uint16) * 257).save(root / "grey16.png")
    _png_16_bit_rgb(root / "rgb16.png", pixels[0].astype(np.uint16) * 257)
    assert PIL.open(root / "rgb16.png").mode == "RGB"  # what Pillow alone would decode
    for name, mode in (("grey16.png", "I;16"), ("rgb16.png", "RGB")):
        _error(client, capsys, "--model", "mean.onnx", "--images", name, cwd=root,
               message=rf"image {name} has {re.escape(mode)}.* 16-bit images are not "
                       "supported: convert to 8-bit")
    PIL.fromarray(pixels[0]).convert("LAB").save(root / "lab.tif")
    _error(client, capsys, "--model", "mean.onnx", "--images", "lab.tif", cwd=root,
           message=r"image lab.tif has mode LAB: .* convert to 8-bit grey or RGB")


def test_decompression_bombs_are_refused(client, capsys, monkeypatch, exported):
    root, _, _ = exported  # img0.png: 16x16 = 256 pixels, over each lowered limit
    too_large = r"image img0.png is too large to decode safely \(Image size \(256 pixels\)"
    for module, name, limit, message in [
        (PIL, "MAX_IMAGE_PIXELS", 100, too_large),  # Pillow errs over twice its limit
        (PIL, "MAX_IMAGE_PIXELS", 150, too_large),  # and warns over it: refused as well
        (client, "MAX_PIXELS", 255,
         r"image img0.png is 16x16 \(HxW\), 256 pixels, over this client's limit of 255"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(module, name, limit)
            _error(client, capsys, "--model", "ssal/model.onnx", "--images", "img0.png",
                   cwd=root, message=message)


def _wrong_files(root):
    np.savez(root / "archive.npz", images=np.zeros((1, 16, 16, 3)))
    shutil.copy(root / "archive.npz", root / "archive.npy")
    (root / "text.png").write_text("not an image\n")
    np.save(root / "strings.npy", np.array([["cat", "dog"]]))
    np.save(root / "objects.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    (root / "empty.npy").write_bytes(b"")


WRONG_FILES = [
    ("archive.npz", r"archive.npz: unknown image type .npz; --images takes .npy arrays"),
    ("archive.npy", r"archive.npy is an .npz archive, not a .npy array; --images takes "),
    ("text.png", r"cannot read image text.png \(cannot identify image file.*--images takes "
                 r".npy arrays \(N, H, W, C\) of raw pixels or image files \(.png, "),
    ("strings.npy", r"strings.npy holds <U3 values, not numbers; --images takes .npy arrays"),
    ("objects.npy", r"cannot read objects.npy as a .npy array \(.*Python objects.*--images"),
    ("empty.npy", r"cannot read empty.npy as a .npy array .*--images takes"),
]


def test_files_of_the_wrong_type_are_refused(client, capsys, exported, tmp_path):
    root, _, _ = exported
    _wrong_files(tmp_path)
    for name, message in WRONG_FILES:
        _error(client, capsys, "--model", str(root / "ssal" / "model.onnx"), "--images", name,
               cwd=tmp_path, message=message)


BAD_PIXELS = [  # dtype, {image: value}, message
    ("float32", {2: np.nan}, r"bad.npy\[2\] \(the first bad image of bad.npy\) has NaN or inf"),
    ("float64", {1: np.inf, 2: np.nan}, r"bad.npy\[1\] .* has NaN or inf values"),
    ("float32", {0: -1.0, 2: 256.0},
     r"bad.npy\[0\] .* has values in \[-1, 255\]; .*raw pixels in 0..255"),
    ("int16", {2: 300}, r"bad.npy\[2\] .* has values in \[0, 300\]"),
]


def test_npy_pixels_must_be_finite_and_in_range(client, capsys, monkeypatch, exported,
                                                 tmp_path):
    root, _, _ = exported
    monkeypatch.setattr(client, "NPY_CHUNK", 2)  # image 2 is in the second pass
    for dtype, bad, message in BAD_PIXELS:
        batch = np.full((3, 16, 16, 3), 255, dtype)
        batch[:, 0, 0, 0] = 0
        for index, value in bad.items():
            batch[index, 5, 5, 1] = value
        np.save(tmp_path / "bad.npy", batch)
        _error(client, capsys, "--model", str(root / "ssal" / "model.onnx"), "--images",
               "bad.npy", cwd=tmp_path, message=message)


_NOT_JSON = object()  # marks the raw-text cases below
MALFORMED_EXPORT_JSON = [  # changes to the fixture's export.json, message
    ({_NOT_JSON: "{\"class_names\": [\"cat\""}, r"cannot read .*export.json \(Expecting"),
    ({_NOT_JSON: "[1, 2]"}, r"export.json is not an export.json \(not a JSON object but list\)"),
    ({_NOT_JSON: "[" * 100_000 + "]" * 100_000}, r"cannot read .*export.json \(maximum recursion"),
    ({"class_names": "cat"}, r"export.json: field 'class_names' is not a list of strings"),
    ({"class_names": ["cat", 1, "car", "ship"]}, r"field 'class_names' is not a list of str"),
    ({"class_names": ["cat", "dog", "car"]},
     r"field 'class_names' has 3 names; the model has 4 classes"),
    ({"groupings": [1, 2]}, r"field 'groupings' is not a list of lists of group ids"),
    ({"groupings": [["a", "b", "c", "d"], [0, 1, 2, 0]]}, r"field 'groupings' is not a list"),
    ({"groupings": [[0, 0, 1, True], [0, 1, 2, 0]]}, r"field 'groupings' is not a list"),
    ({"groupings": [[0, 0, 1], [0, 1, 2, 0]]},
     r"field 'groupings\[0\]' has 3 entries; the model has 4 classes"),
    ({"groupings": [[0, 0, 1, 1]]}, r"field 'groupings' has 1 lists; the model has branches "
                                    r"up to aux_1"),
    ({"groupings": [[0, 0, 1, 5], [0, 1, 2, 0]]},
     r"field 'groupings\[0\]' has group 5; output aux_0 has 2 groups"),
    ({"num_classes": "4"}, r"field 'num_classes' is '4', not a positive int"),
    ({"num_classes": 5}, r"field 'num_classes' is 5; the model has 4 classes"),
    ({"outputs": {"joint": 4}}, r"field 'outputs' is not a list of"),
    ({"outputs": [{"name": "joint", "shape": 4}]}, r"field 'outputs' is not a list of"),
    ({"input": [None, 16, 16, 3]}, r"field 'input' is not an object"),
    ({"input": {"shape": [None, "16", 16, 3]}}, r"field 'input.shape' is \[None, '16', 16, 3\]"),
]


def test_malformed_export_json_fails_in_one_line(client, capsys, exported, tmp_path):
    root, _, _ = exported
    with open(root / "ssal" / "export.json") as f:
        good = json.load(f)
    shutil.copy(root / "ssal" / "model.onnx", tmp_path / "model.onnx")
    for change, message in MALFORMED_EXPORT_JSON:
        text = change.get(_NOT_JSON) or json.dumps({**good, **change})
        (tmp_path / "export.json").write_text(text)
        line = _error(client, capsys, "--model", str(tmp_path / "model.onnx"), "--images",
                      str(root / "img0.png"), cwd=tmp_path, message=message)
        assert "export.json" in line, line


# --- --resize: the trainer's evaluation resize-and-centre-crop ----------------------------
def _eval_geometry(height, width, side):
    """``ssal_keras/data/pipelines.py`` ``resize_and_center_crop``'s arithmetic, rewritten
    here (no TensorFlow): ``((new_height, new_width), (top, left))``."""
    short_side = int(round(side / 0.875))  # EVAL_CROP_FRACTION; Python's round: half to even
    scale = short_side / float(min(height, width))  # float64, as the trainer
    new = [max(int(np.round(s * scale)), short_side) for s in (height, width)]  # tf.round
    return tuple(new), ((new[0] - side) // 2, (new[1] - side) // 2)


def _tf_bilinear(image, height, width):
    """``tf.image.resize(..., method="bilinear")`` in NumPy: half-pixel centres, no
    antialias (checked against TensorFlow to 1e-2 on 8-bit images, float32 round-off)."""
    def axis(size_in, size_out):
        x = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
        floor = np.floor(x)
        low = np.maximum(floor, 0).astype(int)
        return low, np.minimum(np.ceil(x), size_in - 1).astype(int), x - floor
    y0, y1, dy = axis(image.shape[0], height)
    x0, x1, dx = axis(image.shape[1], width)
    a = image.astype(np.float64)
    dx = dx[None, :, None]
    top = a[y0][:, x0] * (1 - dx) + a[y0][:, x1] * dx
    bottom = a[y1][:, x0] * (1 - dx) + a[y1][:, x1] * dx
    return top * (1 - dy[:, None, None]) + bottom * dy[:, None, None]


def _smooth(height, width):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([127.5 + 127.5 * np.sin(x / 7.0 + y / 11.0), 255.0 * x / (width - 1),
                     255.0 * y / (height - 1)], axis=-1).astype(np.uint8)


def test_resize_crop_geometry_matches_the_trainer(client):
    pipelines = open(os.path.join(REPO, "ssal_keras", "data", "pipelines.py")).read()
    (fraction,) = re.findall(r"^EVAL_CROP_FRACTION = ([0-9.]+)", pipelines, re.M)
    assert client.EVAL_CROP_FRACTION == float(fraction)
    for height, width, side in [(20, 16, 16), (16, 40, 16), (300, 400, 224), (500, 375, 224),
                                (375, 500, 224), (120, 90, 224), (224, 224, 224),
                                (33, 32, 32), (97, 1000, 64)]:
        assert client.crop_geometry(height, width, side, side) == _eval_geometry(
            height, width, side), (height, width, side)
    assert _eval_geometry(20, 16, 16) == ((22, 18), (3, 1))  # 22.5 rounds to even, like tf
    # Which pixels survive: upscaled, Pillow's bilinear is TensorFlow's (no antialias to
    # differ), so the crop equals the reference resized and cropped by the trainer's offsets.
    for height, width, side in [(20, 16, 16), (16, 40, 16), (120, 90, 224)]:
        image = _smooth(height, width)
        (new_height, new_width), (top, left) = _eval_geometry(height, width, side)
        expected = _tf_bilinear(image, new_height, new_width)[top:top + side, left:left + side]
        ours = client.resize_and_center_crop(PIL.fromarray(image), side, side)
        assert ours.shape == (side, side, 3) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, atol=1e-3)
    # Downscaled, Pillow antialiases and TensorFlow does not: close on a smooth image
    # (measured: at most 2.5 of 255 here; on random noise up to ~115).
    for height, width in [(300, 400), (500, 375)]:
        image = _smooth(height, width)
        (new_height, new_width), (top, left) = _eval_geometry(height, width, 224)
        expected = _tf_bilinear(image, new_height, new_width)[top:top + 224, left:left + 224]
        ours = client.resize_and_center_crop(PIL.fromarray(image), 224, 224)
        assert np.abs(ours - expected).max() < 3.0 and np.abs(ours - expected).mean() < 0.3


def test_resize_predicts_the_centre_crop(client, capsys, exported, tmp_path):
    """An image of another aspect ratio gives the output of its evaluation centre crop."""
    root, _, _ = exported
    model = str(root / "ssal" / "model.onnx")
    predictor = client.Predictor(model)
    rng = np.random.default_rng(4)
    for height, width in [(20, 16), (16, 40), (50, 30)]:
        pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        PIL.fromarray(pixels).save(tmp_path / "odd.png")
        code, out, err = _call(client, capsys, "--model", model, "--images", "odd.png",
                               "--resize", "--top_k", "4", cwd=tmp_path)
        assert code == 0, err
        (new_height, new_width), (top, left) = _eval_geometry(height, width, 16)
        resized = np.stack([np.asarray(PIL.fromarray(pixels[..., c]).convert("F").resize(
            (new_width, new_height), PIL.BILINEAR)) for c in range(3)], axis=-1)
        crop = resized[top:top + 16, left:left + 16]
        expected = predictor.predict(crop[None])[0]
        (got,) = _probabilities(out)
        np.testing.assert_allclose([got[c] for c in range(4)], expected, atol=1e-6)
        squashed = np.asarray(PIL.fromarray(pixels).resize((16, 16), PIL.BILINEAR))
        assert not np.allclose(predictor.predict(squashed[None])[0], expected, atol=1e-6)
