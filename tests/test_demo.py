"""The demo entry point, end to end on a few hundred Fashion-MNIST images."""

import json
import os
import re

import keras
import numpy as np
import pytest

import ssal_keras
from ssal_keras import data, grouping
from tests.conftest import ROOT, run_cli

needs_fashion_mnist = pytest.mark.skipif(
    not os.path.isdir(data.FASHION_MNIST_DIR),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)


def run_demo(*flags):
    return run_cli("ssal_keras.demo", *flags)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("demo: error:")]


@needs_fashion_mnist
def test_demo_runs_end_to_end(tmp_path):
    report_path = tmp_path / "report" / "demo.json"
    result = run_demo("--train_examples=400", "--test_examples=200", "--epochs=1",
                      f"--output_dir={tmp_path}", f"--report={report_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"baseline (\S+) \| \+TR \(base\) (\S+) \| \+JP \(joint\) (\S+)",
                      result.stdout)
    assert match, result.stdout
    assert all(0.0 <= float(value) <= 1.0 for value in match.groups())
    # --report: the printed figures, as printed (to 4 decimals), and the command.
    with open(report_path) as f:
        report = json.load(f)
    printed = [float(v) for v in match.groups()]
    stored = [report["test"][k] for k in ("baseline_top1", "base_top1", "joint_top1")]
    assert [round(v, 4) for v in stored] == printed
    assert report["command"].startswith("python3 -m ssal_keras.demo --train_examples=400")
    assert report["settings"]["epochs"] == 1 and len(report["test"]["aux_group_top1"]) == 2
    assert report["settings"]["recipe"] == "models/fashion_mnist_ssal.flags"
    assert report["settings"]["seed"] == 0  # the recipe's (RunConfig's default)
    # The demo's branches are the SSAL quick start's (models/fashion_mnist_ssal.flags).
    with open(os.path.join(ROOT, "models", "fashion_mnist_ssal.flags")) as f:
        recipe = [line.strip()[2:].split("=", 1) for line in f if line.startswith("--")]
    values = dict(recipe)
    heads = [v for k, v in recipe if k == "head"]
    branches = ", ".join(f"{tap} ({head}, weight {float(weight):g})" for tap, head, weight in zip(
        values["taps"].split(","), heads, values["loss_weights"].split(",")))
    assert f"branches: {branches}; alpha {float(values['alpha']):g}" in result.stdout
    groupings = [grouping.load_grouping(tmp_path / f"grouping_{i}.txt", num_classes=10)
                 for i in range(2)]
    assert [g.max() + 1 for g in groupings] == [3, 5]
    model = keras.saving.load_model(tmp_path / "ssal.keras", safe_mode=True)
    assert isinstance(model, ssal_keras.SSALModel)
    for g, branch in zip(groupings, model.branches):
        np.testing.assert_array_equal(g, branch.grouping)
    assert model.alpha == float(values["alpha"])
    assert [" ".join(b.head) for b in model.branches] == heads
    # The saved model normalises inside, as the trainer's: raw pixels 0..255 in (what
    # evaluate, export and the ONNX client feed it) give the accuracy the demo printed.
    preprocess = model.get_layer("preprocess")
    assert isinstance(preprocess, keras.layers.Rescaling)
    assert float(preprocess.scale) == pytest.approx(1 / 255)
    test_images, test_labels = data.load_fashion_mnist("test")
    joint = model.predict(test_images[:200], verbose=0)["joint"]
    joint_acc = float(np.mean(joint.argmax(-1) == test_labels[:200]))
    assert abs(joint_acc - float(match.group(3))) <= 1 / 200 + 1e-4, (joint_acc, match.group(3))
    assert not [p for p in os.listdir(tmp_path) if "partial" in p]


def test_demo_takes_its_settings_from_the_recipe(tmp_path):
    """Another recipe gives other branches, alpha and group counts; nothing is the demo's own.
    (The data folder is empty: the demo stops, after printing what it read, before training.)"""
    for name, groups in (("two.txt", [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]),
                         ("four.txt", [0, 0, 1, 1, 2, 2, 3, 3, 3, 3])):
        grouping.save_grouping(tmp_path / name, np.array(groups))
    recipe = tmp_path / "other.flags"
    recipe.write_text(
        f"--flagfile={os.path.join(ROOT, 'models', 'fashion_mnist_ssal.flags')}\n"
        "--groupings=two.txt,four.txt\n--taps=stage2,stage1\n--head=default\n"
        "--head=cbr(16,3) gap\n--loss_weights=0.25,1\n--alpha=0.7\n")
    empty = tmp_path / "no_data"
    empty.mkdir()
    result = run_demo(f"--recipe={recipe}", f"--data_dir={empty}")
    assert result.returncode == 2 and len(error_lines(result.stderr)) == 1, result.stderr
    assert (f"recipe {recipe}: resnet_fashion_mnist, branches: stage2 (default, weight 0.25), "
            "stage1 (cbr(16,3) gap, weight 1); alpha 0.7; groups 2, 4") in result.stdout


def test_demo_missing_dataset_is_one_line(tmp_path):
    # From another working directory: the default recipe is found in the repository.
    result = run_cli("ssal_keras.demo", f"--data_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "apt-get install dataset-fashion-mnist" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flag, match", [("--epochs=0", "--epochs must be >= 1"),
                                         ("--no_such_flag=1", "no_such_flag")])
def test_demo_bad_flags(flag, match):
    result = run_demo(flag)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and match in lines[0], result.stderr
    assert "Traceback" not in result.stderr

