"""Inference speed: Keras ``predict``, the SavedModel, ONNX Runtime float32 and int8.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/inference.py [--models=paper,quick_start]
        [--model_dir=RUN] [--batch_size=64] [--threads=N] [--output=FILE.json]

Models: the paper's ResNet50 CIFAR100 SSAL (``models/resnet50_cifar100_ssal.flags``, three
branches, 28.9M parameters) and the quick-start SSAL (``models/fashion_mnist_ssal.flags``),
each built as the trainer builds it, with random weights; or ``--model_dir``, a trained run.
Every graph comes from ``ssal_keras.export.export_folder`` (so each is checked against
Keras first): the SavedModel, ``model.onnx`` (joint output), a base-only ONNX graph, and
``model.int8.onnx`` (``--quantize=int8``). With random weights the int8 graph is calibrated on
random images and its accuracy gate is off: those figures are speed only. A trained run is
calibrated and gated on its held-out images as the export CLI does.

Runtimes, each timed at batch 1 (median latency of ``--runs`` calls) and at ``--batch_size``
(images/s from the median of ``--batch_runs`` calls): Keras ``model.predict``; the SavedModel
(``tf.saved_model.load``, ``serving_default``); ONNX Runtime on ``model.onnx`` with its default
session options and with the deployment client's (``export/onnx_predict.py``,
``session_options``); ONNX Runtime on ``model.int8.onnx`` and on the base-only graph with the
client's options. Every figure is also given as a ratio to Keras ``predict`` of the same run.
Time on 2 CPU cores: about 6 minutes, most of it the paper model's exports and checks.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import ROOT, grouping_files, recipe_model  # noqa: E402

#: name -> (SSAL recipe, input shape, classes, groups per branch or None: the recipe's files)
MODELS = {
    "paper": ("resnet50_cifar100_ssal", (32, 32, 3), 100, (20, 33, 50)),
    "quick_start": ("fashion_mnist_ssal", (28, 28, 1), 10, None),
}
KERAS = "Keras model.predict"


def _client_session_options():
    """``session_options`` of the deployment client, loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        "onnx_predict", os.path.join(ROOT, "export", "onnx_predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.session_options


def _timed(fn, *, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _int8_data(run_dir, shape, classes):
    """Calibration images: a run's own (gated), or random ones (speed only, gate off)."""
    from ssal_keras.export import bundle, quantization

    if run_dir:
        return bundle.int8_data(run_dir), quantization.DEFAULT_MAX_DROP
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (512, *shape)).astype("float32")
    return quantization.Int8Data(images, rng.integers(0, classes, 512),
                                 "random images (speed only)"), 100.0


def _export(model, work, int8_data, max_drop):
    """The export folder (SavedModel, model.onnx, model.int8.onnx) and a base-only graph."""
    import ssal_keras.export as export

    start = time.perf_counter()
    meta = export.export_folder(model, os.path.join(work, "export"), quantize="int8",
                                int8_data=int8_data, max_int8_drop=max_drop)
    export.to_onnx(model, os.path.join(work, "base.onnx"), outputs="base")
    gate = meta["int8"]["gate"]
    print(f"exported and checked in {time.perf_counter() - start:.0f} s: max |diff| "
          f"{meta['max_abs_diff']:.2g}; int8 gate ({int8_data.source}): top-1 "
          f"{gate['int8_top1']:.4f} vs {gate['float_top1']:.4f}, agreement "
          f"{gate['argmax_agreement']:.4f}", flush=True)
    return os.path.join(work, "export")


def _runners(model, folder, work, threads):
    """``{runtime: make}``: ``make()`` loads the runtime and returns ``images -> outputs``.
    Each is loaded just before it is timed and dropped after: ONNX Runtime's idle thread
    pools spin for a while after a run, which on 2 cores would slow the next session timed."""
    import onnxruntime
    import tensorflow as tf

    default = onnxruntime.SessionOptions()
    if threads:
        default.intra_op_num_threads = threads
    tuned = _client_session_options()(threads)

    def session(path, options):
        def make():
            run = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            return lambda x: run.run(None, {"images": x})
        return make

    def saved_model():
        signature = tf.saved_model.load(os.path.join(folder, "saved_model")).signatures[
            "serving_default"]
        return lambda x: signature(images=tf.constant(x))

    return {
        KERAS: lambda: lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "SavedModel (TF)": saved_model,
        "ORT float32, default options": session(os.path.join(folder, "model.onnx"), default),
        "ORT float32, client options": session(os.path.join(folder, "model.onnx"), tuned),
        "ORT int8, client options": session(os.path.join(folder, "model.int8.onnx"), tuned),
        "ORT float32 base only, client": session(os.path.join(work, "base.onnx"), tuned),
    }


def _measure(args, name, model, shape, run_dir, classes):
    """Times every runtime on one model; returns its rows."""
    work = tempfile.mkdtemp(prefix="ssal_bench_")
    try:
        folder = _export(model, work, *_int8_data(run_dir, shape, classes))
        rng = np.random.default_rng(0)
        one = rng.uniform(0, 255, (1, *shape)).astype("float32")
        many = rng.uniform(0, 255, (args.batch_size, *shape)).astype("float32")
        rows = {}
        for runtime, make in _runners(model, folder, work, args.threads).items():
            run = make()
            latency = _timed(lambda: run(one), warmup=args.warmup, runs=args.runs)
            per_batch = _timed(lambda: run(many), warmup=1, runs=args.batch_runs)
            rows[runtime] = {"batch1_ms": latency * 1e3,
                             "batch_images_per_sec": args.batch_size / per_batch}
        keras_row = rows[KERAS]
        print(f"\n{name}: {model.count_params():,} parameters, input {shape}")
        print(f"{'runtime':<32}{'batch-1 ms':>12}{'x Keras':>9}"
              f"{f'batch-{args.batch_size} img/s':>18}{'x Keras':>9}")
        for runtime, row in rows.items():
            row["batch1_speedup"] = keras_row["batch1_ms"] / row["batch1_ms"]
            row["batch_speedup"] = row["batch_images_per_sec"] / keras_row["batch_images_per_sec"]
            print(f"{runtime:<32}{row['batch1_ms']:>12.2f}{row['batch1_speedup']:>9.2f}"
                  f"{row['batch_images_per_sec']:>18.1f}{row['batch_speedup']:>9.2f}", flush=True)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _models(args):
    """``[(name, model, input shape, run folder or None, classes)]`` to time."""
    if args.model_dir:
        from ssal_keras.export import load_run

        model, _ = load_run(args.model_dir)
        shape = tuple(model.inputs[0].shape[1:])
        return [(args.model_dir, model, shape, args.model_dir, None)]
    chosen = []
    folder = tempfile.mkdtemp(prefix="ssal_bench_groupings_")
    for name in args.models.split(","):
        recipe, shape, classes, groups = MODELS[name]
        groupings = grouping_files(folder, classes, groups) if groups else None
        chosen.append((name, recipe_model(recipe, shape, classes, groupings), shape, None,
                       classes))
    return chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--model_dir", default=None, help="A trained run folder instead.")
    parser.add_argument("--batch_size", type=int, default=64, help="Throughput batch (64).")
    parser.add_argument("--runs", type=int, default=30, help="Timed batch-1 calls (median).")
    parser.add_argument("--batch_runs", type=int, default=10, help="Timed large-batch calls.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed calls before timing.")
    parser.add_argument("--threads", type=int, default=0,
                        help="Intra-op threads for TF and ORT (0: each runtime's default).")
    parser.add_argument("--output", default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args()
    unknown = [n for n in args.models.split(",") if n not in MODELS]
    if unknown and not args.model_dir:
        sys.exit(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")

    import keras
    import onnxruntime
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    results = {name: _measure(args, name, model, shape, run_dir, classes)
               for name, model, shape, run_dir, classes in _models(args)}
    print(f"\nTF {tf.__version__}, Keras {keras.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {os.cpu_count()} CPU cores, threads "
          f"{args.threads or 'default'}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"command": " ".join(sys.argv), "batch_size": args.batch_size,
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
