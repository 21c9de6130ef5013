"""Training speed of the paper's models on a GPU, through Keras 3 on JAX: ``model.fit``.

    python benchmarks/paper_train_step_jax.py resolve          # where TensorFlow is installed
    KERAS_BACKEND=jax python benchmarks/paper_train_step_jax.py measure
        [--models=resnet50_cifar100,se_wrn_16_8_cifar100,wrn_28_10_cifar100]
        [--configurations=ssal_float32,ssal_bfloat16,bare_float32]
        [--steps=100] [--warmup=10] [--repeats=3] [--output=FILE.json]

Why JAX: the model code (``ssal_keras.modeling``) is backend-neutral Keras, so a machine with
JAX and a GPU but no TensorFlow trains it with ``model.fit``; the project's own trainer (the
custom loop, ``tf.distribute``) needs TensorFlow and is timed by ``paper_train_step.py``.

``resolve`` (needs TensorFlow: ``RunConfig`` reads the recipes) writes
``benchmarks/recipes_resolved.json``: per model, the settings of its SSAL recipe and of its
baseline recipe that decide a step's work (backbone and its options, branches, heads, head
style, loss weights, alpha, batch, SGD momentum and Nesterov, weight decay rates and classes,
input normalization, epochs). ``tests/test_benchmarks.py`` fails when that file is not what the
recipes resolve to, so ``measure`` (which needs no TensorFlow) trains what the recipes say.

``measure``: for each model, each configuration in a fresh process: the SSAL recipe's model in
float32 and in mixed bfloat16 (Keras's ``mixed_bfloat16`` policy), and the bare backbone of the
baseline recipe in float32, for the SSAL overhead. Each is an ``SSALModel`` (or the backbone)
compiled with the recipe's loss terms, ``SGD`` (its momentum, Nesterov, a constant rate at the
recipe's peak: the schedule's shape costs nothing per step) and its weight decay as the
trainer's gradient term (``common.fit_weight_decay``); Keras on JAX compiles the whole train
step with XLA. ``fit`` reads random images and labels from host arrays (a step's speed does not
depend on them; groupings c mod k), the recipe's batch. Protocol (``common``): ``--warmup``
untimed steps (compilation), then ``--repeats`` repeats of ``--steps`` steps, each repeat timed
between two waits for a step's loss; images/s of a repeat = its images / its seconds; min /
median / max. The JSON also gives, per model, the time of the recipe's training (its epochs of
its training images: the split less the held-out images) at the median rate, evaluation
excluded.

Writes ``benchmark_paper_train_step_jax.json`` into ``docs/``, after each model (a later run of
some models replaces those models' entries and keeps the others). JAX's default matmul
precision is recorded: by default it lets float32 convolutions and matmuls use TF32 on NVIDIA
GPUs from Ampere on, as TensorFlow does.
"""

import argparse
import dataclasses
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BENCHMARK = "paper_train_step_jax"
OUTPUT = "benchmark_paper_train_step_jax.json"
RECIPES = os.path.join(common.ROOT, "benchmarks", "recipes_resolved.json")
#: model -> its SSAL and baseline recipes, input shape, classes, groups per branch, and the
#: images of the dataset's training split (before the recipe's held-out images are taken).
MODELS = {
    "resnet50_cifar100": {"ssal": "resnet50_cifar100_ssal", "bare": "resnet50_cifar100_baseline",
                          "shape": (32, 32, 3), "classes": 100, "groups": (20, 33, 50),
                          "train_split": 50000},
    "se_wrn_16_8_cifar100": {"ssal": "se_wrn_16_8_cifar100_ssal",
                             "bare": "se_wrn_16_8_cifar100_baseline", "shape": (32, 32, 3),
                             "classes": 100, "groups": (20, 33, 50), "train_split": 50000},
    "wrn_28_10_cifar100": {"ssal": "wrn_28_10_cifar100_ssal", "bare": "wrn_28_10_cifar100_baseline",
                           "shape": (32, 32, 3), "classes": 100, "groups": (20, 33, 50),
                           "train_split": 50000},
    "fashion_mnist_quick_start": {"ssal": "fashion_mnist_ssal", "bare": "fashion_mnist_baseline",
                                  "shape": (28, 28, 1), "classes": 10, "groups": (3, 5),
                                  "train_split": 60000},
}
#: configuration -> (recipe: "ssal" or "bare", Keras dtype policy)
CONFIGURATIONS = {
    "ssal_float32": ("ssal", "float32"),
    "ssal_bfloat16": ("ssal", "mixed_bfloat16"),
    "bare_float32": ("bare", "float32"),
}
#: ratio name -> (numerator, denominator) configurations: images/s medians.
RATIOS = {
    "bfloat16_over_float32": ("ssal_bfloat16", "ssal_float32"),
    # bare over SSAL images/s: SSAL's time per image over the bare backbone's.
    "ssal_time_overhead_float32": ("bare_float32", "ssal_float32"),
}
#: A per-channel (mean, std) for recipes that normalise by the training split's statistics
#: (the trainer measures them; the cost of the layer does not depend on the values).
PLACEHOLDER_MEAN_STD = (0.5, 0.25)


# === resolve (TensorFlow side) ===============================================================
def resolve_recipe(recipe, groups, classes):
    """The settings of ``models/RECIPE.flags`` that decide a training step's work."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        files = common.grouping_files(folder, classes, groups) if groups else None
        config = common.recipe_config(recipe, files)
        run = config.resolve()
        settings = {"backbone": run.backbone.name, "backbone_options": run.backbone.options,
                    "normalization": config.normalization, "batch_size": config.batch_size,
                    "learning_rate": config.learning_rate, "momentum": config.momentum,
                    "nesterov": config.nesterov, "epochs": config.epochs,
                    "held_out_examples": config.held_out_examples,
                    "decay": {k: list(v) if isinstance(v, tuple) else v
                              for k, v in dataclasses.asdict(run.decay).items()}}
        if run.branches:
            branches = run.branches
            settings["branches"] = {
                "taps": list(branches.taps),
                "heads": [list(h) if isinstance(h, tuple) else h for h in branches.heads],
                "loss_weights": list(branches.loss_weights), "alpha": branches.alpha,
                "objective": branches.objective,
                "head_style": config.head_style or (config.paper.head_style if config.paper
                                                    else None)}
    return settings


def resolve_all():
    """Every model's two recipes, resolved."""
    return {name: {kind: resolve_recipe(model[kind], model["groups"] if kind == "ssal"
                                        else None, model["classes"])
                   for kind in ("ssal", "bare")}
            for name, model in MODELS.items()}


def resolve(path=RECIPES):
    """Writes ``path``: ``resolve_all()``."""
    common.write_json(path, {"written_by": "python benchmarks/paper_train_step_jax.py resolve",
                             "models": resolve_all()})


# === measure (JAX side) ======================================================================
def build(model, settings, policy):
    """The recipe's network under the dtype ``policy``, compiled for ``fit``."""
    import keras

    import ssal_keras
    from ssal_keras.modeling import backbones, heads, weight_decay
    from ssal_keras.modeling.losses import SparseCrossentropy

    keras.config.set_dtype_policy(policy)
    normalization = {"scale": "scale", "none": None}.get(
        settings["normalization"], [[v] * model["shape"][-1] for v in PLACEHOLDER_MEAN_STD])
    network = backbones.build(settings["backbone"], num_classes=model["classes"],
                              input_shape=tuple(model["shape"]), normalization=normalization,
                              **settings["backbone_options"])
    branches = settings.get("branches")
    if branches:
        groupings = [[c % k for c in range(model["classes"])] for k in model["groups"]]
        style = heads.resolve_style(branches["head_style"] or heads.DEFAULT_HEAD_STYLE)
        network = ssal_keras.SSALModel(
            network, [ssal_keras.Branch(tap=t, grouping=g, head=h, loss_weight=w,
                                        head_style=style)
                      for t, g, h, w in zip(branches["taps"], groupings, branches["heads"],
                                            branches["loss_weights"])],
            alpha=branches["alpha"], objective=branches["objective"])
    optimizer = keras.optimizers.SGD(settings["learning_rate"], momentum=settings["momentum"],
                                     nesterov=settings["nesterov"])
    common.fit_weight_decay(network, weight_decay.decay_rates(network, **settings["decay"]))
    loss = None if branches else SparseCrossentropy()
    network.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=True)
    return network


def time_fit(spec):
    """``fit`` of one configuration; warm-up and each repeat's seconds (a worker process)."""
    import time

    import jax
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        raise SystemExit(f"this benchmark runs on Keras's JAX backend; KERAS_BACKEND is "
                         f"{keras.backend.backend()!r}: set KERAS_BACKEND=jax")
    model = MODELS[spec["model"]]
    settings = spec["settings"]
    network = build(model, settings, spec["policy"])
    batch = settings["batch_size"]
    marks = [spec["warmup"] - 1 + k * spec["steps"] for k in range(spec["repeats"] + 1)]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, ((marks[-1] + 1) * batch, *model["shape"])).astype("float32")
    labels = rng.integers(0, model["classes"], len(images))
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch in marks:
                float(logs["loss"])  # waits for the step's result
                times.append(time.perf_counter())

    start = time.perf_counter()
    network.fit(images, labels, batch_size=batch, epochs=1, verbose=0, callbacks=[Timer()])
    device = jax.devices()[0]
    return {"spec": {k: v for k, v in spec.items() if k != "settings"},
            "seconds": [b - a for a, b in zip(times, times[1:])],
            "warmup_seconds": times[0] - start, "images_per_repeat": spec["steps"] * batch,
            "parameters": network.count_params(), "forward_flops": common.forward_flops(network),
            "device": {"platform": device.platform, "kind": device.device_kind,
                       "count": jax.device_count()},
            "jax": jax.__version__,
            "default_matmul_precision": jax.config.jax_default_matmul_precision}


def model_entry(args, name, recipes):
    """Times every chosen configuration of one model in its own process; its JSON entry."""
    model = MODELS[name]
    results = {}
    for configuration in args.configurations:
        kind, policy = CONFIGURATIONS[configuration]
        spec = {"name": configuration, "model": name, "recipe": model[kind], "policy": policy,
                "settings": recipes[name][kind], "warmup": args.warmup, "steps": args.steps,
                "repeats": args.repeats}
        with common.stage(f"{name} {configuration}"):
            (results[configuration],) = common.run_worker(__file__, [spec])
    first = next(iter(results.values()))
    ssal = recipes[name]["ssal"]
    images = model["train_split"] - ssal["held_out_examples"]
    configurations = {}
    for configuration, result in results.items():
        rate = common.rate_summary(result["seconds"], result["images_per_repeat"])
        configurations[configuration] = {
            "recipe": result["spec"]["recipe"], "dtype_policy": result["spec"]["policy"],
            "parameters": result["parameters"], "forward_flops": result["forward_flops"],
            "images_per_second": rate,
            "step_ms_median": 1000 * statistics.median(result["seconds"]) / args.steps,
            "warmup_seconds": result["warmup_seconds"],
            "recipe_training_hours": ssal["epochs"] * images / rate["median"] / 3600}
    entry = common.record(args.command, dict(common.protocol_settings(args),
                                             batch_size=ssal["batch_size"],
                                             epochs=ssal["epochs"], training_images=images))
    entry.update(device=first["device"], jax=first["jax"],
                 default_matmul_precision=first["default_matmul_precision"],
                 configurations=configurations)
    return derive(entry)


def derive(entry):
    """Adds the figures computed from a model entry's measurements: each configuration's
    achieved TFLOP/s (3 x forward FLOPs x images/s, median: forward, and backward at twice
    the forward), the ``RATIOS`` of images/s medians, and SSAL's forward FLOPs over the bare
    backbone's."""
    configurations = entry["configurations"]
    for figures in configurations.values():
        figures["achieved_tflop_per_sec"] = (3 * figures["forward_flops"]
                                             * figures["images_per_second"]["median"] / 1e12)
    entry["ratios"] = {
        ratio: common.ratio(configurations[a]["images_per_second"], a,
                            configurations[b]["images_per_second"], b)
        for ratio, (a, b) in RATIOS.items() if a in configurations and b in configurations}
    if {"ssal_float32", "bare_float32"} <= set(configurations):
        entry["ratios"]["ssal_flops_overhead"] = {
            "value": (configurations["ssal_float32"]["forward_flops"]
                      / configurations["bare_float32"]["forward_flops"]),
            "numerator": "ssal_float32 forward FLOPs", "denominator": "bare_float32 forward FLOPs"}
    return entry


def measure(args):
    """Every chosen model, written to the JSON after each."""
    with open(RECIPES) as f:
        recipes = json.load(f)["models"]
    measured = {}
    for name in args.models:
        measured[name] = model_entry(args, name, recipes)
        common.check_figures(measured[name])
        models = common.merge_models(args.output, BENCHMARK, measured, merge=not args.no_merge)
        common.write_json(args.output, {"benchmark": BENCHMARK, "command": args.command,
                                        "models": models})
        print(f"{name}: " + ", ".join(
            f"{c} {v['images_per_second']['median']:.0f} img/s"
            for c, v in measured[name]["configurations"].items()), flush=True)
    return measured


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", choices=("resolve", "measure"),
                        help="resolve: write benchmarks/recipes_resolved.json (TensorFlow); "
                             "measure: time the models (JAX).")
    parser.add_argument("--models", default=",".join(m for m in MODELS
                                                     if m != "fashion_mnist_quick_start"),
                        help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"Comma-separated, of: {', '.join(CONFIGURATIONS)}.")
    parser.add_argument("--no_merge", action="store_true",
                        help="Write only this run's models (default: keep the others).")
    common.add_protocol_flags(parser, output=OUTPUT, steps=100, warmup=10, repeats=3)
    common.add_worker_flags(parser)
    args = parser.parse_args(argv)
    if args.worker or args.action == "resolve":
        return args
    if args.action is None:
        parser.error("name an action: resolve or measure")
    args.models = common.choices(parser, "--models", args.models, MODELS)
    args.configurations = common.choices(parser, "--configurations", args.configurations,
                                         CONFIGURATIONS)
    common.resolve_protocol(parser, args)
    return common.set_command(args, __file__, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        common.worker_main(args.worker, args.worker_output, time_fit)
    elif args.action == "resolve":
        resolve()
        print(f"wrote {os.path.relpath(RECIPES, common.ROOT)}")
    else:
        if os.environ.setdefault("KERAS_BACKEND", "jax") != "jax":
            raise SystemExit(f"this benchmark runs on Keras's JAX backend; KERAS_BACKEND is "
                             f"{os.environ['KERAS_BACKEND']!r}: set KERAS_BACKEND=jax")
        measure(args)


if __name__ == "__main__":
    main()
