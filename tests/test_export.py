"""Export: Keras vs SavedModel vs ONNX Runtime on every backbone family and head type.

Each family gets a tiny variant; head types are combined into few models so that the
conversions (tf2onnx takes a few seconds each) stay affordable:

=========  ==============================  ===============================================
model      backbone                        branch heads
=========  ==============================  ===============================================
preact     preact_resnet (basic), 3 ch     [cbr, inception_e, gap], [se, gap, dense]
se_wrn     wide_resnet with SE, 3 ch       the ImageNet head blocks (PyTorch padding and pools)
densenet   densenet_bc, 1 channel          the default head (cbr, cbr, gap, dense)
resnet50   torchvision_resnet (ResNet50)   none: a baseline classifier, exported as ``base``
=========  ==============================  ===============================================
"""

import json
import os
import re

import keras
import numpy as np
import pytest

import ssal_keras
import ssal_keras.export as export
from ssal_keras.export.bundle import describe
from ssal_keras.modeling import backbones
from ssal_keras.training.resolved import IMAGENET_MEAN_STD
from tests.conftest import run_cli, run_clis_at_once

TOLERANCE = 1e-4


# --- models ----------------------------------------------------------------------------------
def _preact(num_classes=4, input_shape=(16, 16, 3), name="tiny_preact"):
    return backbones.preact_resnet(
        block="basic", stage_blocks=(1, 1), stage_widths=(8, 16), stage_strides=(1, 2),
        stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False,
        num_classes=num_classes, input_shape=input_shape, normalization="scale", name=name,
    )


def preact_ssal(alpha=0.5):
    return ssal_keras.SSALModel(_preact(), branches=[
        ssal_keras.Branch(tap="stage1", grouping=[0, 0, 1, 1],
                          head=["cbr(8,3)", "inception_e(0.05)", "gap"]),
        ssal_keras.Branch(tap="stage2", grouping=[0, 1, 2, 0], head=["se(4)", "gap", "dense(8)"]),
    ], alpha=alpha)


def se_wrn_ssal():
    backbone = backbones.wide_resnet(
        depth=10, width=1, se_reduction=4, num_classes=5, input_shape=(16, 16, 3),
        normalization=((120.0, 110.0, 100.0), (60.0, 62.0, 64.0)),
    )
    return ssal_keras.SSALModel(backbone, branches=[
        ssal_keras.Branch(tap="stage1", grouping=[0, 1, 1, 2, 2], head=[
            "cbr(8,3,2,0)", "inception_c_smaller(0.05)", "inception_d_smaller(0.05)",
            "inception_e_smaller(0.05)", "gap"], head_style="authors_pytorch"),
    ], alpha=0.4)


def densenet_ssal():
    backbone = backbones.densenet_bc(
        depth=10, growth_rate=4, num_classes=3, input_shape=(16, 16, 1), normalization="scale"
    )
    return ssal_keras.SSALModel(backbone, branches=[
        ssal_keras.Branch(tap="transition1", grouping=[0, 1, 1]),  # heads.DEFAULT_HEAD
    ], alpha=0.5)


def resnet50_plain():
    return backbones.build("resnet50_imagenet", num_classes=3, input_shape=(32, 32, 3),
                           normalization="scale")


MODELS = {
    "preact": (preact_ssal, "all"),
    "se_wrn": (se_wrn_ssal, "all"),
    "densenet": (densenet_ssal, "joint"),
    "resnet50": (resnet50_plain, None),  # plain: its default, base
}


def _images(shape, batch_size, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(batch_size, *shape[1:])).astype("float32")


def _keras_outputs(model, images):
    return export.serving.reference_outputs(model, images)


def _run_saved_model(path, images):
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(images=tf.constant(images)).items()}


def _onnx_session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run_onnx(session, images):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"images": images})))


def _joint_numpy(base, aux, groupings, alpha):
    """The joint prediction of docs/method.md, section 1, in float64: p_base(i) * prod_b
    p_aux_b(g_b(i)) ** alpha, normalised."""
    log = np.log(np.maximum(base.astype("float64"), 1e-38))
    for probs, grouping in zip(aux, groupings):
        log = log + alpha * np.log(np.maximum(probs.astype("float64"), 1e-38))[:, grouping]
    log -= log.max(axis=-1, keepdims=True)
    joint = np.exp(log)
    return joint / joint.sum(axis=-1, keepdims=True)


# --- parity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(MODELS))
def test_keras_saved_model_and_onnx_agree(kind, tmp_path):
    build, outputs = MODELS[kind]
    model = build()
    names = export.select_outputs(model, outputs)

    sm_report = export.to_saved_model(model, str(tmp_path / "saved_model"), outputs=outputs)
    onnx_report = export.to_onnx(model, str(tmp_path / "model.onnx"), outputs=outputs)
    assert sm_report["max_abs_diff"] <= TOLERANCE and onnx_report["max_abs_diff"] <= TOLERANCE
    assert onnx_report["opset"] == 17 and sm_report["signature"] == "serving_default"
    assert set(sm_report["outputs"]) == set(onnx_report["outputs"]) == set(names)
    if kind == "resnet50":
        assert names == ("base",)
    print(f"\n{kind}: outputs {names}; SavedModel max diff {sm_report['max_abs_diff']:.2g}, "
          f"ONNX max diff {onnx_report['max_abs_diff']:.2g}")

    session = _onnx_session(str(tmp_path / "model.onnx"))
    (graph_input,) = session.get_inputs()
    assert graph_input.name == "images" and graph_input.type == "tensor(float)"
    assert graph_input.shape == ["batch", *model.inputs[0].shape[1:]]
    assert sorted(o.name for o in session.get_outputs()) == sorted(names)

    for batch_size in (1, 7):
        # Fresh images, not the exporter's own check batch.
        images = _images(model.inputs[0].shape, batch_size, seed=100 + batch_size)
        expected = _keras_outputs(model, images)
        saved = _run_saved_model(str(tmp_path / "saved_model"), images)
        onnx = _run_onnx(session, images)
        assert set(saved) == set(onnx) == set(names)
        for name in names:
            assert saved[name].shape == onnx[name].shape == expected[name].shape
            assert saved[name].dtype == onnx[name].dtype == np.float32
            np.testing.assert_allclose(saved[name], expected[name], atol=TOLERANCE, rtol=0)
            np.testing.assert_allclose(onnx[name], expected[name], atol=TOLERANCE, rtol=0)
        if outputs == "all":
            # The fused output of the deployed graph is the paper's formula of its own parts.
            groupings = [b.grouping for b in model.branches]
            aux = [onnx[f"aux_{i}"] for i in range(len(groupings))]
            np.testing.assert_allclose(
                onnx["joint"], _joint_numpy(onnx["base"], aux, groupings, model.alpha),
                atol=1e-5,
            )


# --- output selection and alpha --------------------------------------------------------------
def test_select_outputs():
    ssal, plain = preact_ssal(), _preact(name="plain")
    assert export.select_outputs(ssal) == ("joint",)
    assert export.select_outputs(ssal, "all") == ("joint", "base", "aux_0", "aux_1")
    assert export.select_outputs(ssal, "aux_1,joint") == ("joint", "aux_1")
    assert export.select_outputs(ssal, ["base"]) == ("base",)
    assert export.select_outputs(plain) == ("base",)
    assert export.select_outputs(plain, "all") == ("base",)
    with pytest.raises(ValueError, match="--outputs=base"):
        export.select_outputs(plain, "joint")
    with pytest.raises(ValueError, match=r"unknown output 'aux_7'.*aux_0, aux_1"):
        export.select_outputs(ssal, "joint,aux_7")


def test_with_alpha_changes_only_the_joint_output():
    model = preact_ssal(alpha=0.5)
    rebuilt = export.with_alpha(model, 2.0)
    assert rebuilt.alpha == 2.0 and model.alpha == 0.5
    images = _images(model.inputs[0].shape, 3, seed=5)
    before, after = _keras_outputs(model, images), _keras_outputs(rebuilt, images)
    for name in ("base", "aux_0", "aux_1"):
        np.testing.assert_array_equal(before[name], after[name])
    assert np.abs(before["joint"] - after["joint"]).max() > 1e-3
    groupings = [b.grouping for b in model.branches]
    np.testing.assert_allclose(
        after["joint"],
        _joint_numpy(after["base"], [after["aux_0"], after["aux_1"]], groupings, 2.0),
        atol=1e-5,
    )
    assert export.with_alpha(model, None) is model
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        export.with_alpha(model, -0.1)
    with pytest.raises(ValueError, match="plain classifier"):
        export.with_alpha(_preact(name="plain"), 0.3)


# --- export.json's input ---------------------------------------------------------------------
def _plain(normalization, channels=3):
    return backbones.preact_resnet(
        block="basic", stage_blocks=(1,), stage_widths=(8,), stage_strides=(1,),
        stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False, num_classes=4,
        input_shape=(16, 16, channels), normalization=normalization, name="plain")


def test_export_json_states_the_graphs_normalization():
    """``input.normalization``, ``range`` and ``preprocessing`` say what the graph holds."""
    scale = describe(preact_ssal(), ("joint",))["input"]
    assert scale["normalization"]["kind"] == "scale"
    assert scale["normalization"]["divide_by"] == 255 and scale["normalization"]["offset"] == 0
    assert scale["range"] == [0, 255] and "divided by 255" in scale["preprocessing"]

    mean_std = describe(se_wrn_ssal(), ("joint",))["input"]
    assert mean_std["normalization"] == {
        "kind": "mean_std", "layer": "preprocess", "mean": [120.0, 110.0, 100.0],
        "std": [60.0, 62.0, 64.0], "invert": False}
    assert mean_std["range"] == [0, 255]
    assert "mean [120, 110, 100] and std [60, 62, 64]" in mean_std["preprocessing"]

    imagenet = describe(_plain(IMAGENET_MEAN_STD), ("base",))["input"]["normalization"]
    assert imagenet["kind"] == "mean_std"
    np.testing.assert_allclose(imagenet["mean"], IMAGENET_MEAN_STD[0], atol=1e-4)
    np.testing.assert_allclose(imagenet["std"], IMAGENET_MEAN_STD[1], atol=1e-4)

    none = describe(_plain(None, channels=1), ("base",))["input"]
    assert none["normalization"] == {"kind": "none"} and none["range"] is None
    assert "as it was trained on" in none["preprocessing"]
    # The fields the ONNX client reads keep their types.
    for spec in (scale, mean_std, none):
        assert isinstance(spec["preprocessing"], str) and spec["shape"][0] is None
    assert json.loads(json.dumps(mean_std)) == mean_std


def test_unexportable_models_are_refused(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    dynamic = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ValueError, match="no fixed size"):
        export.to_onnx(dynamic, str(tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match="opset must be an int in 13..18"):
        export.to_onnx(preact_ssal(), str(tmp_path / "m.onnx"), opset=19)
    with pytest.raises(ValueError, match="opset must be an int in 13..18"):
        export.export_folder(preact_ssal(), str(tmp_path / "out"), opset=True)
    assert not os.listdir(tmp_path)


def test_formats_table_and_artifacts():
    assert export.FORMATS == ("saved_model", "onnx")
    assert export.ARTIFACTS == {"saved_model": "saved_model", "onnx": "model.onnx"}
    assert export.check_formats("onnx, saved_model") == ("saved_model", "onnx")
    with pytest.raises(ValueError, match="no format given; valid formats: saved_model, onnx"):
        export.check_formats(" , ")


def test_staged_writes_are_all_or_nothing(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def fail(staged):
        os.mkdir(staged)
        (tmp_path / "seen").write_text(staged)
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        export.writers.write_staged(str(target), fail)
    # Staged beside the destination, and gone with the failure; the old folder is untouched.
    assert os.path.dirname(os.path.dirname((tmp_path / "seen").read_text())) == str(tmp_path)
    (tmp_path / "seen").unlink()
    assert os.listdir(target) == ["old.txt"] and os.listdir(tmp_path) == ["artifact"]

    def write(staged):
        os.mkdir(staged)
        with open(os.path.join(staged, "new.txt"), "w") as f:
            f.write("new")
        return "written"

    assert export.writers.write_staged(str(target), write) == "written"
    assert os.listdir(target) == ["new.txt"] and os.listdir(tmp_path) == ["artifact"]


def test_mixed_precision_models_are_exported_in_float32(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = preact_ssal(alpha=0.5)
    finally:
        keras.config.set_dtype_policy("float32")
    assert "mixed_float16" in export.serving.reduced_precision_policies(model)
    report = export.to_onnx(model, str(tmp_path / "model.onnx"), outputs="all", alpha=1.0)
    assert report["max_abs_diff"] <= TOLERANCE
    assert report["precision"]["exported"] == "float32"
    assert report["precision"]["trained"] == ["mixed_float16"]
    assert 0 < report["precision"]["max_abs_diff_to_trained"] < 1e-2  # float16 rounding
    assert keras.config.dtype_policy().name == "float32"
    twin = export.serving.as_float32(export.with_alpha(model, 1.0))
    assert export.serving.reduced_precision_policies(twin) == []
    images = _images(model.inputs[0].shape, 7, seed=9)
    onnx = _run_onnx(_onnx_session(str(tmp_path / "model.onnx")), images)
    for name, expected in _keras_outputs(twin, images).items():
        np.testing.assert_allclose(onnx[name], expected, atol=TOLERANCE, rtol=0)


# --- the export folder: atomicity ------------------------------------------------------------
def test_a_failed_check_leaves_nothing(tmp_path, monkeypatch):
    model = preact_ssal()
    reference = export.serving.reference_outputs

    def off_by_a_bit(*args, **kwargs):  # as if the exported graph computed something else
        return {k: v + 1e-3 for k, v in reference(*args, **kwargs).items()}

    monkeypatch.setattr(export.serving, "reference_outputs", off_by_a_bit)
    out = tmp_path / "out"
    with pytest.raises(export.ExportCheckError, match=r"differs from the Keras model by 0\.001"):
        export.export_folder(model, str(out), outputs="all")
    with pytest.raises(export.ExportCheckError):
        export.to_onnx(model, str(tmp_path / "model.onnx"))
    assert os.listdir(tmp_path) == []  # no output, no staging folder, no partial file


def test_export_folder_refuses_an_existing_export_unless_told(tmp_path):
    model = preact_ssal()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("kept")
    first = export.export_folder(model, str(out), formats="saved_model")
    assert first["formats"].keys() == {"saved_model"} and first["opset"] is None
    with pytest.raises(FileExistsError, match="already holds export.json, saved_model"):
        export.export_folder(model, str(out), formats="saved_model")
    second = export.export_folder(model, str(out), formats="saved_model", outputs="base",
                                  overwrite=True)
    assert [o["name"] for o in second["outputs"]] == ["base"]
    assert sorted(os.listdir(out)) == ["export.json", "notes.txt", "saved_model"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert _run_saved_model(str(out / "saved_model"), _images((None, 16, 16, 3), 2, 0)).keys() \
        == {"base"}


# --- the command line -------------------------------------------------------------------------
def _export_cli(*flags):
    return run_cli("ssal_keras.export", *flags, env={"CUDA_VISIBLE_DEVICES": ""})


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """A trainer-style run folder of an SSAL model, and one of a plain classifier."""
    root = tmp_path_factory.mktemp("runs")
    keras.utils.set_random_seed(1)
    ssal_dir, plain_dir = root / "ssal_run", root / "plain_run"
    ssal_dir.mkdir()
    plain_dir.mkdir()
    preact_ssal(alpha=0.5).save(str(ssal_dir / "model.keras"))
    (ssal_dir / "class_names.json").write_text(json.dumps(["cat", "dog", "car", "ship"]))
    _preact(name="plain").save(str(plain_dir / "model.keras"))
    return ssal_dir, plain_dir


def test_cli_exports_a_run_with_another_alpha(run_dirs, tmp_path):
    ssal_dir, _ = run_dirs
    out = tmp_path / "export"
    result = _export_cli(f"--model_dir={ssal_dir}", f"--output_dir={out}", "--outputs=all",
                         "--alpha=1.5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "onnx:" in result.stdout and "saved_model:" in result.stdout
    assert sorted(os.listdir(out)) == ["export.json", "model.onnx", "saved_model"]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []

    meta = json.loads((out / "export.json").read_text())
    assert meta["opset"] == 17 and meta["alpha"] == 1.5 and meta["alpha_trained"] == 0.5
    assert meta["class_names"] == ["cat", "dog", "car", "ship"]
    assert meta["groupings"] == [[0, 0, 1, 1], [0, 1, 2, 0]] and meta["num_groups"] == [2, 3]
    assert meta["input"] == {
        "name": "images", "dtype": "float32", "shape": [None, 16, 16, 3], "layout": "NHWC",
        "range": [0, 255], "preprocessing": "inside the graph (raw pixels 0..255 in): "
        "divided by 255",
        "normalization": {"kind": "scale", "layer": "preprocess", "scale": pytest.approx(1 / 255),
                          "offset": 0.0, "divide_by": 255},
    }
    assert [o["name"] for o in meta["outputs"]] == ["joint", "base", "aux_0", "aux_1"]
    assert [o["shape"] for o in meta["outputs"]] == [[None, 4], [None, 4], [None, 2], [None, 3]]
    for fmt in ("saved_model", "onnx"):
        assert meta["formats"][fmt]["max_abs_diff"] <= TOLERANCE
        assert meta["formats"][fmt]["batch_sizes"] == [1, 7]
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"} <= set(
        meta["versions"])

    # The deployed joint is the Keras model's with alpha 1.5, not with its trained 0.5.
    model = keras.saving.load_model(str(ssal_dir / "model.keras"), safe_mode=True)
    images = _images((None, 16, 16, 3), 7, seed=3)
    onnx = _run_onnx(_onnx_session(str(out / "model.onnx")), images)
    saved = _run_saved_model(str(out / "saved_model"), images)
    with_alpha = _keras_outputs(export.with_alpha(model, 1.5), images)
    trained = _keras_outputs(model, images)
    for outputs in (onnx, saved):
        np.testing.assert_allclose(outputs["joint"], with_alpha["joint"], atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(outputs["base"], trained["base"], atol=TOLERANCE, rtol=0)
    assert np.abs(onnx["joint"] - trained["joint"]).max() > 1e-3


def test_cli_exports_a_plain_classifier_as_base(run_dirs, tmp_path):
    _, plain_dir = run_dirs
    out = tmp_path / "export"
    result = _export_cli(f"--model_dir={plain_dir}", f"--output_dir={out}", "--formats=onnx")
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "export.json").read_text())
    assert [o["name"] for o in meta["outputs"]] == ["base"]
    assert meta["groupings"] == [] and meta["alpha"] is None and meta["class_names"] is None
    assert sorted(os.listdir(out)) == ["export.json", "model.onnx"]


CLI_BAD_INPUTS = {case: (flags, message) for case, flags, message in [
    ("missing model dir", ["--model_dir={root}/nothing"], "model_dir .* does not exist"),
    ("no model.keras", ["--model_dir={root}"], "no model.keras in"),
    ("unknown outputs", ["--outputs=joint,aux_9"], "unknown output 'aux_9'"),
    ("joint of a plain model", ["--model_dir={plain}", "--outputs=joint"],
     "no joint output.*--outputs=base"),
    ("negative alpha", ["--alpha=-0.5"], "--alpha must be >= 0"),
    ("opset out of range", ["--opset=12"], r"--opset must be in 13\.\.18 \(tf2onnx 1\.17\); "
                                            "received 12"),
    ("unknown format", ["--formats=onnx,tflite"], "unknown format.* tflite; valid formats"),
]}


@pytest.fixture(scope="module")
def cli_bad_inputs(run_dirs, tmp_path_factory):
    """Every bad command line of ``CLI_BAD_INPUTS``, run side by side, each with its own
    folder to check that nothing was written."""
    ssal_dir, plain_dir = run_dirs
    root = tmp_path_factory.mktemp("bad_exports")
    commands = {}
    for case, (flags, _) in CLI_BAD_INPUTS.items():
        given = [f.format(root=ssal_dir.parent, plain=plain_dir) for f in flags]
        if not any(f.startswith("--model_dir") for f in given):
            given.append(f"--model_dir={ssal_dir}")
        os.makedirs(root / case)
        commands[case] = ("ssal_keras.export", *given,
                          f"--output_dir={root / case / 'export'}")
    return root, run_clis_at_once(commands)


@pytest.mark.parametrize("case", sorted(CLI_BAD_INPUTS))
def test_cli_bad_inputs_fail_in_one_line(cli_bad_inputs, case):
    root, results = cli_bad_inputs
    returncode, _, stderr = results[case]
    assert returncode == 2, (case, stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.startswith("export:")]
    assert len(lines) == 1 and lines[0].startswith("export: error: "), stderr[-2000:]
    assert re.search(CLI_BAD_INPUTS[case][1], lines[0]), lines[0]
    assert "Traceback" not in stderr
    assert os.listdir(root / case) == []
