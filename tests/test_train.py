"""The training CLI end to end: runs, resumption, replicas, workers, auto groupings, errors.

Every run is a real ``python -m ssal_keras.train`` process on a few hundred Fashion-MNIST
images (a generated IDX copy, so the suite needs no installed dataset) with the small
quick-start network.
"""

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
from ssal_keras import data, grouping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory):
    """A small Fashion-MNIST in IDX files: real images where installed, else a learnable fake."""
    folder = tmp_path_factory.mktemp("fashion")
    from tests.test_data import write_idx

    rng = np.random.default_rng(0)
    for split, count in (("train", 1200), ("test", 300)):
        if os.path.isdir(data.FASHION_MNIST_DIR):
            images, labels = data.load_fashion_mnist(split)
            images, labels = images[:count, ..., 0], labels[:count]
        else:
            labels = rng.integers(0, 10, count)
            images = (rng.uniform(0, 60, (count, 28, 28)) + labels[:, None, None] * 19)
        image_file, label_file = {"train": ("train-images-idx3-ubyte.gz",
                                            "train-labels-idx1-ubyte.gz"),
                                  "test": ("t10k-images-idx3-ubyte.gz",
                                           "t10k-labels-idx1-ubyte.gz")}[split]
        write_idx(folder / image_file, np.asarray(images))
        write_idx(folder / label_file, np.asarray(labels))
    return str(folder)


def train_args(model_dir, fashion_dir, *extra):
    return [f"--model_dir={model_dir}", "--dataset=fashion_mnist", f"--data_dir={fashion_dir}",
            "--train_examples=256", "--eval_examples=128", "--batch_size=32", "--epochs=2",
            "--warmup_epochs=0.5", "--learning_rate=0.05", "--log_every_steps=2",
            "--augment=shift", *extra]


def run_train(*args, env=None, module="ssal_keras.train"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def one_error_line(result, prog="train"):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory, fashion_dir):
    """A finished baseline with held-out images: the grouping source of the SSAL tests."""
    model_dir = str(tmp_path_factory.mktemp("runs") / "baseline")
    result = run_train(*train_args(model_dir, fashion_dir, "--held_out_examples=100"))
    assert result.returncode == 0, result.stderr[-3000:]
    return model_dir


def test_baseline_run_writes_the_run_folder(baseline_dir):
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
    with open(os.path.join(baseline_dir, "flags.txt")) as f:
        assert "--batch_size=32\n" in f.read()
    assert os.listdir(os.path.join(baseline_dir, "tensorboard", "train"))


def test_ssal_run_with_auto_groupings(tmp_path, fashion_dir, baseline_dir):
    model_dir = str(tmp_path / "ssal")
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"top1": 0.9123, "std": 0.0021, "seeds": 3,
                                     "label": "the baseline", "explained_in": "NOTES.md"}))
    result = run_train(*train_args(
        model_dir, fashion_dir, "--held_out_examples=100", "--groupings=auto",
        f"--grouping_source={baseline_dir}", "--num_groups=3,5", "--taps=stage1,stage2",
        "--head=cbr(16,3) gap", "--head=gap", "--loss_weights=0.5,1", "--alpha=0.4",
        "--mixed_precision", "--label_smoothing=0.1", "--nesterov", f"--reference={reference}"))
    assert result.returncode == 0, result.stderr[-3000:]
    record = metrics(model_dir)
    # It ends with the reference, its own figures and where they are explained.
    assert result.stdout.strip().splitlines()[-3:] == [
        "reference: test top-1 0.9123 ± 0.0021, the baseline (3 seed(s))",
        f"this run: +TR (base output) top-1 {record['base_top1']:.4f}, "
        f"+JP (joint output) top-1 {record['joint_top1']:.4f}",
        "explained in: NOTES.md"]
    assert record["joint_top1"] is not None and len(record["aux_top1"]) == 2
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
    # under mixed precision too: one evaluation code path (loop.score), the run's XLA setting
    # and evaluation batch size.
    result = run_train(f"--model_dir={model_dir}", module="ssal_keras.evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("base_top1", "base_top5", "joint_top1", "joint_top5", "aux_top1"):
        assert scores[key] == record[key], key


def test_killed_run_resumes_and_completes(tmp_path, fashion_dir):
    model_dir = str(tmp_path / "killed")
    args = train_args(model_dir, fashion_dir, "--checkpoint_steps=2", "--log_every_steps=1",
                      "--epochs=3")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "ssal_keras.train", *args], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        for line in process.stdout:  # kill it mid-epoch 2, between two checkpoints
            if line.startswith("epoch 2/3 step 5/8"):
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
    assert metrics(model_dir)["completed"] is False

    result = run_train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from checkpoint" in result.stdout and "epoch 2, step 4 of 8" in result.stdout
    assert "epoch 2/3 step 5/8" in result.stdout and "epoch 1/3 step" not in result.stdout
    record = metrics(model_dir)
    assert record["completed"] and [r["epoch"] for r in record["history"]] == [1, 2, 3]
    assert not [p for p in os.listdir(model_dir) if p.startswith(".partial")]

    # Once complete, the same command says so and repeats its results without training.
    result = run_train(*args)
    assert result.returncode == 0 and "the run is complete" in result.stdout
    assert f"this run: base output top-1 {record['base_top1']:.4f}" in result.stdout
    assert "epoch" not in result.stdout.replace("3 epochs", "")


def test_two_mirrored_replicas_match_one_device(tmp_path, fashion_dir):
    # Same global batch, same data order, BatchNorm statistics synchronised over the global
    # batch: the only difference left is the order of float32 sums in the gradient all-reduce
    # and in the BatchNorm moments, a few ulps per step that two epochs amplify to ~1e-5.
    common = ["--augment=none", "--jit_compile=false"]
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    result = run_train(*train_args(one, fashion_dir, *common))
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_train(*train_args(two, fashion_dir, *common, "--strategy=mirrored",
                                   "--logical_cpu_devices=2"))
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
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    processes = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "ssal_keras.train",
             *train_args(model_dir, fashion_dir, "--strategy=multi_worker", "--epochs=1")],
            cwd=ROOT, env=dict(env, TF_CONFIG=config), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
    record = metrics(model_dir)
    assert record["num_replicas"] == 2 and record["completed"]
    assert "2 replica(s), global batch 32, 16 per replica" in outputs[0][0]
    assert os.path.exists(os.path.join(model_dir, "model.keras"))
    assert not [p for p in os.listdir(model_dir) if p.startswith(".scratch")]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--no_such_flag=1"], "no_such_flag"),
        (["--batch_size=0"], "--batch_size must be >= 1"),
        (["--dataset=folder:/nonexistent/images"], "/nonexistent/images"),
        (["--groupings=/nonexistent/g.txt"], "grouping file /nonexistent/g.txt does not exist"),
        (["--groupings=auto", "--num_groups=3"], "needs --grouping_source"),
        (["--strategy=mirrored", "--logical_cpu_devices=2", "--batch_size=33"],
         "does not divide across 2 replicas"),
        (["--reference=/nonexistent/reference.json"], "/nonexistent/reference.json: no such file"),
        (["--reference=setup.py"], "--reference=setup.py is not valid JSON"),
        (["--reference=docs/summary.json"], "must be a JSON object with ['explained_in', 'label'"),
    ],
)
def test_flag_and_file_errors(tmp_path, fashion_dir, extra, match):
    model_dir = str(tmp_path / "bad")
    line = one_error_line(run_train(*train_args(model_dir, fashion_dir, *extra)))
    assert match in line
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))


def test_grouping_that_does_not_match_the_classes(tmp_path, fashion_dir):
    path = tmp_path / "g.txt"
    grouping.save_grouping(path, [0, 1, 0, 1])
    line = one_error_line(run_train(*train_args(str(tmp_path / "run"), fashion_dir,
                                                f"--groupings={path}", "--taps=stage1")))
    assert "has 4 labels but fashion_mnist has 10 classes" in line


def test_resuming_with_other_flags_is_refused(tmp_path, fashion_dir, baseline_dir):
    line = one_error_line(run_train(*train_args(baseline_dir, fashion_dir, "--batch_size=64")))
    assert "--batch_size=32" in line and "--batch_size=64" in line


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fashion_dir):
    model_dir = str(tmp_path / "nan")
    result = run_train(*train_args(model_dir, fashion_dir, "--learning_rate=1e30",
                                   "--checkpoint_steps=1", "--log_every_steps=1"))
    line = one_error_line(result)
    assert "training loss became" in line and "Last good checkpoint" in line
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
