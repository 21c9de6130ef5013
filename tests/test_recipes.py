"""The recipes in models/: each parses with the trainer's flags; the quick start runs."""

import glob
import json
import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

import ssal_keras
from ssal_keras import backbones, data, train  # noqa: F401  (train defines the flags)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "models", "*.flags")))


def test_every_paper_run_has_a_baseline_and_an_ssal_recipe():
    names = {os.path.basename(p)[: -len(".flags")] for p in RECIPES}
    for paper in ssal_keras.PAPER_MODELS:
        assert {f"{paper}_baseline", f"{paper}_ssal"} <= names, paper
    assert {"fashion_mnist_baseline", "fashion_mnist_ssal"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_parses_and_says_what_it_is(path, monkeypatch):
    with open(path) as f:
        header = f.read()
    for field in ("# Command:", "# Time:", "--model_dir="):
        assert field in header, field
    assert "Paper" in header
    monkeypatch.chdir(ROOT)  # nested --flagfile paths resolve from the repository root
    with flagsaver.flagsaver():
        flags.FLAGS(["train", f"--flagfile={path}", "--model_dir=/tmp/unused"])
        assert flags.FLAGS.backbone in backbones.BACKBONE_NAMES
        if flags.FLAGS.paper_model:
            assert flags.FLAGS.paper_model in ssal_keras.PAPER_MODELS
            assert ssal_keras.PAPER_MODELS[flags.FLAGS.paper_model].backbone == flags.FLAGS.backbone
        if path.endswith("_ssal.flags"):
            assert flags.FLAGS.groupings
        for name in flags.FLAGS.groupings:
            if name != "auto":
                assert os.path.exists(os.path.join(ROOT, name)), name


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_quick_start_recipe_runs(tmp_path):
    """The README's main job, on a slice of the data."""
    model_dir = str(tmp_path / "quick")
    result = subprocess.run(
        [sys.executable, "-m", "ssal_keras.train", "--flagfile=models/fashion_mnist_ssal.flags",
         f"--model_dir={model_dir}", "--train_examples=512", "--eval_examples=256",
         "--held_out_examples=0", "--epochs=1", "--log_every_steps=2"],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "+TR (base output) top-1" in result.stdout and "+JP (joint output)" in result.stdout
    with open(os.path.join(model_dir, "metrics.json")) as f:
        record = json.load(f)
    assert len(record["aux_top1"]) == 2 and record["completed"]


def test_nested_recipes_override_what_they_say(monkeypatch):
    monkeypatch.chdir(ROOT)
    with flagsaver.flagsaver():
        flags.FLAGS(["train", "--flagfile=models/fashion_mnist_joint_objective.flags",
                     "--model_dir=/tmp/unused"])
        assert flags.FLAGS.objective == "joint" and flags.FLAGS.head == ["cbr(64,3,2) gap"]
        assert flags.FLAGS.taps == ["stage2"] and flags.FLAGS.epochs == 5
    with flagsaver.flagsaver():
        flags.FLAGS(["train", "--flagfile=models/fashion_mnist_split_similar.flags",
                     "--model_dir=/tmp/unused"])
        assert flags.FLAGS.groupings == ["models/groupings/fashion_mnist_split_3.txt",
                                         "models/groupings/fashion_mnist_split_5.txt"]
        assert len(flags.FLAGS.head) == 2
