"""What the benchmarks share: the timing protocol and its flags, the JSON record (machine,
versions, settings, every repeat with its min / median / max, ratios of medians), FLOPs, and
the training step of the recipes timed through the trainer and through ``model.fit``.

Protocol of every benchmark: ``--warmup`` untimed steps (or calls) first, tracing and
compilation included; then ``--repeats`` repeats of ``--steps`` timed steps each (at least 50
steps and 3 repeats, unless ``--smoke``). A repeat's figure comes from its totals: images/s is
``images / seconds`` of the whole repeat, a latency is ``seconds / calls``; never a mean of
per-window rates. Each figure is reported per repeat with the min, median and max over the
repeats, and every ratio divides two medians measured in the same run of the script (it names
both).

This module imports neither TensorFlow nor ONNX Runtime at import time (the ONNX Runtime
workers of ``inference.py`` must start without TensorFlow).
"""

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: The floor of a measurement for the docs.
MIN_STEPS, MIN_REPEATS = 50, 3
#: ``--smoke``: warm-up, timed steps, repeats (each still overridable on the command line).
SMOKE = {"warmup": 2, "steps": 3, "repeats": 1}
#: CPU features that decide the speed of bfloat16 and int8 kernels on x86.
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "avx512_vnni", "amx_int8", "avx512f", "avx2")
#: Packages whose versions every JSON records (those installed).
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "numpy", "onnxruntime",
            "onnx", "tf2onnx")


# === Protocol and flags =====================================================================
def add_protocol_flags(parser, *, output, steps, warmup, repeats, what="steps"):
    """``--warmup``, ``--steps``, ``--repeats``, ``--smoke`` and ``--output`` (``output``: the
    default file name under ``docs/``)."""
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"Untimed {what} before timing, compilation included ({warmup}).")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"Timed {what} per repeat ({steps}; at least {MIN_STEPS}).")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"Repeats ({repeats}; at least {MIN_REPEATS}).")
    parser.add_argument("--smoke", action="store_true",
                        help=f"Test the code paths with tiny settings ({SMOKE['warmup']} "
                             f"warm-up, {SMOKE['steps']} timed, {SMOKE['repeats']} repeat): "
                             "never for the docs; needs --output outside docs/.")
    parser.add_argument("--output", default=os.path.join(DOCS, output),
                        help=f"The JSON written (docs/{output}).")
    parser.set_defaults(_protocol_defaults={"steps": steps, "warmup": warmup,
                                            "repeats": repeats, "output": output})


def resolve_protocol(parser, args):
    """Fills ``--warmup/--steps/--repeats`` (smoke or default values) and checks them: at
    least ``MIN_STEPS`` steps and ``MIN_REPEATS`` repeats unless ``--smoke``; a smoke run never
    writes under ``docs/``."""
    defaults = SMOKE if args.smoke else args._protocol_defaults
    for name in ("warmup", "steps", "repeats"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    if not args.smoke and (args.steps < MIN_STEPS or args.repeats < MIN_REPEATS):
        parser.error(f"a measurement takes at least --steps={MIN_STEPS} and "
                     f"--repeats={MIN_REPEATS} (received {args.steps} and {args.repeats}); "
                     "--smoke is for testing the script only")
    output = os.path.abspath(args.output)
    if args.smoke and os.path.commonpath([output, DOCS]) == DOCS:
        parser.error(f"--smoke figures are not measurements: give --output outside docs/ "
                     f"(received {args.output})")
    args.output = output
    return args


def set_command(args, script, argv):
    """Keeps the command line on ``args.command`` (the JSON records it)."""
    args.command = command_line(script, argv)
    return args


def protocol_settings(args):
    """The protocol part of a JSON's ``settings``."""
    return {"warmup": args.warmup, "steps": args.steps, "repeats": args.repeats,
            "smoke": bool(args.smoke)}


# === Figures ================================================================================
def choices(parser, flag, text, valid):
    """The comma-separated names of ``text``, each one of ``valid``; else the parser's error."""
    chosen = [c for c in text.split(",") if c]
    unknown = [c for c in chosen if c not in valid]
    if unknown or not chosen:
        parser.error(f"{flag}: unknown or empty {unknown}; valid: {', '.join(valid)}")
    return chosen


def summary(values):
    """``{"repeats": [...], "min", "median", "max"}`` of one figure over the repeats."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("a summary needs at least one repeat")
    return {"repeats": values, "min": min(values), "median": statistics.median(values),
            "max": max(values)}


def ratio(numerator, numerator_name, denominator, denominator_name):
    """``numerator / denominator`` of two summaries' medians, naming both."""
    return {"value": numerator["median"] / denominator["median"],
            "numerator": f"{numerator_name} (median)",
            "denominator": f"{denominator_name} (median)"}


def rate_summary(seconds, images):
    """images/s of each repeat: ``images / seconds`` (its totals)."""
    return summary([images / s for s in seconds])


def check_figures(node, path="$"):
    """Raises ``ValueError`` unless every summary in a JSON tree has positive finite figures
    with ``min <= median <= max`` and every ratio is positive and finite (the smoke test)."""
    if isinstance(node, dict):
        if {"repeats", "min", "median", "max"} <= set(node):
            values = node["repeats"] + [node["min"], node["median"], node["max"]]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                       for v in values):
                raise ValueError(f"{path}: a figure is not a positive finite number: {node}")
            if not node["min"] <= node["median"] <= node["max"]:
                raise ValueError(f"{path}: min <= median <= max fails: {node}")
            if node["min"] != min(node["repeats"]) or node["max"] != max(node["repeats"]):
                raise ValueError(f"{path}: min/max are not the repeats': {node}")
        if {"value", "numerator", "denominator"} <= set(node):
            value = node["value"]
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{path}: a ratio is not a positive finite number: {node}")
        for key, value in node.items():
            check_figures(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            check_figures(value, f"{path}[{index}]")


# === Record =================================================================================
def command_line(script, argv=None):
    """The command of ``script`` run with ``argv`` (default: this process's), as typed from
    the repository root."""
    argv = sys.argv[1:] if argv is None else list(argv)
    script = os.path.relpath(os.path.abspath(script), ROOT)
    env = " ".join(f"{k}={os.environ[k]}" for k in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND")
                   if k in os.environ)
    return (env + " " if env else "") + shlex.join(["python", script, *argv])


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def machine(cpuinfo="/proc/cpuinfo"):
    """The CPU (model, cores, the flags that matter), the OS and the load when measured."""
    model, flags, physical = None, set(), set()
    try:
        with open(cpuinfo) as f:
            core = {}
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and model is None:
                    model = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key in ("physical id", "core id"):
                    core[key] = value
                    if len(core) == 2:
                        physical.add((core["physical id"], core["core id"]))
                        core = {}
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": model or platform.processor() or "unknown",
            "logical_cores": os.cpu_count(), "usable_cores": usable,
            "physical_cores": len(physical) or None,
            "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
            "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": load}


def versions():
    """Installed versions of ``PACKAGES`` and the repository's commit (``+dirty`` with local
    changes), or ``SSAL_KERAS_COMMIT`` where set (a copy of the tree whose git metadata is not
    its own)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        found["ssal_keras_commit"] = (commit + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        found["ssal_keras_commit"] = None
    found["ssal_keras_commit"] = (os.environ.get("SSAL_KERAS_COMMIT")
                                  or found["ssal_keras_commit"])
    return found


def record(command, settings):
    """The fields every JSON (and every model entry of it) starts with."""
    return {"command": command, "date": now(), "machine": machine(),
            "versions": versions(), "settings": settings}


def write_json(path, value):
    """Writes ``value`` as indented strict JSON (no NaN) through a temporary file and one
    rename, so a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    text = json.dumps(value, indent=2, allow_nan=False) + "\n"
    handle, temp = tempfile.mkstemp(prefix=".partial-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def merge_models(path, benchmark, models, *, merge):
    """The JSON's ``models`` after this run: with ``merge``, the entries already in ``path``
    (same ``benchmark``) with this run's replacing those of the same name; else this run's."""
    if not merge or not os.path.exists(path):
        return dict(models)
    with open(path) as f:
        old = json.load(f)
    if old.get("benchmark") != benchmark:
        raise ValueError(f"{path} holds benchmark {old.get('benchmark')!r}, not {benchmark!r}; "
                         "give another --output or --no_merge")
    return {**old.get("models", {}), **models}


# === Subprocess workers ======================================================================
def run_worker(script, specs, *, log=print):
    """Runs ``script --worker=SPECS.json --worker_output=OUT.json`` in a fresh Python (the
    timings of one process never share thread pools, compiled code or logical devices with
    another's); returns the list it wrote."""
    with tempfile.TemporaryDirectory(prefix="ssal_bench_worker_") as folder:
        spec_path, out_path = (os.path.join(folder, n) for n in ("specs.json", "out.json"))
        with open(spec_path, "w") as f:
            json.dump(specs, f)
        command = [sys.executable, script, f"--worker={spec_path}",
                   f"--worker_output={out_path}"]
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError(f"worker failed ({shlex.join(command)}):\n"
                               f"{result.stderr[-4000:]}")
        with open(out_path) as f:
            return json.load(f)


# === FLOPs and models =======================================================================
def forward_flops(model):
    """Forward FLOPs of one image: 2 x multiply-adds of every Conv2D and Dense layer."""
    import keras

    from ssal_keras.modeling import graph

    total = 0
    for layer in graph.all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * height * width * kh * kw * layer.input.shape[-1] * channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def grouping_files(folder, classes, groups):
    """One grouping file per branch in ``folder``: class c in group c mod k (speed does not
    depend on which classes share a group)."""
    paths = []
    for k in groups:
        path = os.path.join(folder, f"grouping_{k}.txt")
        with open(path, "w") as f:
            f.write("".join(f"{c % k}\n" for c in range(classes)))
        paths.append(path)
    return paths


def recipe_config(recipe, groupings=None, **overrides):
    """``RunConfig`` of ``models/RECIPE.flags`` with ``overrides``; ``groupings`` (files)
    replace the recipe's when given."""
    from ssal_keras.training import RunConfig

    if groupings:
        overrides["groupings"] = tuple(groupings)
    return RunConfig.from_flagfile(os.path.join(ROOT, "models", f"{recipe}.flags"),
                                   **{"dataset": "npz:unused", **overrides})


def recipe_model(recipe, shape, classes, groupings=None):
    """The model of ``models/RECIPE.flags`` (random weights, inputs /255 inside), as the
    trainer builds it; ``groupings`` (files) replace the recipe's when given."""
    from ssal_keras import data, grouping
    from ssal_keras.training import run

    config = recipe_config(recipe, groupings)
    dataset = data.Dataset(train=None, eval=None, num_classes=classes, class_names=[],
                           image_shape=shape, num_train=1, num_eval=1)
    loaded = [grouping.load_grouping(path) for path in config.groupings]
    return run.build_model(config.resolve(), dataset, loaded, "scale")


def synthetic_npz(folder, shape, classes, examples, eval_examples=64):
    """An npz of random raw pixels and labels (a step's speed does not depend on them)."""
    import numpy as np

    rng = np.random.default_rng(0)
    path = os.path.join(folder, "data.npz")
    np.savez(path, x_train=rng.integers(0, 256, (examples, *shape), dtype=np.uint8),
             y_train=rng.integers(0, classes, examples),
             x_test=rng.integers(0, 256, (eval_examples, *shape), dtype=np.uint8),
             y_test=rng.integers(0, classes, eval_examples),
             class_names=np.array([f"class_{c}" for c in range(classes)]))
    return path


# === The training step, timed =================================================================
def train_step_specs_devices(specs):
    """Logical CPU devices a worker running ``specs`` needs (the largest asked)."""
    return max([spec.get("devices", 1) for spec in specs] + [1])


def time_matmul(spec):
    """GFLOP/s of ``tf.matmul`` of ``spec["size"]``² matrices per repeat, in float32 and
    bfloat16 (a spec of ``kind`` "matmul": ``size``, ``warmup``, ``steps`` calls, ``repeats``)."""
    import tensorflow as tf

    size, rates = spec["size"], {}
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.uniform((size, size), dtype=tf.float32), dtype)
        f = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
        for _ in range(spec["warmup"]):
            f(a).numpy()
        rates[dtype] = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            for _ in range(spec["steps"]):
                f(a).numpy()
            rates[dtype].append(2 * size ** 3 * spec["steps"]
                                / (time.perf_counter() - start) / 1e9)
    return {"spec": spec, "gflop_per_sec": rates}


def time_training(spec, folder, *, process_devices=1, log=lambda line: None):
    """Times one training configuration in this process; returns its figures.

    ``spec["path"]``: ``"loop"``, the trainer's own step (``Trainer._run_step`` on the
    trainer's input pipeline under its strategy, each step's loss and hit counts kept and read
    back as ``Trainer._run_epoch`` does; no progress lines, evaluation or checkpoints), or
    ``"fit"``, Keras ``model.fit`` on the same model, optimizer, learning-rate schedule, loss
    terms and weights, weight decay (as L2 penalties equivalent to the trainer's, see
    ``fit_weight_decay``) and input pipeline. The recipe's ``epochs`` are kept and the
    synthetic split sized so that warm-up and every repeat stay inside the recipe's schedule.
    ``process_devices``: the logical CPU devices this process was split into (a smoke worker
    runs its one-device configurations on the first of them).

    A spec: ``name``; ``recipe`` (``models/RECIPE.flags``); the synthetic images' ``shape``
    and ``classes``; ``groups`` per branch (grouping files c mod k; None: the recipe's own
    files); ``path``; ``jit`` (XLA); ``precision`` (``--mixed_precision``: ``"float32"`` or
    ``"bfloat16"``); ``devices`` (logical CPU devices, mirrored when > 1); ``batch_size``
    (None: the recipe's); ``warmup``, ``steps`` and ``repeats``.
    """
    import keras
    import tensorflow as tf

    from ssal_keras import grouping as grouping_lib
    from ssal_keras.training import distribute, run

    config = synthetic_recipe_config(spec, folder)
    groupings = (grouping_files(folder, spec["classes"], spec["groups"])
                 if spec["groups"] else None)
    spec = dict(spec, batch_size=config.batch_size)
    config = recipe_config(
        spec["recipe"], groupings, dataset=config.dataset, held_out_examples=0,
        train_examples=None, eval_examples=64, batch_size=spec["batch_size"],
        shuffle=config.shuffle,
        jit_compile="true" if spec["jit"] else "false", mixed_precision=spec["precision"],
        strategy="mirrored" if spec["devices"] > 1 else "default",
        logical_cpu_devices=spec["devices"], log_every_steps=10 ** 9, checkpoint_steps=0)
    keras.backend.clear_session()
    with run._process_settings(config, log):
        if spec["devices"] > 1:
            strategy = distribute.create_strategy("mirrored")
        elif process_devices > 1:
            strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
        else:
            strategy = distribute.create_strategy("default")
        resolved = config.resolve()
        dataset, _, normalization = run.load_data(resolved.data, resolved.backbone, log)
        loaded = [grouping_lib.load_grouping(path) for path in config.groupings]
        model_dir = os.path.join(folder, "run")
        started = time.perf_counter()
        if spec["path"] == "loop":
            loop, model = _trainer(config, strategy, dataset, loaded, normalization, model_dir,
                                   spec["jit"], log)
            figures = _time_loop(loop, spec)
            # XLA as it ran: the trainer falls back from it where XLA cannot compile the
            # step (synchronised BatchNorm on CPU replicas).
            xla = loop._loss_and_gradients != loop._replica_loss_and_gradients
            compute = {"xla": bool(xla), "replicas": strategy.num_replicas_in_sync}
        else:
            model, figures = _time_fit(resolved, dataset, loaded, normalization, spec)
            compute = {"xla": bool(spec["jit"]), "replicas": 1}
        compute["dtype_policy"] = keras.mixed_precision.global_policy().name
    images = spec["batch_size"] * spec["steps"]
    return {"spec": spec, "seconds": figures["seconds"], "images_per_repeat": images,
            "warmup_seconds": figures["warmup_seconds"],
            "wall_seconds": time.perf_counter() - started,
            "forward_flops_per_image": forward_flops(model), "params": model.count_params(),
            "compute": compute}


def synthetic_recipe_config(spec, folder):
    """The recipe's ``RunConfig`` on a synthetic npz in ``folder``: ``spec["train_images"]``
    images where given (with ``spec["shuffle"]``, else the recipe's data order), else just
    enough that warm-up and every repeat stay inside the recipe's schedule; the batch of
    ``spec["batch_size"]`` (None: the recipe's)."""
    base = recipe_config(spec["recipe"])
    batch = spec.get("batch_size") or base.batch_size
    total_steps = spec["warmup"] + spec["steps"] * spec["repeats"]
    examples = spec.get("train_images") or batch * max(1, math.ceil(total_steps / base.epochs))
    if total_steps > base.epochs * (examples // batch):
        raise ValueError(f"{total_steps} steps run past the recipe's {base.epochs} epochs of "
                         f"{examples} images")
    npz = synthetic_npz(folder, tuple(spec["shape"]), spec["classes"], examples)
    return recipe_config(spec["recipe"], dataset=f"npz:{npz}", batch_size=batch,
                         shuffle=spec.get("shuffle") or base.shuffle)


def _trainer(config, strategy, dataset, groupings, normalization, model_dir, jit, log):
    """The trainer as ``ssal_keras.training.run`` builds it (model, optimizer, loop), with XLA
    as asked and no checkpoint within an epoch."""
    from ssal_keras.training import run, trainer

    resolved = dataclasses.replace(config.resolve(), checkpoint_steps=0)
    model, optimizer = run.model_and_optimizer(resolved, strategy, dataset, groupings,
                                               normalization,
                                               sync_batch_norm=config.sync_batch_norm, log=log)
    loop = trainer.Trainer(strategy=strategy, model=model, optimizer=optimizer,
                           dataset=dataset, model_dir=model_dir, run=resolved, jit_compile=jit,
                           log=log)
    return loop, model


def _time_loop(loop, spec):
    """Warm-up, then each repeat's seconds, of the trainer's step on one continuing input."""
    from ssal_keras.training import trainer

    iterator = loop._epoch_iterator(0, 0)
    state = trainer._EpochState(epoch=0, start_step=0, started=time.time())
    done = 0

    def run_steps(count):
        nonlocal done
        for _ in range(count):
            loss, hits = loop._run_step(iterator)
            state.add_step(loss, hits)
        done += count
        loop._check_pending(state, done)  # reads every loss back: waits for the last step

    start = time.perf_counter()
    run_steps(spec["warmup"])
    warmup_seconds = time.perf_counter() - start
    seconds = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run_steps(spec["steps"])
        seconds.append(time.perf_counter() - start)
    loop._close()
    return {"seconds": seconds, "warmup_seconds": warmup_seconds}


def fit_weight_decay(model, rates):
    """The trainer's weight decay on ``model`` for ``model.fit``: an ``L2(rate / 2)``
    regulariser on each trainable variable the trainer decays at ``rate`` (``rates``: one per
    ``model.trainable_variables``, ``DecaySettings.rates(model)``).

    The trainer adds ``rate * w`` to the gradient of the loss before the optimizer;
    ``L2(c)`` adds ``c * sum(w ** 2)`` to the loss Keras differentiates, whose gradient is
    ``2 c w``: with ``c = rate / 2`` the same term, which then goes through the same SGD
    momentum (Nesterov) and learning rate. Keras's optimizer ``weight_decay`` is not this: it
    is decoupled (``w -= lr * wd * w`` after the step, outside the momentum) and applies to
    every variable not excluded. Returns ``{rate: variables}``, counted.
    """
    import keras

    counted = {}
    for variable, rate in zip(model.trainable_variables, rates):
        if rate:
            variable.regularizer = keras.regularizers.L2(rate / 2.0)
            counted[rate] = counted.get(rate, 0) + 1
    return counted


def _time_fit(resolved, dataset, groupings, normalization, spec):
    """``model.fit`` of the same model and settings; warm-up and each repeat's seconds."""
    import keras
    import tensorflow as tf

    from ssal_keras import data
    from ssal_keras.modeling import outputs
    from ssal_keras.modeling.losses import SparseCrossentropy
    from ssal_keras.training import run, trainer

    settings = resolved.data
    model = run.build_model(resolved, dataset, groupings, normalization)
    optimizer = resolved.schedule.optimizer(trainer.steps_per_epoch(
        tf.distribute.get_strategy(), dataset.num_train, settings.batch_size))
    fit_weight_decay(model, resolved.decay.rates(model))
    smoothing = dataclasses.asdict(resolved.loss)
    if outputs.is_ssal(model):  # the loss terms and weights of the recipe (loss_terms)
        model.compile(optimizer=optimizer, metrics=["accuracy"], jit_compile=bool(spec["jit"]),
                      **smoothing)
    else:
        model.compile(optimizer=optimizer, loss=SparseCrossentropy(**smoothing),
                      metrics=["accuracy"], jit_compile=bool(spec["jit"]))
    # The trainer's first epoch's input (Trainer._epoch_iterator on one device).
    batches = data.train_pipeline(dataset, batch_size=settings.batch_size,
                                  augment=settings.augment, seed=settings.seed,
                                  shuffle=settings.shuffle, repeat=True,
                                  **settings.augment_options())
    marks = [spec["warmup"] - 1 + k * spec["steps"] for k in range(spec["repeats"] + 1)]
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch in marks:
                float(logs["loss"])  # the step's result: waits for it
                times.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(batches, epochs=1, steps_per_epoch=marks[-1] + 1, verbose=0,
              callbacks=[Timer()])
    seconds = [b - a for a, b in zip(times, times[1:])]
    return model, {"seconds": seconds, "warmup_seconds": times[0] - start}


def worker_main(spec_path, out_path, time_one):
    """A worker process: ``time_one(spec)`` for each spec in ``spec_path`` (in order); the list
    of results to ``out_path``."""
    with open(spec_path) as f:
        specs = json.load(f)
    write_json(out_path, [time_one(spec) for spec in specs])


def add_worker_flags(parser):
    """The hidden flags of a script calling itself as a worker (``run_worker``)."""
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker_output", default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--process_per_repeat", action="store_true",
                        help="Each repeat of each configuration in a fresh process, the "
                             "configurations interleaved (repeat 1 of each, then 2, ...); "
                             "default: one process per configuration, its repeats back to "
                             "back after one warm-up.")


def measure_specs(script, specs, *, smoke, process_per_repeat, log=print):
    """Times every training spec through worker processes of ``script``; returns
    ``{name: result}`` (``time_training``'s, the seconds of every repeat together).

    Default: one fresh process per spec. ``process_per_repeat``: one per spec and repeat,
    interleaved. ``smoke`` (without ``process_per_repeat``): every spec in one process (the
    code paths, not the speed)."""
    if smoke and not process_per_repeat:
        with stage(f"{len(specs)} configuration(s) in one smoke process", log):
            return {r["spec"]["name"]: r for r in run_worker(script, specs, log=log)}
    results = {}
    split = [s for s in specs if process_per_repeat and s.get("kind") != "matmul"]
    rounds = [(spec, None) for spec in specs if spec not in split]
    rounds += [(spec, r) for r in range(1, max([s["repeats"] for s in split] + [0]) + 1)
               for spec in split if r <= spec["repeats"]]
    for spec, index in rounds:
        one = dict(spec, repeats=1) if index else spec
        label = spec["name"] + (f", repeat {index}" if index else "")
        with stage(label, log):
            (result,) = run_worker(script, [one], log=log)
        if spec.get("kind") == "matmul":
            results[spec["name"]] = result
            continue
        if spec["name"] in results:
            results[spec["name"]]["seconds"] += result["seconds"]
            results[spec["name"]]["warmup_seconds"] = (
                _as_list(results[spec["name"]]["warmup_seconds"])
                + [result["warmup_seconds"]])
        else:
            results[spec["name"]] = dict(result, spec=dict(result["spec"],
                                                           repeats=spec["repeats"]))
        log(f"  {spec['name']}: " + ", ".join(
            f"{result['images_per_repeat'] / s:.1f}" for s in result["seconds"]) + " img/s")
    return results


def _as_list(value):
    return value if isinstance(value, list) else [value]


def training_worker_main(spec_path, out_path):
    """A worker process: times every spec in ``spec_path`` (in order) and writes the list of
    results to ``out_path``. The CPU is split into the most logical devices any spec asks."""
    with open(spec_path) as f:
        specs = json.load(f)
    devices = train_step_specs_devices(specs)
    from ssal_keras.training import distribute

    distribute.split_cpu(devices)  # before any TensorFlow op
    results = []
    for spec in specs:
        if spec.get("kind") == "matmul":
            results.append(time_matmul(spec))
            continue
        with tempfile.TemporaryDirectory(prefix="ssal_bench_") as folder:
            results.append(time_training(spec, folder, process_devices=devices))
    write_json(out_path, results)


@contextlib.contextmanager
def stage(label, log=print):
    """Logs ``label`` and its wall time."""
    start = time.perf_counter()
    log(f"{label} ...")
    yield
    log(f"{label}: {time.perf_counter() - start:.0f} s")
