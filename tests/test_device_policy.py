"""``--jit_compile=auto|true|false`` and ``--mixed_precision=auto|bfloat16|float16|float32``: what
``auto`` picks on which device and why, the old bool spellings, float16 with loss scaling."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from ssal_keras.runs.reader import evaluate_run
from ssal_keras.train import switch_spellings
from ssal_keras.training import RunConfig, device_policy, train
from ssal_keras.training import flagfile
from ssal_keras.training.config import FIELDS
from tests.conftest import (ROOT, metrics, one_error_line, run_train, small_config,
                            train_args)

# What auto picks on this CPU for the quick-start network (the small runs' backbone).
XLA_ON_QUICK_START = device_policy.CPU_XLA_SPEEDUP["resnet_fashion_mnist"] > 1
BFLOAT16_ON_THIS_CPU = (device_policy.cpu_has_bfloat16()
                        and device_policy.CPU_BFLOAT16_LOWER_BOUND is not None
                        and device_policy.CPU_BFLOAT16_LOWER_BOUND
                        >= -device_policy.MAX_BFLOAT16_DROP)


def _docs_json(name):
    with open(os.path.join(ROOT, "docs", name)) as f:
        return json.load(f)


# --- the measurements behind auto -------------------------------------------------------------
def test_the_policy_constants_are_the_committed_measurements():
    """``auto`` rests on the JSONs the benchmark and the parity test wrote, nothing else."""
    measured = _docs_json("benchmark_paper_train_step.json")["cpu_xla_speedup"]
    assert device_policy.CPU_XLA_SPEEDUP == {k: round(v, 2) for k, v in measured.items()}
    parity = _docs_json("precision_parity.json")
    # Until the parity test's decision is final (extra seeds due), auto may not rely on it.
    assert device_policy.CPU_BFLOAT16_LOWER_BOUND == (
        round(parity["lower_bound"], 4) if parity["final"] else None)
    assert parity["passes"] == (parity["lower_bound"] >= -device_policy.MAX_BFLOAT16_DROP)
    assert parity["xla"] is XLA_ON_QUICK_START  # measured under the XLA setting auto picks


# --- settings --------------------------------------------------------------------------------
def test_defaults_and_the_old_spellings_keep_their_meaning():
    assert (RunConfig().jit_compile, RunConfig().mixed_precision) == ("auto", "float32")
    assert RunConfig(mixed_precision=True, jit_compile=False).mixed_precision == "bfloat16"
    assert RunConfig(mixed_precision=True, jit_compile=False).jit_compile == "false"
    # run.json of older runs held bools.
    old = RunConfig.from_dict({"mixed_precision": False, "jit_compile": True})
    assert (old.mixed_precision, old.jit_compile) == ("float32", "true")
    # "off", float32's spelling until issue 21, in run.json, flagfiles and command lines.
    assert RunConfig.from_dict({"mixed_precision": "off"}).mixed_precision == "float32"
    assert flagfile.parse_settings({"mixed_precision": "off"}, FIELDS, source="f") == {
        "mixed_precision": "float32"}
    # Flagfile lines and command-line arguments of every release.
    assert flagfile.parse_settings({"mixed_precision": None, "nojit_compile": None}, FIELDS,
                                   source="f") == {
        "mixed_precision": "bfloat16", "jit_compile": "false"}
    assert flagfile.parse_settings({"nomixed_precision": None}, FIELDS, source="f") == {
        "mixed_precision": "float32"}
    assert [switch_spellings(a) for a in (
        "--mixed_precision", "--nomixed_precision", "--mixed_precision=True", "--jit_compile",
        "--nojit_compile", "--jit_compile=0", "--mixed_precision=float16", "--nesterov",
        "--mixed_precision=off")] == [
        "--mixed_precision=bfloat16", "--mixed_precision=float32", "--mixed_precision=bfloat16",
        "--jit_compile=true", "--jit_compile=false", "--jit_compile=false",
        "--mixed_precision=float16", "--nesterov", "--mixed_precision=float32"]
    with pytest.raises(ValueError, match="mixed_precision='fp8': not a valid value; valid: "
                                         "auto, bfloat16, float16, float32."):
        RunConfig(mixed_precision="fp8")
    # XLA changes no result, so a run may resume with another --jit_compile.
    assert RunConfig(jit_compile="true").differences(RunConfig(jit_compile="false")) == []


def test_cli_refuses_an_unknown_precision_in_one_line(tmp_path):
    result = run_train(f"--model_dir={tmp_path / 'run'}", "--mixed_precision=fp8")
    assert result.returncode == 2
    line = one_error_line(result)
    assert line == ("train: error: flag --mixed_precision=fp8: value should be one of "
                    "<auto|bfloat16|float16|float32>")
    assert not os.path.exists(tmp_path / "run")


# --- what auto picks ------------------------------------------------------------------------
def test_jit_auto_follows_the_device_and_the_measurements():
    assert device_policy.jit_compile("true", "resnet50_cifar", gpus=[]) == (True,
                                                                            "--jit_compile=true")
    assert device_policy.jit_compile("false", "resnet50_cifar", gpus=[(8, 0)])[0] is False
    assert device_policy.jit_compile("auto", "resnet50_cifar", gpus=[(8, 0)]) == (
        True, "auto: GPU")
    for backbone, speedup in device_policy.CPU_XLA_SPEEDUP.items():
        on, why = device_policy.jit_compile("auto", backbone, gpus=[])
        assert on == (speedup > 1) and f"x{speedup:.2f} on {backbone}" in why
    on, why = device_policy.jit_compile("auto", "densenet_bc_100_12", gpus=[])
    assert not on and "not measured" in why


@pytest.mark.parametrize("flags, gpus, bound, expected", [
    ({"avx512_bf16", "avx512f"}, [], -0.001, "bfloat16"),
    ({"amx_bf16"}, [], -0.003, "bfloat16"),  # the rule's edge: mean - 2 SE >= -0.3 points
    ({"amx_bf16"}, [], -0.0031, "float32"),  # parity not shown
    ({"amx_bf16"}, [], None, "float32"),  # not measured
    ({"avx2"}, [], -0.001, "float32"),
    (set(), [(8, 0), (9, 0)], None, "bfloat16"),
    (set(), [(8, 0), (7, 5)], None, "float32"),  # every device must compute it
])
def test_precision_auto(monkeypatch, flags, gpus, bound, expected):
    monkeypatch.setattr(device_policy, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(device_policy, "CPU_BFLOAT16_LOWER_BOUND", bound)
    chosen, why = device_policy.precision("auto", gpus=gpus)
    assert chosen == expected and why.startswith("auto: ")


def test_explicit_precisions_and_where_float16_cannot_run():
    assert device_policy.precision("float32", gpus=[(8, 0)]) == ("float32",
                                                                 "--mixed_precision=float32")
    assert device_policy.precision("float16", gpus=[(7, 0)])[0] == "float16"
    assert "emulated" in device_policy.precision("float16", gpus=[])[1]
    with pytest.raises(ValueError, match=r"mixed_precision=float16: a GPU here has compute "
                                         r"capability 5\.0, below the 5\.3 float16 needs"):
        device_policy.precision("float16", gpus=[(5, 0)])


def test_cpu_flags_read_proc_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert device_policy.cpu_flags.__wrapped__(str(cpuinfo)) >= {"avx512_bf16", "amx_tile"}
    assert device_policy.cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


# --- runs -----------------------------------------------------------------------------------
def test_float16_trains_with_loss_scaling_and_evaluates_as_it_trained(tmp_path, fashion_dir,
                                                                      monkeypatch):
    built = []
    from ssal_keras.training.resolved import ScheduleSettings

    real = ScheduleSettings.optimizer
    monkeypatch.setattr(ScheduleSettings, "optimizer",
                        lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    lines = []
    model_dir = str(tmp_path / "float16")
    config = small_config(fashion_dir, mixed_precision="float16", train_examples=1024)
    record = train(config, model_dir, log=lines.append)
    assert "precision float16 (--mixed_precision=float16 on a CPU: correct but emulated" in (
        "\n".join(lines))
    assert any(line.startswith(f"XLA {'on' if XLA_ON_QUICK_START else 'off'} (auto: CPU, XLA "
                               "measured x") for line in lines)
    assert isinstance(built[0], keras.optimizers.LossScaleOptimizer)
    # It learns as float32 does from the same start (loss scaling unscaled, decay included).
    float32 = train(dataclasses.replace(config, mixed_precision="float32"), str(tmp_path / "f32"),
                    log=lambda line: None)
    np.testing.assert_allclose([h["train_loss"] for h in record["history"]],
                               [h["train_loss"] for h in float32["history"]], rtol=0.01)
    assert record["completed"] and record["base_top1"] > 0.35  # 10 classes
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), safe_mode=True)
    assert model.layers[-1].compute_dtype in ("float16", "float32")
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    assert evaluate_run(model_dir)["base_top1"] == record["base_top1"]


def test_float16_is_refused_in_one_line_where_no_gpu_computes_it(tmp_path, fashion_dir,
                                                                 monkeypatch):
    monkeypatch.setattr(device_policy, "gpu_capabilities", lambda: [(5, 0)])
    with pytest.raises(ValueError, match="below the 5.3 float16 needs; use "
                                         "--mixed_precision=float32"):
        train(small_config(fashion_dir, mixed_precision="float16"), str(tmp_path / "r"),
              log=lambda line: None)
    assert not os.path.exists(tmp_path / "r")


def test_the_cli_logs_what_auto_chose(tmp_path, fashion_dir):
    result = run_train(*train_args(tmp_path / "run", fashion_dir, "--epochs=1",
                                   "--mixed_precision=auto"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"XLA {'on' if XLA_ON_QUICK_START else 'off'} (auto: CPU, XLA measured x" in (
        result.stdout)
    assert "precision " in result.stdout and "(auto: CPU" in result.stdout
    record = metrics(tmp_path / "run")
    assert record["completed"] and record["compute"]["xla"] is XLA_ON_QUICK_START
    # The exact policy of this CPU: bfloat16 where it computes it natively and parity held.
    assert record["compute"]["dtype_policy"] == (
        "mixed_bfloat16" if BFLOAT16_ON_THIS_CPU else "float32")
