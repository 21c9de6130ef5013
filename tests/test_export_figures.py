"""The scripts behind BUILD_NOTES.md's export tables, end to end on the tiniest inputs.

``models/export_parity.py`` (Keras vs SavedModel vs ONNX Runtime) is driven on the tiny
DenseNet row and on a tiny trained run as its quick-start row; ``models/int8_gate.py`` (the
int8 gate) on the same run. Each JSON must hold its command and exactly the figures that the
exports' ``export.json`` recorded.
"""

import importlib.util
import json
import os

import numpy as np
import pytest

from tests.conftest import ROOT, small_config


def _script(name):
    """The module of ``models/NAME.py`` (models/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"models_{name}", os.path.join(ROOT, "models", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(fashion_dir, tmp_path_factory):
    """A finished tiny SSAL run of the quick-start network that kept 64 images out (the int8
    gate calibrates on 32 of them and checks the other 32)."""
    from ssal_keras.training import train

    folder = tmp_path_factory.mktemp("figures") / "tiny_seed3"
    config = small_config(
        fashion_dir, held_out_examples=64, train_examples=128, eval_examples=32, epochs=1,
        jit_compile="false", seed=3, taps=("stage1",), head=("cbr(8,3,2) gap",),
        groupings=(os.path.join(ROOT, "models", "groupings", "fashion_mnist_3.txt"),))
    train(config, str(folder), log=lambda line: None)
    return str(folder)


def test_export_parity_records_what_export_json_says(tiny_run, tmp_path):
    script = _script("export_parity")
    output, exports = tmp_path / "export_parity.json", tmp_path / "exports"
    argv = ["--rows=densenet,quick_start", f"--quick_start_run={tiny_run}",
            f"--output={output}", f"--exports={exports}"]
    assert script.main(argv) == 0
    report = json.loads(output.read_text())
    assert report["command"] == "python3 models/export_parity.py " + " ".join(argv)
    assert {"date", "versions", "tolerance", "opset", "check", "rows"} <= set(report)
    assert report["versions"]["tf2onnx"] and report["tolerance"] == 1e-4
    assert report["check"]["batch_sizes"] == [1, 7]
    assert [r["name"] for r in report["rows"]] == ["densenet", "quick_start"]
    for record in report["rows"]:
        meta = json.loads((exports / record["name"] / "export.json").read_text())
        assert record["model"] == script.ROWS[record["name"]][0]
        assert record["outputs"] == [o["name"] for o in meta["outputs"]]
        assert record["input_shape"] == meta["input"]["shape"]
        for fmt in ("saved_model", "onnx"):
            assert record[fmt] == meta["formats"][fmt]["max_abs_diff"] <= 1e-4
            assert record["per_output"][fmt] == meta["formats"][fmt]["max_abs_diff_per_output"]
        assert "base_only" not in record
    densenet, quick_start = report["rows"]
    assert densenet["outputs"] == ["joint"] and densenet["input_shape"] == [None, 16, 16, 1]
    assert quick_start["outputs"] == ["joint", "base", "aux_0"]
    assert quick_start["source"] == os.path.abspath(tiny_run)


def test_export_parity_refuses_an_unfinished_run(tmp_path):
    script = _script("export_parity")
    with pytest.raises(SystemExit, match="not a completed run"):
        script.main(["--rows=quick_start", f"--quick_start_run={tmp_path}",
                     f"--output={tmp_path / 'out.json'}"])
    assert not (tmp_path / "out.json").exists()


def test_int8_gate_records_what_export_json_says(tiny_run, tmp_path):
    script = _script("int8_gate")
    output, exports = tmp_path / "int8_gate.json", tmp_path / "exports"
    argv = ["--runs", tiny_run, f"--output={output}", f"--exports={exports}"]
    assert script.main(argv) == 0
    report = json.loads(output.read_text())
    assert report["command"] == "python3 models/int8_gate.py " + " ".join(argv)
    assert {"date", "versions", "method", "rows", "summary"} <= set(report)
    (record,) = report["rows"]
    out = exports / "tiny_seed3"
    assert record["command"] == (f"python -m ssal_keras.export --model_dir={tiny_run} "
                                 f"--output_dir={out} --formats=onnx --quantize=int8")
    meta = json.loads((out / "export.json").read_text())
    gate = meta["int8"]["gate"]
    assert record["seed"] == 3 and record["run"] == os.path.abspath(tiny_run)
    assert record["calibration"] == meta["int8"]["calibration"]
    assert record["calibration"]["examples"] == 32 and gate["examples"] == 32
    for figure in ("float_top1", "int8_top1", "drop_points", "argmax_agreement", "output",
                   "examples", "max_drop_points"):
        assert record[figure] == gate[figure], figure
    for figure in script.FIGURES:
        assert report["summary"][figure] == {"mean": gate[figure], "std": 0.0, "se": 0.0,
                                             "min": gate[figure], "max": gate[figure], "n": 1}


def test_int8_gate_summary_is_mean_sample_sd_and_se():
    script = _script("int8_gate")
    rows = [{"float_top1": f, "int8_top1": i, "drop_points": 100 * (f - i),
             "argmax_agreement": a}
            for f, i, a in ((0.931, 0.929, 0.9945), (0.935, 0.934, 0.9965),
                            (0.9275, 0.924, 0.9955))]
    summary = script.summarise(rows)
    for figure in script.FIGURES:
        values = [r[figure] for r in rows]
        assert summary[figure]["mean"] == pytest.approx(np.mean(values))
        assert summary[figure]["std"] == pytest.approx(np.std(values, ddof=1))
        assert summary[figure]["se"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(3))
        assert summary[figure]["n"] == 3
    assert round(100 * summary["float_top1"]["mean"], 2) == 93.12
    assert round(summary["drop_points"]["std"], 2) == 0.13


def test_int8_gate_refuses_an_unfinished_run(tmp_path):
    script = _script("int8_gate")
    with pytest.raises(SystemExit, match="not a completed run"):
        script.main(["--runs", str(tmp_path), f"--output={tmp_path / 'out.json'}"])
    assert not (tmp_path / "out.json").exists()
