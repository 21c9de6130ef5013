"""Training speed of the paper's models through the project's trainer: XLA and precision.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/paper_train_step.py [--models=resnet50_cifar100,...]
        [--batch_size=64] [--steps=N] [--output=FILE.json]

For each model (a key of ``MODELS``: the SSAL recipe of ``models/`` and its baseline), every
configuration runs ``python -m ssal_keras.train`` in a fresh process on synthetic images of
the model's input shape (random pixels and labels, an npz file; the step does not depend on
the data): the SSAL recipe with XLA on and off, in float32 and in mixed bfloat16, and the
bare backbone (the baseline recipe) in float32 without XLA, for the SSAL overhead. Each reports the
trainer's steady-state images/s (its first progress window, with tracing and compilation, is
left out). The same run first measures the host's matmul peaks
(``tf.matmul`` of 4096x4096 in float32 and bfloat16), and sets each configuration's achieved
GFLOP/s (3 x forward FLOPs x images/s: forward, and backward at twice the forward) against
them. Forward FLOPs count convolutions and dense layers (2 x multiply-adds).

Prints a table and the ratios that ``ssal_keras.training.device_policy`` cites (XLA / no XLA
per backbone on CPUs); ``--output`` also writes them as JSON. Time on 2 CPU cores: about 25
minutes for the defaults, most of it ResNet50.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import ROOT, forward_flops, grouping_files, recipe_model  # noqa: E402

#: model -> (SSAL recipe, baseline recipe, input shape, classes, groups per branch (None:
#: the recipe's grouping files), training steps per configuration)
MODELS = {
    "resnet50_cifar100": ("resnet50_cifar100_ssal", "resnet50_cifar100_baseline", (32, 32, 3),
                          100, (20, 33, 50), 5),
    "se_wrn_16_8_cifar100": ("se_wrn_16_8_cifar100_ssal", "se_wrn_16_8_cifar100_baseline",
                             (32, 32, 3), 100, (20, 33, 50), 5),
    "fashion_mnist_quick_start": ("fashion_mnist_ssal", "fashion_mnist_baseline", (28, 28, 1),
                                  10, None, 120),
}
#: configuration -> (recipe: "ssal" or "bare", --jit_compile, --mixed_precision)
CONFIGURATIONS = {
    "SSAL, XLA, float32": ("ssal", "true", "off"),
    "SSAL, no XLA, float32": ("ssal", "false", "off"),
    "SSAL, XLA, bfloat16": ("ssal", "true", "bfloat16"),
    "SSAL, no XLA, bfloat16": ("ssal", "false", "bfloat16"),
    "bare, no XLA, float32": ("bare", "false", "off"),
}


def matmul_peaks(size=4096, repeats=10):
    """``{dtype: GFLOP/s}`` of ``tf.matmul`` on this host (a fresh process's TensorFlow)."""
    code = f"""
import json, time, tensorflow as tf
out = {{}}
for name in ("float32", "bfloat16"):
    a = tf.random.uniform(({size}, {size}), dtype=tf.float32)
    a = tf.cast(a, name)
    f = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    f(a).numpy()
    start = time.perf_counter()
    for _ in range({repeats}):
        f(a).numpy()
    out[name] = 2 * {size} ** 3 * {repeats} / (time.perf_counter() - start) / 1e9
print(json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def synthetic_data(folder, shape, classes, examples):
    """An npz of random raw pixels and labels, and grouping files for the branches."""
    rng = np.random.default_rng(0)
    path = os.path.join(folder, "data.npz")
    np.savez(path, x_train=rng.integers(0, 256, (examples, *shape), dtype=np.uint8),
             y_train=rng.integers(0, classes, examples),
             x_test=rng.integers(0, 256, (64, *shape), dtype=np.uint8),
             y_test=rng.integers(0, classes, 64),
             class_names=np.array([f"class_{c}" for c in range(classes)]))
    return path


def train_step_rate(recipe, data, groupings, args, *, steps, jit, precision):
    """Runs the training CLI on ``recipe`` for ``steps`` steps; its steady images/s (six
    progress windows at most, the first not counted)."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable, "-m", "ssal_keras.train", f"--flagfile=models/{recipe}.flags",
            f"--model_dir={run_dir}", f"--dataset=npz:{data}", "--held_out_examples=0",
            f"--train_examples={args.batch_size * steps}", "--epochs=1",
            f"--batch_size={args.batch_size}", "--eval_examples=64", "--eval_batch_size=64",
            f"--log_every_steps={max(1, steps // 6)}", "--schedule=constant",
            "--warmup_epochs=0",
            f"--jit_compile={jit}", f"--mixed_precision={precision}",
        ] + ([f"--groupings={','.join(groupings)}"] if groupings else [])
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if result.returncode != 0:
            sys.exit(f"train failed: {' '.join(command)}\n{result.stderr[-3000:]}")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            return json.load(f)["train_images_per_sec"]


def measure(name, args, folder, peaks):
    """Every configuration of one model: rows of the report."""
    ssal_recipe, bare_recipe, shape, classes, groups, steps = MODELS[name]
    steps = args.steps or steps
    data = synthetic_data(folder, shape, classes, args.batch_size * steps)
    groupings = grouping_files(folder, classes, groups) if groups else None
    flops = {"ssal": forward_flops(recipe_model(ssal_recipe, shape, classes, groupings)),
             "bare": forward_flops(recipe_model(bare_recipe, shape, classes))}
    rows = []
    for label, (kind, jit, precision) in CONFIGURATIONS.items():
        recipe = ssal_recipe if kind == "ssal" else bare_recipe
        start = time.perf_counter()
        rate = train_step_rate(recipe, data, groupings if kind == "ssal" else None, args,
                               steps=steps, jit=jit, precision=precision)
        achieved = 3 * flops[kind] * rate / 1e9
        peak = peaks["bfloat16" if precision == "bfloat16" else "float32"]
        rows.append({"model": name, "configuration": label, "images_per_sec": rate,
                     "forward_gflop_per_image": flops[kind] / 1e9,
                     "achieved_gflop_per_sec": achieved,
                     "share_of_fp32_peak": achieved / peaks["float32"],
                     "share_of_own_peak": achieved / peak,
                     "wall_seconds": time.perf_counter() - start})
        print(f"{name:28s} {label:24s} {rate:9.2f} img/s {achieved:8.1f} GFLOP/s "
              f"({achieved / peaks['float32']:.0%} of fp32 peak, {achieved / peak:.0%} of own)",
              flush=True)
    return rows


def ratios(rows):
    """Per model: XLA / no XLA (float32, SSAL), bfloat16 / float32 (best of XLA on/off), and
    the SSAL overhead in time and in FLOPs against the bare backbone (float32, no XLA)."""
    out = {}
    for name in dict.fromkeys(r["model"] for r in rows):
        by = {r["configuration"]: r for r in rows if r["model"] == name}
        rate = lambda label: by[label]["images_per_sec"]  # noqa: E731
        best = lambda precision: max(rate(f"SSAL, XLA, {precision}"),  # noqa: E731
                                     rate(f"SSAL, no XLA, {precision}"))
        out[name] = {
            "xla_over_no_xla_float32": rate("SSAL, XLA, float32") / rate("SSAL, no XLA, float32"),
            "xla_over_no_xla_bfloat16": rate("SSAL, XLA, bfloat16")
            / rate("SSAL, no XLA, bfloat16"),
            "bfloat16_over_float32_best": best("bfloat16") / best("float32"),
            "ssal_time_overhead": rate("bare, no XLA, float32") / rate("SSAL, no XLA, float32"),
            "ssal_flops_overhead": by["SSAL, no XLA, float32"]["forward_gflop_per_image"]
            / by["bare, no XLA, float32"]["forward_gflop_per_image"],
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="Training steps per "
                        "configuration (default: each model's in MODELS).")
    parser.add_argument("--output", default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    peaks = matmul_peaks()
    print(f"matmul peaks: float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 "
          f"{peaks['bfloat16']:.0f} GFLOP/s (x{peaks['bfloat16'] / peaks['float32']:.2f}); "
          f"{os.cpu_count()} CPU cores", flush=True)
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as folder:
            rows += measure(name, args, folder, peaks)
    summary = ratios(rows)
    for name, figures in summary.items():
        print(name + ": " + ", ".join(f"{k} x{v:.2f}" for k, v in figures.items()))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"command": " ".join(sys.argv), "batch_size": args.batch_size,
                       "matmul_peak_gflop_per_sec": peaks, "rows": rows,
                       "ratios": summary}, f, indent=2)


if __name__ == "__main__":
    main()
