"""The benchmark scripts (``benchmarks/``): each one's main path under ``--smoke`` (2 warm-up
steps, 3 timed, 1 repeat: the code paths, not the speed) into a temporary JSON, whose
structure is checked, every figure positive and finite, min <= median <= max. The paper-size
models are left out (the quick start stands in); the training scripts run a subset of their
configurations that still goes through every path (the loop, ``model.fit`` with its weight
decay, XLA, bfloat16, two logical devices) to stay near a minute on 2 cores.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

RECORD = ("command", "date", "machine", "versions", "settings")


def _load(path, benchmark):
    with open(path) as f:
        document = json.load(f)
    assert document["benchmark"] == benchmark
    common.check_figures(document)
    return document


def _check_record(entry, script):
    for key in RECORD:
        assert key in entry, key
    assert f"benchmarks/{script}" in entry["command"] and "--smoke" in entry["command"]
    assert entry["settings"]["smoke"] is True
    assert set(entry["machine"]["cpu_flags"]) >= {"avx512_bf16", "amx_bf16", "avx512_vnni"}
    assert entry["machine"]["logical_cores"] >= 1 and entry["machine"]["cpu_model"]
    assert "tensorflow" in entry["versions"] or "tensorflow-cpu" in entry["versions"]


def _summary_of(node):
    assert set(node) >= {"repeats", "min", "median", "max"}
    assert node["min"] <= node["median"] <= node["max"]
    return node


def test_check_figures_refuses_bad_figures():
    good = common.summary([3.0, 1.0, 2.0])
    assert (good["min"], good["median"], good["max"]) == (1.0, 2.0, 3.0)
    common.check_figures({"a": good, "r": common.ratio(good, "a", good, "a")})
    for bad in ({"repeats": [1.0], "min": 1.0, "median": 0.0, "max": 1.0},
                {"repeats": [math.inf], "min": math.inf, "median": math.inf, "max": math.inf},
                {"repeats": [1.0, 3.0], "min": 1.0, "median": 4.0, "max": 3.0},
                {"value": -1.0, "numerator": "a", "denominator": "b"}):
        with pytest.raises(ValueError):
            common.check_figures({"x": bad})


def test_protocol_floor_and_smoke_output(tmp_path):
    from benchmarks import grouping_speed

    for argv in (["--steps=10"], ["--repeats=2"], ["--smoke"],
                 ["--smoke", f"--output={os.path.join(common.DOCS, 'x.json')}"]):
        with pytest.raises(SystemExit):
            grouping_speed.parse_args(argv)
    args = grouping_speed.parse_args(["--smoke", f"--output={tmp_path / 'g.json'}"])
    assert (args.warmup, args.steps, args.repeats) == (2, 3, 1)
    args = grouping_speed.parse_args([f"--output={tmp_path / 'g.json'}"])
    assert args.steps >= common.MIN_STEPS and args.repeats >= common.MIN_REPEATS


def test_atomic_write_and_merge(tmp_path):
    path = str(tmp_path / "b.json")
    common.write_json(path, {"benchmark": "x", "models": {"a": 1, "b": 2}})
    assert common.merge_models(path, "x", {"b": 3}, merge=True) == {"a": 1, "b": 3}
    assert common.merge_models(path, "x", {"b": 3}, merge=False) == {"b": 3}
    with pytest.raises(ValueError):
        common.merge_models(path, "y", {}, merge=True)
    assert os.listdir(tmp_path) == ["b.json"]  # no temporary file left


def test_fit_weight_decay_is_the_trainers():
    """The L2 penalties of the model.fit path have the gradient the trainer adds: rate * w on
    exactly the decayed variables."""
    import tensorflow as tf

    config = common.recipe_config("fashion_mnist_ssal")
    model = common.recipe_model("fashion_mnist_ssal", (28, 28, 1), 10)
    rates = config.resolve().decay.rates(model)
    counted = common.fit_weight_decay(model, rates)
    assert counted == {5e-4: sum(1 for r in rates if r)}
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    gradients = tape.gradient(penalty, model.trainable_variables)
    for variable, rate, gradient in zip(model.trainable_variables, rates, gradients):
        if rate:
            np.testing.assert_allclose(gradient.numpy(), rate * variable.numpy(), rtol=1e-5,
                                       atol=1e-12)
        else:
            assert gradient is None or not np.any(gradient.numpy())


def test_grouping_speed_smoke(tmp_path):
    from benchmarks import grouping_speed

    path = str(tmp_path / "grouping.json")
    grouping_speed.main(["--smoke", "--num_labels=40", "--num_groups", "20", "8",
                         f"--output={path}"])
    document = _load(path, "grouping_speed")
    _check_record(document, "grouping_speed.py")
    assert set(document["cases"]) == {"40_labels_20_groups", "40_labels_8_groups"}
    for case in document["cases"].values():
        assert len(_summary_of(case["seconds_per_call"])["repeats"]) == 1


def test_inference_smoke(tmp_path):
    from benchmarks import inference

    path = str(tmp_path / "inference.json")
    inference.main(["--smoke", "--models=quick_start", f"--output={path}"])
    document = _load(path, "inference")
    entry = document["models"]["quick_start"]
    _check_record(entry, "inference.py")
    assert set(entry["runtimes"]) == set(inference.RUNTIMES)
    for row in entry["runtimes"].values():
        _summary_of(row["batch1_ms"]), _summary_of(row["batch_images_per_sec"])
    ratios = entry["ratios"]
    for runtime in inference.RUNTIMES:
        if runtime != "tf_function":
            assert "batch_speedup_vs_tf_function" in ratios[runtime]
        if runtime != "keras_predict":
            assert "batch1_speedup_vs_keras_predict" in ratios[runtime]
    options = entry["session_options"]
    assert set(options["variants"]) == {"defaults", "client"}
    assert set(options["ratios"]["client_vs_defaults"]) == {"batch1_speedup", "batch_speedup"}


def test_train_throughput_smoke(tmp_path):
    """model.fit of both models (the plain and the SSAL compile) and the loop on two logical
    devices (the one-device loop, XLA and bfloat16 are the next test's)."""
    from benchmarks import train_throughput

    path = str(tmp_path / "train.json")
    train_throughput.main(["--smoke", "--configurations=fit_no_xla,ssal_loop_xla_2_devices",
                           f"--output={path}"])
    document = _load(path, "train_throughput")
    _check_record(document, "train_throughput.py")
    assert set(document["configurations"]) == {"bare_fit_no_xla", "ssal_fit_no_xla",
                                               "ssal_loop_xla_2_devices"}
    two = document["configurations"]["ssal_loop_xla_2_devices"]
    assert (two["replicas"], two["xla_requested"], two["path"]) == (2, True, "loop")
    for entry in document["configurations"].values():
        assert entry["batch_size"] == 128  # the recipes'
        rate = _summary_of(entry["images_per_sec"])
        assert rate["median"] == pytest.approx(
            entry["images_per_repeat"] / entry["seconds_per_repeat"]["median"])
    assert set(document["ratios"]) == {"ssal_time_overhead_fit_no_xla", "ssal_flops_overhead"}


def test_paper_train_step_smoke_merges_models(tmp_path):
    from benchmarks import paper_train_step

    path = str(tmp_path / "paper.json")
    earlier = {"backbone": "resnet50_cifar", "command": "an earlier run", "ratios": {
        "xla_over_no_xla_float32": {"value": 0.7, "numerator": "a", "denominator": "b"}}}
    common.write_json(path, {"benchmark": "paper_train_step",
                             "models": {"resnet50_cifar100": earlier}})
    paper_train_step.main([
        "--smoke", "--models=fashion_mnist_quick_start",
        "--configurations=ssal_xla_float32,ssal_no_xla_float32,ssal_no_xla_bfloat16,"
        "bare_no_xla_float32", f"--output={path}"])
    document = _load(path, "paper_train_step")
    assert document["models"]["resnet50_cifar100"] == earlier  # kept
    entry = document["models"]["fashion_mnist_quick_start"]
    _check_record(entry, "paper_train_step.py")
    assert entry["backbone"] == "resnet_fashion_mnist"
    assert entry["configurations"]["ssal_no_xla_bfloat16"]["dtype_policy"] == "mixed_bfloat16"
    assert entry["configurations"]["ssal_xla_float32"]["xla_used"] is True
    assert entry["configurations"]["ssal_no_xla_float32"]["xla_used"] is False
    _summary_of(entry["matmul_peak_gflop_per_sec"]["float32"])
    xla = entry["ratios"]["xla_over_no_xla_float32"]["value"]
    assert document["cpu_xla_speedup"] == {"resnet50_cifar": 0.7,
                                           "resnet_fashion_mnist": round(xla, 2)}
    assert set(document["cpu_bfloat16_speedup"]) == {"resnet_fashion_mnist"}


def test_jax_recipes_are_the_recipes_resolved():
    """``benchmarks/recipes_resolved.json`` (what the JAX benchmark trains, on machines
    without TensorFlow) is what ``models/*.flags`` resolve to now."""
    from benchmarks import paper_train_step_jax

    with open(paper_train_step_jax.RECIPES) as f:
        committed = json.load(f)["models"]
    assert committed == json.loads(json.dumps(paper_train_step_jax.resolve_all())), (
        "benchmarks/recipes_resolved.json is out of date: run "
        "python benchmarks/paper_train_step_jax.py resolve")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_paper_train_step_jax_smoke(tmp_path):
    """The JAX benchmark's measure path, on the quick start (SSAL in mixed bfloat16: the
    branches, the decay, the policy), in a JAX subprocess as a user runs it."""
    path = str(tmp_path / "jax.json")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "paper_train_step_jax.py"), "measure",
         "--smoke", "--models=fashion_mnist_quick_start", "--configurations=ssal_bfloat16",
         f"--output={path}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    entry = _load(path, "paper_train_step_jax")["models"]["fashion_mnist_quick_start"]
    _check_record(entry, "paper_train_step_jax.py")
    assert "KERAS_BACKEND=jax python benchmarks/paper_train_step_jax.py measure" in entry["command"]
    (configuration,) = entry["configurations"].values()
    assert configuration["dtype_policy"] == "mixed_bfloat16"
    assert configuration["recipe"] == "fashion_mnist_ssal"
    assert configuration["parameters"] == 158018  # the quick start's SSAL network
    _summary_of(configuration["images_per_second"])
    assert entry["settings"]["training_images"] == 55000 and entry["device"]["platform"]


def test_data_order_smoke(tmp_path):
    """The data-order benchmark's two kinds of timing (the pipeline alone, the trainer's
    step) on the quick start's split, each shuffle once."""
    from benchmarks import data_order

    path = str(tmp_path / "order.json")
    data_order.main(["--smoke", "--configurations=pipeline_full,loop_buffer",
                     f"--output={path}"])
    document = _load(path, "data_order")
    _check_record(document, "data_order.py")
    assert set(document["configurations"]) == {"pipeline_full", "loop_buffer"}
    assert document["configurations"]["pipeline_full"]["shuffle"] == "full"
    assert document["configurations"]["loop_buffer"]["images_per_repeat"] == 3 * 128
    assert document["settings"]["train_images"] == 55000
    assert document["ratios"] == {}  # no pair measured
