"""Faults: kills at any moment, damaged checkpoints, two trainers on one folder, durability.

The kills are real: each is a process that trains a small run and sends itself SIGKILL at a
chosen call (a checkpoint save, a training step, a batch of an evaluation, a file being
published); the same settings then resume in-process and the end state is checked.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from ssal_keras import runs
from ssal_keras.runs import lock
from ssal_keras.runs.reader import evaluate_run
from ssal_keras.training import RunConfig, checkpoints, train, trainer
from tests.conftest import ROOT, cli_env, metrics, small_config

#: 256 training images in batches of 32 (8 steps an epoch), 2 epochs, a checkpoint every 3
#: steps, 64 held-out images (their confusion is one of the final writes), 4 evaluation
#: batches per evaluation.
FAULT_RUN = dict(epochs=2, checkpoint_steps=3, held_out_examples=64, eval_batch_size=32,
                 jit_compile=False, log_every_steps=4)

# Sends this process SIGKILL at the N-th call of one function, then trains the run.
_KILLER = r"""
import json, os, signal, sys
from ssal_keras.evaluation import scoring
from ssal_keras.training import RunConfig, train, trainer
import tensorflow as tf

point, when, model_dir, config = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
owner, name = {"publish": (os, "replace"), "checkpoint": (tf.train.CheckpointManager, "save"),
               "step": (trainer.Trainer, "_run_step"),
               "evaluation": (scoring.Accuracy, "update")}[point]
original, calls = getattr(owner, name), [0]

def killing(*args, **kwargs):
    calls[0] += 1
    if calls[0] == when:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

setattr(owner, name, killing)
train(RunConfig.from_json(config), model_dir)
"""

# (where, which call): seeded draws over each point's calls in a full run -- 7 publishes
# (run.json, class names, two epochs' metrics, model.keras, held-out confusion, the final
# metrics), 16 steps, 6 checkpoint saves, 4 + 4 + 2 evaluation batches (two epochs, the
# held-out confusion).
_RNG = np.random.default_rng(20261127)
KILLS = ([("publish", int(k)) for k in sorted(_RNG.choice(np.arange(3, 8), 3, replace=False))]
         + [("step", int(k)) for k in sorted(_RNG.choice(np.arange(2, 17), 2, replace=False))]
         + [("checkpoint", int(_RNG.integers(1, 7)))]
         + [("evaluation", int(k)) for k in (int(_RNG.integers(2, 5)), 9)])


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, fashion_dir):
    """``{(point, call): (model_dir, returncode)}``: the killed processes, run side by side."""
    root = tmp_path_factory.mktemp("killed")
    config = small_config(fashion_dir, **FAULT_RUN).to_json()
    processes = {}
    for point, when in KILLS:
        model_dir = str(root / f"{point}_{when}")
        processes[(point, when)] = (model_dir, subprocess.Popen(
            [sys.executable, "-c", _KILLER, point, str(when), model_dir, config], cwd=ROOT,
            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return {key: (model_dir, process.wait(timeout=600))
            for key, (model_dir, process) in processes.items()}


@pytest.mark.parametrize("point, when", KILLS, ids=[f"{p}-{w}" for p, w in KILLS])
def test_a_run_killed_at_any_moment_resumes_to_a_consistent_end(killed_runs, fashion_dir,
                                                                 point, when):
    model_dir, returncode = killed_runs[(point, when)]
    assert returncode == -signal.SIGKILL
    before = runs.read_json(os.path.join(model_dir, "metrics.json")) if os.path.exists(
        os.path.join(model_dir, "metrics.json")) else {}
    # Never "completed" without the final model (and never a half-written file).
    assert not before.get("completed") or os.path.exists(os.path.join(model_dir, "model.keras"))
    lines = []
    record = train(small_config(fashion_dir, **FAULT_RUN), model_dir, log=lines.append)
    assert any("taking over the lock" in line for line in lines), lines[:5]
    assert record == metrics(model_dir) and record["completed"]
    assert [r["epoch"] for r in record["history"]] == [1, 2]
    # The final figures are an evaluation of the saved model's weights, bit for bit.
    scores = evaluate_run(model_dir)
    for key in ("base_top1", "base_top5", "aux_top1"):
        assert scores[key] == record[key] == record["history"][-1]["eval"][key], key
    assert np.load(os.path.join(model_dir, "held_out_confusion.npy")).sum() == 64
    leftovers = [os.path.join(folder, name) for folder, dirs, files in os.walk(model_dir)
                 for name in files + dirs
                 if name.startswith((".partial-", ".lock")) or name.endswith("_temp")]
    assert leftovers == []


class _Stop(BaseException):
    """An interruption that nothing in the trainer catches (like a kill, minus the lost
    ``finally`` clauses)."""


def _interrupted_run(model_dir, fashion_dir, monkeypatch, *, at_step):
    """A run stopped at training step ``at_step``: checkpoints behind it, no model."""
    original, calls = trainer.Trainer._run_step, [0]

    def stopping(self, iterator):
        calls[0] += 1
        if calls[0] == at_step:
            raise _Stop()
        return original(self, iterator)

    with monkeypatch.context() as patch:
        patch.setattr(trainer.Trainer, "_run_step", stopping)
        with pytest.raises(_Stop):
            train(small_config(fashion_dir, **FAULT_RUN), model_dir, log=lambda line: None)
    return checkpoints.files(os.path.join(model_dir, "checkpoints"))


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path, fashion_dir,
                                                                    monkeypatch):
    model_dir = str(tmp_path / "run")
    newest, previous, *_ = _interrupted_run(model_dir, fashion_dir, monkeypatch, at_step=14)
    data_file = f"{newest}.data-00000-of-00001"
    with open(data_file, "rb") as f:
        content = f.read()
    with open(data_file, "wb") as f:  # a checkpoint cut short
        f.write(content[: len(content) // 2])
    lines = []
    record = train(small_config(fashion_dir, **FAULT_RUN), model_dir, log=lines.append)
    assert any(line.startswith(f"checkpoint {newest} is unreadable") and
               line.endswith(f"falling back to {previous}") for line in lines), lines
    assert any(f"resuming from checkpoint {previous}" in line for line in lines)
    assert record["completed"] and [r["epoch"] for r in record["history"]] == [1, 2]


def test_a_damaged_checkpoint_index_never_restarts_the_run(tmp_path, fashion_dir, monkeypatch):
    model_dir = str(tmp_path / "run")
    newest, *_ = _interrupted_run(model_dir, fashion_dir, monkeypatch, at_step=11)
    with open(os.path.join(model_dir, "checkpoints", "checkpoint"), "w") as f:
        f.write("garbled {{{")
    lines = []
    record = train(small_config(fashion_dir, **FAULT_RUN), model_dir, log=lines.append)
    assert any("the checkpoints are read from their files" in line for line in lines), lines
    assert any(f"resuming from checkpoint {newest}: epoch 2" in line for line in lines), lines
    assert not any(line.startswith("epoch 1/2 step") for line in lines)
    assert record["completed"] and [r["epoch"] for r in record["history"]] == [1, 2]


def test_no_readable_checkpoint_is_one_error_naming_the_folder(tmp_path, fashion_dir,
                                                               monkeypatch):
    model_dir = str(tmp_path / "run")
    for path in _interrupted_run(model_dir, fashion_dir, monkeypatch, at_step=7):
        with open(f"{path}.index", "wb") as f:
            f.write(b"not a checkpoint")
    with pytest.raises(ValueError, match="no readable checkpoint in .*checkpoints: the "
                                         "oldest, .*ckpt-3, fails too"):
        train(small_config(fashion_dir, **FAULT_RUN), model_dir, log=lambda line: None)
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))


# --- one trainer per run folder ------------------------------------------------------------
def test_a_second_trainer_on_a_busy_folder_is_refused(tmp_path, fashion_dir):
    model_dir = tmp_path / "busy"
    os.makedirs(model_dir)
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (model_dir / ".lock").write_text(json.dumps(
            {"host": socket.gethostname(), "pid": holder.pid, "since": 0}))
        with pytest.raises(lock.RunFolderBusy, match=f"being trained by process {holder.pid}"):
            train(small_config(fashion_dir), str(model_dir), log=lambda line: None)
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(model_dir / "metrics.json")


def test_a_lock_from_another_host_is_refused_and_the_cli_says_so_in_one_line(tmp_path,
                                                                            fashion_dir):
    model_dir = tmp_path / "shared"
    os.makedirs(model_dir)
    (model_dir / ".lock").write_text(json.dumps({"host": "node-7", "pid": 1, "since": 0}))
    with pytest.raises(lock.RunFolderBusy, match="process 1 on node-7"):
        lock.acquire(str(model_dir))
    with pytest.raises(lock.RunFolderBusy, match="remove the lock if that trainer is gone"):
        train(small_config(fashion_dir), str(model_dir), log=lambda line: None)


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "stale"
    os.makedirs(folder)
    (folder / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    lines = []
    with lock.held(str(folder), log=lines.append):
        assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
    assert lines == [f"taking over the lock of {folder}: its process ({dead.pid} on "
                     f"{socket.gethostname()}) is gone"]
    assert not os.path.exists(folder / ".lock")
    (folder / ".lock").write_text("{half a lo")  # a kill while it was being written
    with lock.held(str(folder), log=lines.append):
        pass
    assert "is gone" in lines[-1]


# --- durability --------------------------------------------------------------------------
def test_writes_keep_the_umask_without_changing_it_and_sync_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))

    def no_umask(mask):
        raise AssertionError("the process umask must not change while writing")

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        runs.write_json(str(tmp_path / "a.json"), {"x": 1})
        runs.write_npy(str(tmp_path / "b.npy"), np.arange(3))
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert oct(os.stat(tmp_path / "a.json").st_mode & 0o777) == oct(0o640)
    assert oct(os.stat(tmp_path / "b.npy").st_mode & 0o777) == oct(0o640)
    assert len(synced) >= 3  # the file's bytes, and the folder after each rename


def test_leftovers_of_killed_writes_are_cleaned_at_the_next_start(tmp_path):
    folder = tmp_path / "run"
    os.makedirs(folder / "groupings")
    os.makedirs(folder / "checkpoints" / "ckpt-5_temp")
    os.makedirs(folder / ".scratch_worker_1" / "checkpoints")
    for path in (folder / ".partial-1a2b.json", folder / "groupings" / ".partial-3c4d"):
        path.write_text("half")
    (folder / "metrics.json").write_text("{}")
    lines = []
    removed = runs.clean_leftovers(str(folder), log=lines.append)
    removed += checkpoints.clean_leftovers(str(folder), log=lines.append)
    assert sorted(os.path.relpath(p, folder) for p in removed) == [
        ".partial-1a2b.json", "checkpoints/ckpt-5_temp", "groupings/.partial-3c4d"]
    assert lines[0].startswith("removed 2 leftover(s) of an interrupted write")
    assert lines[1] == ("removed 1 leftover(s) of an interrupted checkpoint: "
                        "checkpoints/ckpt-5_temp")
    # A worker's scratch folder is that worker's to clear; the finished files stay.
    assert sorted(os.listdir(folder)) == [".scratch_worker_1", "checkpoints", "groupings",
                                          "metrics.json"]


def test_a_run_config_from_another_version_is_one_line(tmp_path, fashion_dir):
    model_dir = tmp_path / "odd"
    os.makedirs(model_dir)
    (model_dir / "metrics.json").write_text("{}")
    (model_dir / "run.json").write_text(json.dumps({"epochs": 2, "optimizer": "adam"}))
    with pytest.raises(ValueError, match="run.json holds no valid run config .*unknown "
                                         "setting 'optimizer'"):
        train(small_config(fashion_dir), str(model_dir), log=lambda line: None)
    assert RunConfig.from_dict({"epochs": 2}).epochs == 2


def test_a_restarted_worker_restores_the_chiefs_checkpoint(tmp_path, fashion_dir, monkeypatch):
    """Multi-worker: a worker other than the chief saves into a scratch folder, so after a
    restart it must read the chief's checkpoints, or the replicas would start from different
    steps."""
    from ssal_keras.training import distribute

    model_dir = str(tmp_path / "run")
    newest, *_ = _interrupted_run(model_dir, fashion_dir, monkeypatch, at_step=11)
    scratch = os.path.join(model_dir, ".scratch_worker_1")
    os.makedirs(os.path.join(scratch, "checkpoints"))  # a killed earlier start of the worker
    monkeypatch.setattr(distribute, "is_chief", lambda strategy: False)
    monkeypatch.setattr(distribute, "task_id", lambda strategy: ("worker", 1))
    lines = []
    train(small_config(fashion_dir, **FAULT_RUN), model_dir, log=lines.append)
    assert any(f"resuming from checkpoint {newest}: epoch 2" in line for line in lines), lines
    # The worker wrote nothing of the run folder and cleared its scratch folder.
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
    assert not os.path.exists(scratch)
    assert checkpoints.files(os.path.join(model_dir, "checkpoints"))[0] == newest
