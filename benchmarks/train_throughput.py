"""Training throughput: the custom loop (XLA on/off), model.fit, SSAL vs bare, 1 vs 2 devices.

    python benchmarks/train_throughput.py [--train_examples=6144] [--epochs=3]

Every configuration trains the quick-start network (resnet_fashion_mnist) on the same
Fashion-MNIST images with the same global batch, each in a fresh process (logical devices are
fixed when TensorFlow starts). The custom loop runs through ``python -m ssal_keras.train``
and reports its steady-state images/s (the first logging window, with tracing and XLA
compilation, is left out); ``model.fit`` runs in this script on the same pipeline, timed from
its second epoch on. FLOPs are counted from the layers (convolutions and dense layers,
forward multiply-adds x 2), so the SSAL overhead in time can be set against its extra FLOPs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import ROOT, forward_flops  # noqa: E402
SSAL_FLAGS = ["--groupings=models/groupings/fashion_mnist_3.txt,"
              "models/groupings/fashion_mnist_5.txt",
              "--taps=stage1,stage2", "--head=cbr(32,3,2) gap", "--head=cbr(64,3,2) gap"]


def custom_loop(args, *, ssal, jit, devices):
    """Runs the training CLI; returns its steady-state images/s."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable, "-m", "ssal_keras.train", f"--model_dir={run_dir}",
            "--flagfile=models/fashion_mnist_baseline.flags",
            f"--train_examples={args.train_examples}", "--held_out_examples=0",
            "--eval_examples=512", f"--epochs={args.epochs}", f"--batch_size={args.batch_size}",
            "--log_every_steps=8", f"--jit_compile={str(jit).lower()}",
        ] + (SSAL_FLAGS if ssal else []) + (
            ["--strategy=mirrored", f"--logical_cpu_devices={devices}"] if devices > 1 else [])
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"train failed:\n{result.stderr[-3000:]}")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            return json.load(f)["train_images_per_sec"]


def keras_fit(args, *, ssal):
    """``model.fit`` on the same model, data pipeline and batch; returns images/s."""
    import keras
    import numpy as np

    import ssal_keras
    from ssal_keras import data, grouping
    from ssal_keras.modeling import backbones

    dataset, _ = data.load("fashion_mnist", train_examples=args.train_examples)
    backbone = backbones.build("resnet_fashion_mnist", num_classes=10, normalization="scale")
    if ssal:
        groupings = [grouping.load_grouping(os.path.join(ROOT, "models", "groupings",
                                                         f"fashion_mnist_{k}.txt"))
                     for k in (3, 5)]
        model = ssal_keras.SSALModel(backbone, [
            ssal_keras.Branch(tap="stage1", grouping=groupings[0], head=["cbr(32,3,2)", "gap"]),
            ssal_keras.Branch(tap="stage2", grouping=groupings[1], head=["cbr(64,3,2)", "gap"]),
        ])
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=True)
    else:
        model = backbone
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      jit_compile=True)
    batches = data.train_pipeline(dataset.train, batch_size=args.batch_size, augment="shift",
                                  seed=0, repeat=True)
    steps = dataset.num_train // args.batch_size
    times = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(batches, epochs=args.epochs, steps_per_epoch=steps, verbose=0,
              callbacks=[EpochTimer()])
    steady = times[1:] or times
    return steps * args.batch_size / float(np.mean(steady)), forward_flops(model)


def _parse_args():
    """The command line; ``--fit_only`` is for this script calling itself (``fit_in_process``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_examples", type=int, default=6144)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--fit_only", choices=["bare", "ssal"], help=argparse.SUPPRESS)
    return parser.parse_args()


def fit_in_process(args, kind):
    """``keras_fit`` of the ``"bare"`` or ``"ssal"`` model in a fresh process (this script with
    ``--fit_only``); returns its ``images_per_sec`` and ``flops``."""
    result = subprocess.run(
        [sys.executable, __file__, f"--fit_only={kind}",
         f"--train_examples={args.train_examples}", f"--epochs={args.epochs}",
         f"--batch_size={args.batch_size}"],
        cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        text=True)
    if result.returncode != 0:
        sys.exit(f"fit failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_all(args):
    """Every configuration, bare then SSAL: ``{configuration: images/s}``, plus each model's
    forward FLOPs under ``"<bare|ssal> flops"``."""
    rows = {}
    for ssal in (False, True):
        name = "ssal" if ssal else "bare"
        rows[f"{name} loop XLA"] = custom_loop(args, ssal=ssal, jit=True, devices=1)
        rows[f"{name} loop no XLA"] = custom_loop(args, ssal=ssal, jit=False, devices=1)
        fit = fit_in_process(args, name)
        rows[f"{name} model.fit XLA"] = fit["images_per_sec"]
        rows[f"{name} flops"] = fit["flops"]
        rows[f"{name} loop XLA 2 devices"] = custom_loop(args, ssal=ssal, jit=True, devices=2)
    return rows


def print_report(rows):
    """The images/s table, the FLOPs, and the ratios between configurations."""
    print(f"{'configuration':32s} images/s")
    for key, value in rows.items():
        if not key.endswith("flops"):
            print(f"{key:32s} {value:8.0f}")
    print(f"forward FLOPs per image: bare {rows['bare flops'] / 1e6:.1f}M, "
          f"SSAL {rows['ssal flops'] / 1e6:.1f}M (x{rows['ssal flops'] / rows['bare flops']:.2f})")
    for name in ("bare", "ssal"):
        print(f"{name}: loop XLA / model.fit = "
              f"{rows[f'{name} loop XLA'] / rows[f'{name} model.fit XLA']:.2f}, "
              f"XLA / no XLA = {rows[f'{name} loop XLA'] / rows[f'{name} loop no XLA']:.2f}, "
              f"2 devices / 1 = {rows[f'{name} loop XLA 2 devices'] / rows[f'{name} loop XLA']:.2f}")
    print(f"SSAL time overhead x{rows['bare loop XLA'] / rows['ssal loop XLA']:.2f} vs FLOPs "
          f"x{rows['ssal flops'] / rows['bare flops']:.2f}")


def main():
    """Measures every configuration and prints the report (or, with ``--fit_only``, one
    ``model.fit`` measurement as JSON)."""
    args = _parse_args()
    if args.fit_only:  # one model.fit measurement, in its own process
        images_per_sec, flops = keras_fit(args, ssal=args.fit_only == "ssal")
        print(json.dumps({"images_per_sec": images_per_sec, "flops": flops}))
        return
    print_report(measure_all(args))


if __name__ == "__main__":
    main()
