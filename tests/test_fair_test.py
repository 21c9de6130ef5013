"""The fair test's statistics and its report (models/fair_test_fashion_mnist.py), on run
folders written by hand so every figure of the report can be checked."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ssal_keras import runs as run_files
from ssal_keras.analysis import summary
from tests.conftest import ROOT

SCRIPT = os.path.join(ROOT, "models", "fair_test_fashion_mnist.py")
CONFIGS = ("baseline", "ssal", "identity", "split_similar")


@pytest.mark.parametrize("a, b, verdict", [
    ([0.92, 0.93, 0.925], [0.91, 0.915, 0.912], "beats"),
    ([0.90, 0.905, 0.902], [0.91, 0.915, 0.912], "below"),
    ([0.92, 0.90, 0.91], [0.91, 0.91, 0.91], "no difference shown"),
    ([0.92], [0.91], "no difference shown"),  # one pair: no standard error
])
def test_paired_comparison_applies_the_protocols_rule(a, b, verdict):
    result = summary.paired_comparison(a, b)
    differences = np.subtract(a, b)
    assert result["differences"] == pytest.approx(differences.tolist())
    assert result["mean"] == pytest.approx(differences.mean()) and result["n"] == len(a)
    if len(a) > 1:
        assert result["se"] == pytest.approx(differences.std(ddof=1) / np.sqrt(len(a)))
    assert result["verdict"] == verdict


def test_paired_comparison_refuses_unpaired_values():
    with pytest.raises(ValueError, match="same seeds"):
        summary.paired_comparison([0.9, 0.9], [0.9])


def _write_run(folder, *, base, joint, aux=None, base_group=None, confusion=None):
    os.makedirs(os.path.join(folder, run_files.ANALYSIS_DIR))
    run_files.write_json(os.path.join(folder, run_files.METRICS_FILE), {
        "completed": True, "base_top1": base, "joint_top1": joint, "wall_seconds": 300.0})
    if confusion is not None:
        np.save(os.path.join(folder, run_files.HELD_OUT_CONFUSION_FILE), confusion)
    if aux is not None:
        run_files.write_json(os.path.join(folder, run_files.ANALYSIS_DIR, "errors.json"), {"held_out": {
            "branches": [{"aux_accuracy": a, "base_group_accuracy": g}
                         for a, g in zip(aux, base_group)]}})


def test_report_collects_every_run_and_compares_them_by_seed(tmp_path):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    confusion = np.diag(np.full(10, 90.0)) + 1.0  # 100 images per class, 10 misread as each other
    base = {"baseline": [0.910, 0.912, 0.909], "ssal": [0.913, 0.915, 0.913],
            "identity": [0.911, 0.913, 0.912], "split_similar": [0.909, 0.910, 0.908]}
    joint = {"baseline": [None] * 3, "ssal": [0.920, 0.921, 0.919],
             "identity": [0.918, 0.921, 0.913], "split_similar": [0.910, 0.911, 0.909]}
    for config in CONFIGS:
        for seed in range(3):
            branch = ({} if config == "baseline"
                      else dict(aux=[0.98, 0.96], base_group=[0.975, 0.95]))
            _write_run(str(runs / f"{config}_seed{seed}"), base=base[config][seed],
                       joint=joint[config][seed], confusion=confusion, **branch)
    result = subprocess.run([sys.executable, SCRIPT, "report", f"--runs={runs}", f"--docs={docs}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((docs / "fair_test.json").read_text())
    assert "protocol" in report and len(report["runs"]) == 12
    for record in report["runs"]:
        assert {"config", "seed", "base_top1", "joint_top1", "aux_group_top1_held_out",
                "base_group_top1_held_out", "command"} <= set(record)
        assert f"--flagfile=models/fashion_mnist_{record['config']}.flags" in record["command"]
        assert f"--seed={record['seed']}" in record["command"]
    baseline = [r for r in report["runs"] if r["config"] == "baseline"]
    # Groups of the shipped join-similar groupings, read off the hand-made confusion matrix.
    for b, path in enumerate(("fashion_mnist_3.txt", "fashion_mnist_5.txt")):
        grouping = np.loadtxt(os.path.join(ROOT, "models", "groupings", path), dtype=int)
        same = (grouping[:, None] == grouping[None, :]).sum()
        expected = (900 + same) / 1000
        assert baseline[0]["base_group_top1_held_out"][b] == pytest.approx(expected)
    assert baseline[0]["aux_group_top1_held_out"] == []

    primary = report["comparisons"]["ssal +JP vs baseline (primary)"]
    assert primary["differences"] == pytest.approx([0.010, 0.009, 0.010])
    assert primary["verdict"] == "beats" and primary["seeds"] == [0, 1, 2]
    capacity = report["comparisons"]["ssal +JP vs identity +JP (grouping vs capacity)"]
    assert capacity["differences"] == pytest.approx([0.002, 0.0, 0.006])
    assert capacity["verdict"] == "no difference shown"

    reference = json.loads((docs / "quick_start_reference.json").read_text())
    assert reference["top1"] == pytest.approx(np.mean(base["baseline"]))
    assert reference["seeds"] == 3 and "explained_in" in reference
    assert (docs / "fair_test.png").stat().st_size > 5000
    assert "| ssal +JP vs baseline (primary) | +1.00, +0.90, +1.00 |" in result.stdout


def test_report_without_runs_says_what_to_run(tmp_path):
    result = subprocess.run([sys.executable, SCRIPT, "report", f"--runs={tmp_path}",
                             f"--docs={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "run the test phase first" in result.stderr
