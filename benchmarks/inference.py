"""Inference speed of one model in Keras, as a SavedModel and in ONNX Runtime; joint vs base.

Times batch-1 latency (median over ``--runs`` calls after ``--warmup``) and batch-64
throughput (images per second, from the median of ``--batch_runs`` calls) for:

* Keras ``model.predict(x)`` and the direct call ``model(x, training=False)``;
* the exported SavedModel (``tf.saved_model.load``, signature ``serving_default``);
* ONNX Runtime on the exported ONNX graph (joint output);
* ONNX Runtime on a base-only export of the same weights (the backbone alone: tf2onnx prunes
  the branches), which gives the cost of the fused joint output.

Every export is made with ``ssal_keras.export`` and so checked against Keras first. The model
is the paper's ResNet50 CIFAR100 SSAL model (28.9M parameters, three branches of 20/33/50
groups, random weights, inputs scaled by 1/255 inside the model) unless ``--model_dir``
names a run folder. Command (repository root; about 5 minutes on 2 CPU cores, most of it
the exports and their checks):

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/inference.py
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np


def _timed(fn, *, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _build(args):
    import ssal_keras
    from ssal_keras.export import load_run
    from ssal_keras.modeling import backbones

    if args.model_dir:
        model, _ = load_run(args.model_dir)
        return model, args.model_dir
    # ssal_keras.paper_model's layout, with the inputs scaled inside the model (/255) as the
    # trainer's models are: raw pixels in, softmaxes not saturated by random weights.
    config = ssal_keras.PAPER_MODELS[args.paper_model]
    backbone = backbones.build(config.backbone, num_classes=config.num_classes,
                               normalization="scale")
    branches = [
        ssal_keras.Branch(tap=tap, grouping=np.arange(config.num_classes) % groups, head=head)
        for tap, head, groups in zip(config.taps, config.heads, config.paper_groups)
    ]
    model = ssal_keras.SSALModel(backbone, branches, alpha=config.alpha, name=args.paper_model)
    return model, f"{args.paper_model} (inputs /255 in the model)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=None, help="Run folder holding model.keras.")
    parser.add_argument("--paper_model", default="resnet50_cifar100",
                        help="ssal_keras.PAPER_MODELS key, used without --model_dir.")
    parser.add_argument("--batch_size", type=int, default=64, help="Throughput batch (64).")
    parser.add_argument("--runs", type=int, default=30, help="Timed batch-1 calls (median).")
    parser.add_argument("--batch_runs", type=int, default=5, help="Timed large-batch calls.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed calls before timing.")
    parser.add_argument("--threads", type=int, default=0,
                        help="Intra-op threads for TF and ORT (0: each runtime's default).")
    args = parser.parse_args()

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    try:
        import ssal_keras.export  # noqa: F401
    except ImportError:  # run from a checkout without installing the package
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    model, label = _build(args)
    work = tempfile.mkdtemp(prefix="ssal_bench_")
    try:
        _benchmark(args, model, label, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_all(model, label, work):
    """Exports ``model`` into ``work``: a SavedModel and an ONNX graph of the default output
    (``joint.onnx``), and a base-only ONNX graph (``base.onnx``) where the default is not the
    base. Each export is checked against Keras.

    Returns:
        ``(default, (height, width, channels), base_only)``: the default output's name, the
        input shape and whether ``base.onnx`` was made.
    """
    import ssal_keras.export as export
    from ssal_keras.modeling import outputs

    default = export.serving.default_outputs(model)
    height, width, channels = export.serving.check_exportable(model)
    print(f"model: {label}, {model.count_params():,} parameters, input {height}x{width}x"
          f"{channels}, exported output {default!r}; exporting to {work} ...", flush=True)

    start = time.perf_counter()
    sm = export.to_saved_model(model, os.path.join(work, "saved_model"))
    onnx_joint = export.to_onnx(model, os.path.join(work, "joint.onnx"))
    base_only = None
    if default != outputs.BASE:
        base_only = export.to_onnx(model, os.path.join(work, "base.onnx"), outputs=outputs.BASE)
    print(f"exports checked in {time.perf_counter() - start:.0f} s: max |diff| SavedModel "
          f"{sm['max_abs_diff']:.2g}, ONNX {onnx_joint['max_abs_diff']:.2g}"
          + (f", ONNX base-only {base_only['max_abs_diff']:.2g}" if base_only else ""),
          flush=True)
    return default, (height, width, channels), base_only is not None


def _runners(args, model, work, default, base_only):
    """``{runtime name: images -> outputs}``: Keras (predict and direct call), the SavedModel,
    and ONNX Runtime on ``joint.onnx`` (and ``base.onnx`` when ``base_only``)."""
    import onnxruntime
    import tensorflow as tf

    import ssal_keras.export as export

    signature = tf.saved_model.load(os.path.join(work, "saved_model")).signatures[
        "serving_default"]
    options = onnxruntime.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads

    def session(path):
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    runners = {
        "Keras model.predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "Keras model(x)": lambda x: export.serving.call_model(model, x),
        "SavedModel (TF)": lambda x: signature(images=tf.constant(x)),
    }
    joint_session = session(os.path.join(work, "joint.onnx"))
    runners[f"ONNX Runtime ({default})"] = lambda x: joint_session.run(None, {"images": x})
    if base_only:
        base_session = session(os.path.join(work, "base.onnx"))
        runners["ONNX Runtime (base only)"] = lambda x: base_session.run(None, {"images": x})
    return runners


def _time_runners(args, runners, one, many):
    """Times every runner on ``one`` image and on the ``many`` batch and prints a table row
    each; returns ``{name: (batch-1 latency in s, images/s)}``."""
    results = {}
    print(f"\n{'runtime':<28}{'batch-1 latency (ms)':>22}"
          f"{f'batch-{args.batch_size} images/s':>22}")
    for name, run in runners.items():
        latency = _timed(lambda: run(one), warmup=args.warmup, runs=args.runs)
        per_batch = _timed(lambda: run(many), warmup=1, runs=args.batch_runs)
        results[name] = (latency, args.batch_size / per_batch)
        print(f"{name:<28}{latency * 1e3:>22.2f}{args.batch_size / per_batch:>22.1f}",
              flush=True)
    return results


def _print_joint_cost(args, results, default):
    """The fused joint output against the base alone, both in ONNX Runtime."""
    joint = results[f"ONNX Runtime ({default})"]
    base = results["ONNX Runtime (base only)"]
    print(f"\nfused joint output vs base only (ONNX Runtime): batch-1 latency "
          f"{joint[0] * 1e3:.2f} vs {base[0] * 1e3:.2f} ms ({joint[0] / base[0] - 1:+.0%}), "
          f"batch-{args.batch_size} throughput {joint[1]:.1f} vs {base[1]:.1f} images/s "
          f"({joint[1] / base[1] - 1:+.0%})")


def _print_environment(args):
    """The library versions, cores and threads the figures were measured with."""
    import keras
    import onnxruntime
    import tensorflow as tf

    print(f"\nTF {tf.__version__}, Keras {keras.__version__}, onnxruntime "
          f"{onnxruntime.__version__}, {os.cpu_count()} CPU cores, threads "
          f"{args.threads or 'default'}")


def _benchmark(args, model, label, work):
    """Exports ``model`` into ``work``, times every runtime and prints the results."""
    default, (height, width, channels), base_only = _export_all(model, label, work)
    rng = np.random.default_rng(0)
    one = rng.uniform(0, 255, size=(1, height, width, channels)).astype("float32")
    many = rng.uniform(0, 255, size=(args.batch_size, height, width, channels)).astype("float32")
    results = _time_runners(args, _runners(args, model, work, default, base_only), one, many)
    if base_only:
        _print_joint_cost(args, results, default)
    _print_environment(args)


if __name__ == "__main__":
    main()
