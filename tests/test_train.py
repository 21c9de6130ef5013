"""Training end to end: runs, resumption, replicas, workers, auto groupings, errors.

Runs that need no fresh process train in-process through ``ssal_keras.training.train`` (the
code path of the CLI); a kill, logical CPU devices and several workers need their own
processes, and the CLI's own behaviour (flags, one-line errors, its closing lines) is tested
through ``python -m ssal_keras.train``. Every run is a few hundred Fashion-MNIST images (a
generated IDX copy, so the suite needs no installed dataset) with the quick-start network.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

import ssal_keras
from ssal_keras import grouping
from ssal_keras.runs import reader
from ssal_keras.training import RunConfig, checkpoints, train
from ssal_keras.training.config import read_config
from tests.conftest import (
    ROOT,
    cli_env,
    metrics,
    one_error_line,
    run_clis_at_once,
    run_train,
    small_config,
    train_args,
)


def quiet(line):
    """A ``log`` for in-process runs (pytest shows captured output on failure)."""
    print(line)


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, fashion_dir):
    """A finished baseline with held-out images: the grouping source of the SSAL tests."""
    model_dir = str(tmp_path_factory.mktemp("runs") / "baseline")
    train(small_config(fashion_dir, held_out_examples=100), model_dir, log=quiet)
    return model_dir


def test_baseline_run_writes_the_run_folder(baseline_dir, fashion_dir):
    record = metrics(baseline_dir)
    assert record["completed"] and record["epochs"] == 2 and len(record["history"]) == 2
    assert 0.0 <= record["base_top1"] <= record["base_top5"] <= 1.0
    assert record["joint_top1"] is None and record["aux_top1"] == []
    assert record["num_replicas"] == 1 and record["params"] == 78_042
    assert record["train_images_per_sec"] > 0 and record["wall_seconds"] > 0
    model = keras.saving.load_model(os.path.join(baseline_dir, "model.keras"), safe_mode=True)
    assert model.count_params() == 78_042
    confusion = np.load(os.path.join(baseline_dir, "held_out_confusion.npy"))
    assert confusion.shape == (10, 10) and confusion.sum() == 100
    with open(os.path.join(baseline_dir, "class_names.json")) as f:
        assert json.load(f)[0] == "t-shirt/top"
    # The run's record is its config, typed, and reads back equal.
    with open(os.path.join(baseline_dir, "run.json")) as f:
        saved = json.load(f)
    assert saved["batch_size"] == 32 and saved["held_out_examples"] == 100
    assert read_config(baseline_dir) == small_config(
        fashion_dir, held_out_examples=100)
    assert os.listdir(os.path.join(baseline_dir, "tensorboard", "train"))
    # Once complete, the same call returns its metrics without training.
    lines = []
    again = train(small_config(fashion_dir, held_out_examples=100), baseline_dir,
                  log=lines.append)
    assert again == record and len(lines) == 1 and "the run is complete" in lines[0]


def test_ssal_run_with_auto_groupings(tmp_path, fashion_dir, baseline_dir):
    model_dir = str(tmp_path / "ssal")
    config = small_config(
        fashion_dir, held_out_examples=100, groupings=("auto",), grouping_source=baseline_dir,
        num_groups=(3, 5), taps=("stage1", "stage2"), head=("cbr(16,3) gap", "gap"),
        loss_weights=(0.5, 1.0), alpha=0.4, mixed_precision=True, label_smoothing=0.1,
        nesterov=True)
    record = train(config, model_dir, log=quiet)
    assert record == metrics(model_dir)
    assert record["joint_top1"] is not None and len(record["aux_top1"]) == 2
    # The process's own precision is left as it was.
    assert keras.mixed_precision.global_policy().name == "float32"
    confusion = np.load(os.path.join(baseline_dir, "held_out_confusion.npy"))
    np.testing.assert_array_equal(
        np.load(os.path.join(model_dir, "groupings", "confusion.npy")), confusion)
    distance = grouping.confusion_distance(confusion, "join_similar")
    for index, k in enumerate((3, 5)):
        saved = grouping.load_grouping(os.path.join(model_dir, "groupings",
                                                    f"grouping_{index}.txt"))
        np.testing.assert_array_equal(saved, grouping.balanced_grouping(distance, k))
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), safe_mode=True)
    assert isinstance(model, ssal_keras.SSALModel) and model.alpha == 0.4
    assert [b.loss_weight for b in model.branches] == [0.5, 1.0]

    # The evaluation CLI reproduces the run's final numbers on the same split, bit for bit,
    # under mixed precision too: one evaluation code path (scoring.score), the run's XLA
    # setting and evaluation batch size, read back from run.json.
    result = run_train(f"--model_dir={model_dir}", module="ssal_keras.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("base_top1", "base_top5", "joint_top1", "joint_top5", "aux_top1"):
        assert scores[key] == record[key], key


#: ``python -c _KILLED_AT_STEP N ARGS``: ``python -m ssal_keras.train ARGS`` that sends itself
#: SIGKILL as its N-th training step starts (after the steps, logs and checkpoints before it),
#: the way tests/test_faults.py kills its runs: at a fixed call, never a race with a parent.
_KILLED_AT_STEP = r"""
import os, runpy, signal, sys
from ssal_keras.training import trainer

when, calls, original = int(sys.argv[1]), [0], trainer.Trainer._run_step

def killing(self, iterator):
    calls[0] += 1
    if calls[0] == when:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, iterator)

trainer.Trainer._run_step = killing
sys.argv[1:] = sys.argv[2:]
runpy.run_module("ssal_keras.train", run_name="__main__", alter_sys=True)
"""


def _step_losses(lines):
    """``{"epoch E/N step S/M": loss}`` of a run's progress lines."""
    return {line.split(" loss ")[0]: float(line.split(" loss ")[1].split()[0])
            for line in lines if " loss " in line}


def test_killed_run_resumes_and_completes_and_ends_with_its_figures(tmp_path, fashion_dir):
    model_dir = str(tmp_path / "killed")
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"top1": 0.9123, "std": 0.0021, "seeds": 3,
                                     "label": "the baseline", "explained_in": "BUILD_NOTES.md"}))
    args = train_args(model_dir, fashion_dir, "--checkpoint_steps=2", "--log_every_steps=1",
                      "--epochs=3", f"--reference={reference}")
    # 8 steps an epoch: the command kills itself as training step 13 (epoch 2, step 5)
    # starts, after step 12's checkpoint (epoch 2, step 4), in the middle of epoch 2.
    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_STEP, "13", *args], cwd=ROOT,
                            env=cli_env(), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    progress = [line for line in killed.stdout.splitlines() if line.startswith("epoch ")]
    assert progress[-1].startswith("epoch 2/3 step 4/8 "), progress[-3:]
    newest = checkpoints.files(os.path.join(model_dir, "checkpoints"))[0]
    assert os.path.basename(newest) == "ckpt-12"
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
    assert metrics(model_dir)["completed"] is False
    assert [r["epoch"] for r in metrics(model_dir)["history"]] == [1]

    result = run_train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from checkpoint {newest}: epoch 2, step 4 of 8" in result.stdout
    resumed = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert resumed[0].startswith("epoch 2/3 step 5/8 "), resumed[:3]
    assert "epoch 1/3 step" not in result.stdout
    record = metrics(model_dir)
    assert record["completed"] and [r["epoch"] for r in record["history"]] == [1, 2, 3]
    assert not [p for p in os.listdir(model_dir) if p.startswith(".partial")]
    # The resumed steps are the uninterrupted run's: the same epoch's permutation (the full
    # shuffle) from the same step on, the same augmentation, so the same losses step by step.
    whole = run_train(*train_args(str(tmp_path / "whole"), fashion_dir, "--checkpoint_steps=2",
                                  "--log_every_steps=1", "--epochs=3"))
    assert whole.returncode == 0, whole.stderr[-3000:]
    uninterrupted = _step_losses(whole.stdout.splitlines())
    after_kill = _step_losses(resumed)
    assert len(after_kill) == 12 and set(after_kill) <= set(uninterrupted)
    np.testing.assert_allclose([after_kill[k] for k in after_kill],
                               [uninterrupted[k] for k in after_kill], atol=2e-4)
    # It ends with the reference, its own figures and where they are explained.
    assert result.stdout.strip().splitlines()[-3:] == [
        "reference: test top-1 0.9123 ± 0.0021, the baseline (3 seed(s))",
        f"this run: base output top-1 {record['base_top1']:.4f}",
        "explained in: BUILD_NOTES.md"]

    # Once complete, the same command says so and repeats its results without training.
    result = run_train(*args)
    assert result.returncode == 0 and "the run is complete" in result.stdout
    assert f"this run: base output top-1 {record['base_top1']:.4f}" in result.stdout
    assert "epoch" not in result.stdout.replace("3 epochs", "")


def test_two_mirrored_replicas_match_one_device(tmp_path, fashion_dir):
    # Same global batch, same data order, BatchNorm statistics synchronised over the global
    # batch: the only difference left is the order of float32 sums in the gradient all-reduce
    # and in the BatchNorm moments, a few ulps per step that two epochs amplify to ~1e-5.
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    train(small_config(fashion_dir, augment="none", jit_compile=False), one, log=quiet)
    # Logical CPU devices must be made before TensorFlow starts: a process of its own.
    result = run_train(*train_args(two, fashion_dir, "--augment=none", "--jit_compile=false",
                                   "--strategy=mirrored", "--logical_cpu_devices=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replica(s), global batch 32, 16 per replica" in result.stdout
    a, b = metrics(one), metrics(two)
    assert b["num_replicas"] == 2
    losses_a = [r["train_loss"] for r in a["history"]]
    losses_b = [r["train_loss"] for r in b["history"]]
    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-4)
    assert a["base_top1"] == pytest.approx(b["base_top1"], abs=1 / 128 + 1e-9)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_on_loopback(tmp_path, fashion_dir):
    model_dir = str(tmp_path / "workers")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "ssal_keras.train",
             *train_args(model_dir, fashion_dir, "--strategy=multi_worker", "--epochs=1")],
            cwd=ROOT, env=cli_env(TF_CONFIG=config), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    record = metrics(model_dir)
    assert record["num_replicas"] == 2 and record["completed"]
    assert "2 replica(s), global batch 32, 16 per replica" in outputs[0][0]
    assert os.path.exists(os.path.join(model_dir, "model.keras"))
    assert not [p for p in os.listdir(model_dir) if p.startswith(".scratch")]


# --- errors: one line from the CLI, one ValueError naming the setting from Python --------------
CLI_ERRORS = {
    "unknown flag": (["--no_such_flag=1"], "no_such_flag"),
    "batch size": (["--batch_size=0"], "batch_size=0: must be an integer >= 1"),
    "missing folder": (["--dataset=folder:/nonexistent/images"], "/nonexistent/images"),
    "missing grouping": (["--groupings=/nonexistent/g.txt", "--taps=stage1"],
                         "grouping file /nonexistent/g.txt does not exist"),
    "auto without source": (["--groupings=auto", "--num_groups=3"],
                            "groupings=auto needs a baseline run folder"),
    "replicas": (["--strategy=mirrored", "--logical_cpu_devices=2", "--batch_size=33"],
                 "does not divide across 2 replicas"),
    "missing reference": (["--reference=/nonexistent/reference.json"],
                          "/nonexistent/reference.json: no such file"),
    "reference not json": (["--reference=setup.py"], "--reference=setup.py is not valid JSON"),
    "reference not a figure": (["--reference=docs/summary.json"],
                               "must be a JSON object with ['explained_in', 'label'"),
    "missing flagfile": (["--flagfile=/nonexistent/recipe.flags"],
                         "cannot read flagfile /nonexistent/recipe.flags"),
}


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory, fashion_dir):
    root = tmp_path_factory.mktemp("bad")
    return root, run_clis_at_once({
        name: ("ssal_keras.train", *train_args(root / name.replace(" ", "_"), fashion_dir,
                                               *extra))
        for name, (extra, _) in CLI_ERRORS.items()})


@pytest.mark.parametrize("name", sorted(CLI_ERRORS))
def test_cli_errors_are_one_line(cli_errors, name):
    root, results = cli_errors
    line = one_error_line(results[name])
    assert CLI_ERRORS[name][1] in line, line
    assert not os.path.exists(root / name.replace(" ", "_") / "model.keras")


def test_grouping_that_does_not_match_the_classes(tmp_path, fashion_dir):
    path = tmp_path / "g.txt"
    grouping.save_grouping(path, [0, 1, 0, 1])
    config = small_config(fashion_dir, groupings=(str(path),), taps=("stage1",))
    with pytest.raises(ValueError, match="has 4 labels but fashion_mnist has 10 classes"):
        train(config, str(tmp_path / "run"), log=quiet)


def test_resuming_with_other_settings_is_refused(fashion_dir, baseline_dir):
    config = small_config(fashion_dir, held_out_examples=100, batch_size=64)
    with pytest.raises(ValueError, match="started with batch_size=32, but this config says "
                                         "batch_size=64"):
        train(config, baseline_dir, log=quiet)
    # Settings that do not change the result may differ.
    same = dataclasses.replace(config, batch_size=32, log_every_steps=7, eval_batch_size=64)
    assert train(same, baseline_dir, log=quiet)["completed"]


def test_a_run_folder_of_flags_txt_still_resumes_and_loads(tmp_path, fashion_dir, baseline_dir):
    """Run folders written before run.json keep their settings as flagfile lines."""
    old = tmp_path / "old"
    os.makedirs(old)
    for name in ("metrics.json", "model.keras", "class_names.json"):
        with open(os.path.join(baseline_dir, name), "rb") as f:
            (old / name).write_bytes(f.read())
    config = small_config(fashion_dir, held_out_examples=100, jit_compile="true")
    (old / "flags.txt").write_text(
        "".join(f"--{f.name}={','.join(map(str, v)) if isinstance(v, tuple) else v}\n"
                for f in dataclasses.fields(config)
                if (v := getattr(config, f.name)) is not None and not isinstance(v, bool))
        + "--nomixed_precision\n--jit_compile\n--taps=\n")
    assert read_config(old) == config
    assert reader.load(old).config == config
    assert train(config, str(old), log=quiet) == metrics(baseline_dir)
    (old / "flags.txt").write_text("--epochs=zero\n")
    with pytest.raises(ValueError, match=r"flags.txt holds no valid run config \(--epochs=zero"):
        read_config(old)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fashion_dir):
    model_dir = str(tmp_path / "nan")
    config = small_config(fashion_dir, learning_rate=1e30, checkpoint_steps=1,
                          log_every_steps=1)
    with pytest.raises(ValueError, match="training loss became .* Last good checkpoint"):
        train(config, model_dir, log=quiet)
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))


def test_train_takes_a_run_config():
    with pytest.raises(ValueError, match="config must be a ssal_keras.training.RunConfig; "
                                         "received dict"):
        train({"epochs": 1}, "/tmp/unused")
    assert isinstance(RunConfig(), RunConfig)


def test_a_notebook_trains_evaluates_and_exports_through_the_python_api(tmp_path, fashion_dir,
                                                                         monkeypatch):
    """What the README's "From Python" block does, from a notebook's working directory."""
    from ssal_keras import export
    from ssal_keras.runs.reader import evaluate_run

    monkeypatch.chdir(tmp_path)
    config = RunConfig.from_flagfile(
        os.path.join(ROOT, "models", "fashion_mnist_ssal.flags"), data_dir=fashion_dir,
        train_examples=256, eval_examples=128, held_out_examples=0, batch_size=32, epochs=1,
        log_every_steps=4)
    record = train(config, "notebook", log=quiet)
    scores = evaluate_run("notebook")
    for key in ("base_top1", "base_top5", "joint_top1", "joint_top5", "aux_top1"):
        assert scores[key] == record[key], key
    run = reader.load("notebook")
    assert run.config == config and run.class_names[0] == "t-shirt/top"
    meta = export.export_folder(run.model, "notebook/export", formats="onnx",
                                class_names=run.class_names, source="notebook")
    assert [o["name"] for o in meta["outputs"]] == ["joint"]
    assert os.path.exists("notebook/export/model.onnx")
    assert meta["formats"]["onnx"]["max_abs_diff"] < 1e-4
