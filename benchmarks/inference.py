"""Inference speed: TensorFlow (compiled call, XLA, SavedModel, Keras ``predict``) against
ONNX Runtime (float32 with its defaults and with the client's session options, int8, base
only), and the client's session options settled against ONNX Runtime's defaults.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/inference.py [--models=paper,quick_start]
        [--model_dir=RUN] [--batch_size=64] [--calls=N] [--batch_calls=N] [--warmup=5]
        [--repeats=3] [--ab_repeats=4] [--option_check] [--threads=N] [--no_merge]
        [--output=FILE.json]

Models (``MODELS``): the paper's ResNet50 CIFAR100 SSAL (``models/resnet50_cifar100_ssal.flags``:
``ssal_keras.paper_model("resnet50_cifar100")`` with the recipe's input scaling, three
branches of 20/33/50 groups) and the quick-start SSAL (``models/fashion_mnist_ssal.flags``),
each built as the trainer builds it with random weights; or ``--model_dir``, a trained run.
Every graph comes from ``ssal_keras.export.export_folder`` (each checked against Keras first):
the SavedModel, ``model.onnx`` (joint output), ``model.int8.onnx`` and a base-only ONNX graph.
With random weights the int8 graph is calibrated on random images with its accuracy gate
off: its figures are speed only.

Runtimes (``RUNTIMES``), each at batch 1 (latency: ms per call, ``--calls`` calls) and at
``--batch_size`` (throughput: images/s, ``--batch_calls`` calls), after ``--warmup`` untimed
calls at that batch (tracing, XLA compilation, session set-up): the TensorFlow ones in this
process, each ONNX Runtime one in a fresh process that imports no TensorFlow (a session's
idle thread pool, and the flush-to-zero mode a session leaves on the calling thread, never
reach another measurement). Repeats are interleaved: each repeat times every runtime once,
the order rotated by one each repeat. A repeat's latency is its seconds / calls, its
throughput its images / seconds; each figure has min / median / max over ``--repeats``.
Ratios divide medians of this run: against the compiled TensorFlow call (``tf_function``, the
fair baseline: the same graph without Keras's per-call ``predict`` machinery) and against
Keras ``model.predict``.

Session options (``session_options`` in the JSON): ONNX Runtime's defaults (A) and the
deployment client's ``export/onnx_predict.py`` ``session_options`` (B) on ``model.onnx``,
each measurement a fresh process, in the order A B B A A B B A ... for ``--ab_repeats``
rounds, at batch 1 and at ``--batch_size``. ``--option_check`` adds one variant per option
(``OPTION_VARIANTS``: each of the client's options alone on the defaults, the client without
the denormal flush, with spinning off, an explicit thread count) under the same protocol.

Writes ``benchmark_inference.json`` into ``docs/`` (per model its command, date, machine
and settings; a later run of one model keeps the other's entry unless ``--no_merge``). Time
on 2 idle CPU cores: about 35 minutes with the defaults, most of it the paper model at
batch 64 (``--option_check`` adds about 30 minutes on the paper model).
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BENCHMARK = "inference"
OUTPUT = "benchmark_inference.json"
#: name -> SSAL recipe, input shape, classes, groups per branch (None: the recipe's files),
#: and the default timed calls per repeat at batch 1 and at --batch_size.
MODELS = {
    "paper": {"recipe": "resnet50_cifar100_ssal", "shape": (32, 32, 3), "classes": 100,
              "groups": (20, 33, 50), "calls": 100, "batch_calls": 50},
    "quick_start": {"recipe": "fashion_mnist_ssal", "shape": (28, 28, 1), "classes": 10,
                    "groups": None, "calls": 500, "batch_calls": 200},
}
#: runtime -> what it is. ``ort_*`` run in ONNX Runtime worker processes.
RUNTIMES = {
    "tf_function": "model(x, training=False) in a tf.function (jit_compile=False), input "
                   "signature [None, H, W, C]: the compiled TensorFlow call",
    "tf_function_xla": "the same tf.function with jit_compile=True (XLA; one compilation "
                       "per batch size, in the warm-up)",
    "saved_model": "the exported SavedModel, tf.saved_model.load(...).signatures"
                   "['serving_default']",
    "keras_predict": "Keras model.predict(x, batch_size=len(x), verbose=0)",
    "ort_float32_defaults": "ONNX Runtime, model.onnx, onnxruntime.SessionOptions() as they "
                            "come (intra-op threads: --threads if given)",
    "ort_float32_client": "ONNX Runtime, model.onnx, export/onnx_predict.py session_options",
    "ort_int8_client": "ONNX Runtime, model.int8.onnx, the client's session options",
    "ort_base_only_client": "ONNX Runtime, a float32 graph of the base output only, the "
                            "client's session options",
}
#: ONNX Runtime runtime -> (graph file in the work folder, options variant)
ORT_RUNTIMES = {
    "ort_float32_defaults": ("export/model.onnx", "defaults"),
    "ort_float32_client": ("export/model.onnx", "client"),
    "ort_int8_client": ("export/model.int8.onnx", "client"),
    "ort_base_only_client": ("base.onnx", "client"),
}
#: Session-option variants: name -> (start from "defaults" or "client", attributes set,
#: session config entries added). "cores": the usable CPU cores of the worker.
OPTION_VARIANTS = {
    "defaults": ("defaults", {}, {}),
    "client": ("client", {}, {}),
    "defaults+graph_optimization_level=ORT_ENABLE_ALL": (
        "defaults", {"graph_optimization_level": "ORT_ENABLE_ALL"}, {}),
    "defaults+execution_mode=ORT_SEQUENTIAL": (
        "defaults", {"execution_mode": "ORT_SEQUENTIAL"}, {}),
    "defaults+inter_op_num_threads=1": ("defaults", {"inter_op_num_threads": 1}, {}),
    "defaults+session.set_denormal_as_zero=1": (
        "defaults", {}, {"session.set_denormal_as_zero": "1"}),
    "client+session.set_denormal_as_zero=0": (
        "client", {}, {"session.set_denormal_as_zero": "0"}),
    "client+session.intra_op.allow_spinning=0": (
        "client", {}, {"session.intra_op.allow_spinning": "0"}),
    "defaults+intra_op_num_threads=cores": ("defaults", {"intra_op_num_threads": "cores"}, {}),
}
AB_VARIANTS = ("defaults", "client")


# === ONNX Runtime worker (no TensorFlow) =====================================================
def client_session_options():
    """``session_options`` of the deployment client, loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        "onnx_predict", os.path.join(common.ROOT, "export", "onnx_predict.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.session_options


def session_options(variant, threads):
    """The ``onnxruntime.SessionOptions`` of an ``OPTION_VARIANTS`` name."""
    import onnxruntime

    start, attributes, entries = OPTION_VARIANTS[variant]
    if start == "client":
        options = client_session_options()(threads or None)
    else:
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
    for name, value in attributes.items():
        if value == "cores":
            value = len(os.sched_getaffinity(0))
        elif name == "graph_optimization_level":
            value = getattr(onnxruntime.GraphOptimizationLevel, value)
        elif name == "execution_mode":
            value = getattr(onnxruntime.ExecutionMode, value)
        setattr(options, name, value)
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def _timed_calls(run, x, *, warmup, calls):
    """Seconds of ``calls`` calls of ``run(x)`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run(x)
    start = time.perf_counter()
    for _ in range(calls):
        run(x)
    return time.perf_counter() - start


def _inputs(shape, batch_size):
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 255, (1, *shape)).astype("float32"),
            rng.uniform(0, 255, (batch_size, *shape)).astype("float32"))


def ort_worker(spec):
    """One measurement in this (TensorFlow-free) process: prints ``ORT {json}``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        spec["path"], session_options(spec["variant"], spec["threads"]),
        providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    run = lambda x: session.run(None, {name: x})  # noqa: E731
    one, many = _inputs(tuple(spec["shape"]), spec["batch_size"])
    result = {
        "batch1_seconds": _timed_calls(run, one, warmup=spec["warmup"], calls=spec["calls"]),
        "batch_seconds": _timed_calls(run, many, warmup=spec["warmup"],
                                      calls=spec["batch_calls"]),
        "intra_op_num_threads_option": session.get_session_options().intra_op_num_threads,
    }
    print("ORT " + json.dumps(result), flush=True)


def run_ort_worker(spec):
    """``ort_worker`` in a fresh Python; its result."""
    env = {k: v for k, v in os.environ.items()}
    result = subprocess.run([sys.executable, os.path.abspath(__file__),
                             f"--ort_worker={json.dumps(spec)}"], cwd=common.ROOT, env=env,
                            capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("ORT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"ONNX Runtime worker failed ({spec}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("ORT "):])


# === Export =================================================================================
def _int8_data(run_dir, shape, classes):
    """Calibration images: a run's own (gated), or random ones (speed only, gate off)."""
    from ssal_keras.export import bundle, quantization

    if run_dir:
        return bundle.int8_data(run_dir), quantization.DEFAULT_MAX_DROP
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (512, *shape)).astype("float32")
    return quantization.Int8Data(images, rng.integers(0, classes, 512),
                                 "random images (speed only)"), 100.0


def export_graphs(model, work, int8_data, max_drop, log=print):
    """The export folder (SavedModel, model.onnx, model.int8.onnx) and ``base.onnx``; what
    the export checked."""
    import ssal_keras.export as export

    start = time.perf_counter()
    meta = export.export_folder(model, os.path.join(work, "export"), quantize="int8",
                                int8_data=int8_data, max_int8_drop=max_drop)
    export.to_onnx(model, os.path.join(work, "base.onnx"), outputs="base")
    seconds = time.perf_counter() - start
    gate = meta["int8"]["gate"]
    log(f"exported and checked in {seconds:.0f} s; int8 gate ({int8_data.source}): top-1 "
        f"{gate['int8_top1']:.4f} vs {gate['float_top1']:.4f}")
    return {"seconds": seconds, "max_abs_diff": meta.get("max_abs_diff"),
            "int8_calibration": int8_data.source, "int8_gate": gate}


# === TensorFlow runtimes ======================================================================
def tf_runners(model, work, shape):
    """``{runtime: images -> outputs}`` of the TensorFlow runtimes."""
    import tensorflow as tf

    signature = [tf.TensorSpec([None, *shape], tf.float32, name="images")]

    def call(x):
        return model(x, training=False)

    compiled = tf.function(call, input_signature=signature, jit_compile=False)
    compiled_xla = tf.function(call, input_signature=signature, jit_compile=True)
    served = tf.saved_model.load(os.path.join(work, "export", "saved_model"))
    serving = served.signatures["serving_default"]

    def force(outputs):  # every output computed and on the host
        return [np.asarray(t) for t in tf.nest.flatten(outputs)]

    runners = {
        "tf_function": lambda x: force(compiled(tf.constant(x))),
        "tf_function_xla": lambda x: force(compiled_xla(tf.constant(x))),
        "saved_model": lambda x: force(serving(images=tf.constant(x))),
        "keras_predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
    }
    runners["_keep"] = served  # the loaded SavedModel lives as long as its signature
    return runners


# === One model ==============================================================================
def figures(seconds_batch1, calls, seconds_batch, batch_calls, batch_size):
    return {"batch1_ms": seconds_batch1 / calls * 1e3,
            "batch_images_per_sec": batch_size * batch_calls / seconds_batch}


def measure_runtimes(args, model, work, settings, runtimes, log=print):
    """Every runtime's figures per repeat, interleaved (rotated order)."""
    if not runtimes:
        return {}
    shape, batch_size = settings["input_shape"], args.batch_size
    one, many = _inputs(tuple(shape), batch_size)
    runners = tf_runners(model, work, tuple(shape)) if any(
        r not in ORT_RUNTIMES for r in runtimes) else {}
    per_repeat = {r: [] for r in runtimes}
    for repeat in range(args.repeats):
        order = runtimes[repeat % len(runtimes):] + runtimes[:repeat % len(runtimes)]
        for runtime in order:
            if runtime in ORT_RUNTIMES:
                graph, variant = ORT_RUNTIMES[runtime]
                result = run_ort_worker(ort_spec(args, settings, os.path.join(work, graph),
                                                 variant))
                seconds1, seconds = result["batch1_seconds"], result["batch_seconds"]
            else:
                run = runners[runtime]
                seconds1 = _timed_calls(run, one, warmup=args.warmup, calls=settings["calls"])
                seconds = _timed_calls(run, many, warmup=args.warmup,
                                       calls=settings["batch_calls"])
            row = figures(seconds1, settings["calls"], seconds, settings["batch_calls"],
                          batch_size)
            per_repeat[runtime].append(row)
            log(f"  repeat {repeat + 1} {runtime:22s} {row['batch1_ms']:9.3f} ms  "
                f"{row['batch_images_per_sec']:10.1f} img/s")
            time.sleep(0.2)  # idle thread pools stop spinning before the next runtime
    return {r: {"what": RUNTIMES[r],
                "batch1_ms": common.summary([row["batch1_ms"] for row in rows]),
                "batch_images_per_sec": common.summary(
                    [row["batch_images_per_sec"] for row in rows])}
            for r, rows in per_repeat.items()}


def ort_spec(args, settings, path, variant):
    return {"path": path, "variant": variant, "threads": args.threads,
            "shape": list(settings["input_shape"]), "batch_size": args.batch_size,
            "warmup": args.warmup, "calls": settings["calls"],
            "batch_calls": settings["batch_calls"]}


def runtime_ratios(rows):
    """Per runtime: speed against ``tf_function`` and ``keras_predict`` (> 1: faster), at
    batch 1 (latency) and at the large batch (throughput); int8 against float32."""
    out = {}
    for runtime, row in rows.items():
        ratios = {}
        for baseline in ("tf_function", "keras_predict"):
            if baseline in rows and runtime != baseline:
                base = rows[baseline]
                ratios[f"batch1_speedup_vs_{baseline}"] = common.ratio(
                    base["batch1_ms"], f"runtimes.{baseline}.batch1_ms",
                    row["batch1_ms"], f"runtimes.{runtime}.batch1_ms")
                ratios[f"batch_speedup_vs_{baseline}"] = common.ratio(
                    row["batch_images_per_sec"], f"runtimes.{runtime}.batch_images_per_sec",
                    base["batch_images_per_sec"], f"runtimes.{baseline}.batch_images_per_sec")
        if ratios:
            out[runtime] = ratios
    pairs = (("ort_int8_client", "ort_float32_client"),
             ("ort_float32_client", "ort_float32_defaults"),
             ("ort_float32_client", "ort_base_only_client"))
    for top, bottom in pairs:
        if top in rows and bottom in rows:
            out[f"{top}_vs_{bottom}"] = {
                "batch1_speedup": common.ratio(
                    rows[bottom]["batch1_ms"], f"runtimes.{bottom}.batch1_ms",
                    rows[top]["batch1_ms"], f"runtimes.{top}.batch1_ms"),
                "batch_speedup": common.ratio(
                    rows[top]["batch_images_per_sec"], f"runtimes.{top}.batch_images_per_sec",
                    rows[bottom]["batch_images_per_sec"],
                    f"runtimes.{bottom}.batch_images_per_sec")}
    return out


def session_option_comparison(args, settings, work, variants, log=print):
    """Each variant in fresh processes, the order alternating (A B B A ...) per round."""
    path = os.path.join(work, "export", "model.onnx")
    per_variant = {v: [] for v in variants}
    threads = {}
    for round_index in range(args.ab_repeats):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for variant in order:
            time.sleep(0.2)  # as between runtimes: idle thread pools settle first
            result = run_ort_worker(ort_spec(args, settings, path, variant))
            threads[variant] = result["intra_op_num_threads_option"]
            row = figures(result["batch1_seconds"], settings["calls"], result["batch_seconds"],
                          settings["batch_calls"], args.batch_size)
            per_variant[variant].append(row)
            log(f"  options round {round_index + 1} {variant:44s} {row['batch1_ms']:9.3f} ms "
                f"{row['batch_images_per_sec']:10.1f} img/s")
    rows = {v: {"options": _describe_variant(v), "intra_op_num_threads_option": threads[v],
                "batch1_ms": common.summary([r["batch1_ms"] for r in per_variant[v]]),
                "batch_images_per_sec": common.summary(
                    [r["batch_images_per_sec"] for r in per_variant[v]])}
            for v in variants}
    ratios = {}
    for variant in variants:
        if variant == "defaults":
            continue
        ratios[f"{variant}_vs_defaults"] = {
            "batch1_speedup": common.ratio(
                rows["defaults"]["batch1_ms"], "variants.defaults.batch1_ms",
                rows[variant]["batch1_ms"], f"variants.{variant}.batch1_ms"),
            "batch_speedup": common.ratio(
                rows[variant]["batch_images_per_sec"],
                f"variants.{variant}.batch_images_per_sec",
                rows["defaults"]["batch_images_per_sec"],
                "variants.defaults.batch_images_per_sec")}
    return {"protocol": f"model.onnx; every measurement a fresh ONNX Runtime process; "
                        f"{args.ab_repeats} rounds, the variants in order then reversed "
                        "(A B, B A, ...); batch 1 then the large batch in each process",
            "rounds": args.ab_repeats, "variants": rows, "ratios": ratios}


def _describe_variant(variant):
    start, attributes, entries = OPTION_VARIANTS[variant]
    what = ("export/onnx_predict.py session_options(threads)" if start == "client"
            else "onnxruntime.SessionOptions()")
    changes = [f"{k}={v}" for k, v in attributes.items()] + [
        f"add_session_config_entry({k!r}, {v!r})" for k, v in entries.items()]
    return what + ("; then " + ", ".join(changes) if changes else "")


def measure_model(args, name, model, shape, run_dir, classes, settings, log=print):
    """One model's entry."""
    work = tempfile.mkdtemp(prefix="ssal_bench_")
    try:
        with common.stage(f"{name}: export", log):
            export_info = export_graphs(model, work, *_int8_data(run_dir, shape, classes),
                                        log=log)
        with common.stage(f"{name}: runtimes", log):
            rows = measure_runtimes(args, model, work, settings, list(args.runtimes), log)
        with common.stage(f"{name}: session options", log):
            variants = list(OPTION_VARIANTS) if args.option_check else list(AB_VARIANTS)
            options = session_option_comparison(args, settings, work, variants, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**common.record(args.command, settings),
            "model": {"source": settings["source"], "params": int(model.count_params()),
                      "input_shape": list(shape)},
            "export": export_info, "runtimes": rows, "ratios": runtime_ratios(rows),
            "session_options": options}


def chosen_models(args):
    """``[(name, model, input shape, run folder or None, classes, source)]``."""
    from benchmarks.common import grouping_files, recipe_model

    if args.model_dir:
        from ssal_keras.export import load_run

        model, _ = load_run(args.model_dir)
        shape = tuple(model.inputs[0].shape[1:])
        return [(os.path.basename(os.path.normpath(args.model_dir)), model, shape,
                 args.model_dir, None, f"trained run {args.model_dir}")]
    chosen = []
    with tempfile.TemporaryDirectory(prefix="ssal_bench_groupings_") as folder:
        for name in args.models:  # the grouping files are read while the model is built
            spec = MODELS[name]
            groupings = grouping_files(folder, spec["classes"], spec["groups"]) \
                if spec["groups"] else None
            model = recipe_model(spec["recipe"], spec["shape"], spec["classes"], groupings)
            chosen.append((name, model, spec["shape"], None, spec["classes"],
                           f"models/{spec['recipe']}.flags, random weights"
                           + (f", groupings c mod k for k = {spec['groups']}"
                              if spec["groups"] else "")))
    return chosen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--model_dir", default=None, help="A trained run folder instead.")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help=f"Comma-separated, of: {', '.join(RUNTIMES)}; empty: only the "
                             "session-options comparison.")
    parser.add_argument("--batch_size", type=int, default=64, help="Throughput batch (64).")
    parser.add_argument("--calls", type=int, default=None,
                        help="Timed batch-1 calls per repeat (paper 100, quick start 500).")
    parser.add_argument("--batch_calls", type=int, default=None,
                        help="Timed large-batch calls per repeat (paper 50, quick start 200).")
    parser.add_argument("--ab_repeats", type=int, default=4,
                        help="Rounds of the session-options comparison (4: A B B A A B B A).")
    parser.add_argument("--option_check", action="store_true",
                        help="Also time each session option alone (OPTION_VARIANTS), in the "
                             "same alternating protocol (on the paper model about 30 minutes "
                             "more on 2 cores).")
    parser.add_argument("--threads", type=int, default=0,
                        help="Intra-op threads for TF and ORT (0: each runtime's default).")
    parser.add_argument("--no_merge", action="store_true",
                        help="Write only this run's models (default: keep the others).")
    common.add_protocol_flags(parser, output=OUTPUT, steps="--calls/--batch_calls",
                              warmup=5, repeats=3, what="calls")
    parser.add_argument("--ort_worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ort_worker:
        return args
    if args.steps is not None:
        parser.error("inference counts calls: use --calls and --batch_calls")
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown and not args.model_dir:
        parser.error(f"unknown model(s) {unknown}; valid: {', '.join(MODELS)}")
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = [r for r in args.runtimes if r not in RUNTIMES]
    if unknown:
        parser.error(f"unknown runtime(s) {unknown}; valid: {', '.join(RUNTIMES)}")
    args._protocol_defaults = dict(args._protocol_defaults, steps=common.MIN_STEPS)
    common.resolve_protocol(parser, args)
    floor = 1 if args.smoke else common.MIN_STEPS
    for flag in ("calls", "batch_calls"):
        value = getattr(args, flag)
        if value is not None and value < floor:
            parser.error(f"--{flag} must be at least {floor} (received {value})")
    if args.ab_repeats < (1 if args.smoke else common.MIN_REPEATS):
        parser.error(f"--ab_repeats must be at least {common.MIN_REPEATS}")
    if args.smoke:
        args.ab_repeats = 1
    return common.set_command(args, __file__, argv)


def model_settings(args, name, shape, source):
    spec = MODELS.get(name, MODELS["paper"])
    calls = args.calls or (common.SMOKE["steps"] if args.smoke else spec["calls"])
    batch_calls = args.batch_calls or (common.SMOKE["steps"] if args.smoke
                                       else spec["batch_calls"])
    return {**common.protocol_settings(args), "steps": None, "calls": calls,
            "batch_calls": batch_calls, "batch_size": args.batch_size,
            "input_shape": list(shape), "threads": args.threads or "each runtime's default",
            "runtimes": list(args.runtimes), "ab_repeats": args.ab_repeats,
            "option_check": args.option_check, "source": source,
            "repeat_unit": "one repeat = --calls batch-1 calls and --batch_calls large-batch "
                           "calls of each runtime, timed as wholes"}


def print_report(name, entry):
    print(f"\n{name}: {entry['model']['params']:,} parameters")
    print(f"{'runtime':<24}{'batch-1 ms (median)':>22}{'batch img/s (median)':>24}"
          f"{'x tf_function':>15}{'x predict':>11}")
    for runtime, row in entry["runtimes"].items():
        ratios = entry["ratios"].get(runtime, {})
        vs_tf = ratios.get("batch_speedup_vs_tf_function", {}).get("value", 1.0)
        vs_keras = ratios.get("batch_speedup_vs_keras_predict", {}).get("value", 1.0)
        print(f"{runtime:<24}{row['batch1_ms']['median']:>22.3f}"
              f"{row['batch_images_per_sec']['median']:>24.1f}{vs_tf:>15.2f}{vs_keras:>11.2f}")
    for key, value in entry["session_options"]["ratios"].items():
        print(f"{key}: batch 1 x{value['batch1_speedup']['value']:.2f}, "
              f"batch x{value['batch_speedup']['value']:.2f}")


def main(argv=None):
    args = parse_args(argv)
    if args.ort_worker:
        ort_worker(json.loads(args.ort_worker))
        return None
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    measured = {}
    for name, model, shape, run_dir, classes, source in chosen_models(args):
        settings = model_settings(args, name, shape, source)
        measured[name] = measure_model(args, name, model, shape, run_dir, classes, settings)
        print_report(name, measured[name])
    models = common.merge_models(args.output, BENCHMARK, measured, merge=not args.no_merge)
    document = {"benchmark": BENCHMARK, "command": args.command, "date": common.now(),
                "protocol": common.__doc__.split("\n\n")[1].replace("\n", " "),
                "ratio_convention": "speedup = baseline median time / runtime median time "
                                    "(batch 1) or runtime median images/s / baseline median "
                                    "images/s (large batch): > 1 means faster than the "
                                    "baseline",
                "models": models}
    common.write_json(args.output, document)
    print(f"\nwritten: {args.output}")
    return document


if __name__ == "__main__":
    main()
