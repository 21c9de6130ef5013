"""int8 deployment: ``python -m ssal_keras.export --quantize=int8`` and its accuracy gate.

A small SSAL run is trained once (with held-out images, which calibrate and check); the
export CLI writes ``model.int8.onnx`` beside ``model.onnx`` and records the gate; the
deployment client serves it unchanged; a gate that fails leaves nothing that looks finished.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ssal_keras.export import bundle, quantization
from tests.conftest import ROOT, cli_env, one_error_line, run_cli, run_clis_at_once, small_config

PIL = pytest.importorskip("PIL.Image")
CLIENT = os.path.join(ROOT, "export", "onnx_predict.py")
SMALL_INT8 = ("--calibration_examples=32", "--int8_check_examples=96")


@pytest.fixture(scope="module")
def ssal_run(fashion_dir, tmp_path_factory):
    """A finished small SSAL run that kept 128 training images out."""
    from ssal_keras.training import train

    folder = tmp_path_factory.mktemp("int8") / "run"
    config = small_config(
        fashion_dir, held_out_examples=128, train_examples=1024, epochs=3, jit_compile="false",
        groupings=(os.path.join(ROOT, "models", "groupings", "fashion_mnist_3.txt"),),
        taps=("stage1",), head=("cbr(16,3,2) gap",))
    train(config, str(folder), log=lambda line: None)
    return folder


def _export(run, out, *flags):
    return run_cli("ssal_keras.export", f"--model_dir={run}", f"--output_dir={out}",
                   "--formats=onnx", *flags)


def test_int8_export_is_gated_recorded_and_served(ssal_run, tmp_path):
    out = tmp_path / "export"
    result = _export(ssal_run, out, "--quantize=int8", *SMALL_INT8)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["export.json", "model.int8.onnx", "model.onnx"]
    int8 = json.loads((out / "export.json").read_text())["int8"]
    assert int8["path"] == "model.int8.onnx"
    assert int8["calibration"] == {"source": f"held-out training images of {ssal_run}",
                                   "examples": 32}
    gate = int8["gate"]
    assert gate["output"] == "joint" and gate["examples"] == 96 and gate["max_drop_points"] == 0.5
    assert gate["drop_points"] == pytest.approx(100 * (gate["float_top1"] - gate["int8_top1"]))
    assert gate["drop_points"] <= 0.5 and 0.9 <= gate["argmax_agreement"] <= 1
    assert gate["float_top1"] > 0.3  # a trained model: the gate measures something
    assert f"int8: {out / 'model.int8.onnx'}: joint top-1" in result.stdout

    # Weights really are int8, and the joint fusion after the softmaxes stayed float.
    import onnx

    graph = onnx.load(str(out / "model.int8.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert "DequantizeLinear" in ops and "QuantizeLinear" in ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)
    tail = set(quantization.float_tail(graph))
    assert {n.op_type for n in graph.node if n.name in tail} >= {"Softmax", "Gather", "Mul"}
    assert not [n for n in graph.node if n.name in tail and "Quantize" in n.op_type]

    # The deployment client runs the int8 graph unchanged, agreeing with the float one.
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", pixels[..., None].astype("float32"))
    top = {}
    for name in ("model.onnx", "model.int8.onnx"):
        served = subprocess.run(
            [sys.executable, CLIENT, "--model", str(out / name), "--images",
             str(tmp_path / "images.npy"), "--top_k", "1"],
            capture_output=True, text=True, env=cli_env(), timeout=120)
        assert served.returncode == 0, served.stderr
        top[name] = [json.loads(line)["top"][0]["class"] for line in served.stdout.splitlines()]
    assert len(top["model.int8.onnx"]) == 4


def test_a_failed_gate_leaves_no_finished_export(ssal_run, tmp_path, monkeypatch):
    """Calibration on black images collapses every activation range: int8 then predicts one
    class, the gate refuses, and neither a new folder nor a replaced export is left half
    done."""
    from ssal_keras.runs import reader

    real_quantize = quantization.quantize
    monkeypatch.setattr(quantization, "quantize", lambda float_path, int8_path, images:
                        real_quantize(float_path, int8_path, np.zeros_like(images)))
    run = reader.load(str(ssal_run))
    data = bundle.int8_data(str(ssal_run), calibration_examples=32, check_examples=96)
    with pytest.raises(quantization.Int8AccuracyError, match="points below float's"):
        bundle.export_folder(run.model, str(tmp_path / "new"), formats="onnx",
                             quantize="int8", int8_data=data)
    assert os.listdir(tmp_path) == []

    previous = tmp_path / "previous"
    bundle.export_folder(run.model, str(previous), formats="onnx")
    before = (previous / "export.json").read_text()
    with pytest.raises(quantization.Int8AccuracyError):
        bundle.export_folder(run.model, str(previous), formats="onnx", quantize="int8",
                             int8_data=data, overwrite=True)
    assert sorted(os.listdir(previous)) == ["export.json", "model.onnx"]
    assert (previous / "export.json").read_text() == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


BAD_INT8 = {
    "unknown quantize": (["--quantize=int4"], "quantize"),
    "negative drop": (["--quantize=int8", "--max_int8_drop=-1"],
                      r"--max_int8_drop=-1.0: must be a number of top-1 points in 0\.\.100"),
    "no onnx format": (["--quantize=int8", "--formats=saved_model"],
                       "--quantize=int8 quantises the ONNX graph: add onnx to --formats"),
    "calibration of another shape": (["--quantize=int8", "--calibration_data=npz:{npz}"],
                                     r"training images of npz:.*: images of shape \(32, 32, 3\) "
                                     r"but the model takes \(28, 28, 1\)"),
}


@pytest.fixture(scope="module")
def bad_int8_exports(ssal_run, tmp_path_factory):
    """Every command line of ``BAD_INT8``, started side by side (each spends seconds importing
    TensorFlow), each with its own output folder; ``{case: (result, output folder)}``."""
    root = tmp_path_factory.mktemp("bad_int8")
    rng = np.random.default_rng(0)
    npz = root / "cifar_like.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(8) % 10, x_test=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(2))
    outs = {case: root / case.replace(" ", "_") / "out" for case in BAD_INT8}
    results = run_clis_at_once({
        case: ("ssal_keras.export", f"--model_dir={ssal_run}", f"--output_dir={outs[case]}",
               *[f.format(npz=npz) for f in flags], *SMALL_INT8)
        for case, (flags, _) in BAD_INT8.items()})
    return {case: (results[case], outs[case]) for case in BAD_INT8}


@pytest.mark.parametrize("case", sorted(BAD_INT8))
def test_bad_int8_input_is_one_line(bad_int8_exports, case):
    result, out = bad_int8_exports[case]
    assert result[0] == 2
    line = one_error_line(result, prog="export")
    assert re.search(BAD_INT8[case][1], line), line
    assert not out.exists()
