"""Training throughput of the quick start: the custom loop against ``model.fit``, XLA on and
off, bare against SSAL, one against two logical CPU devices.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/train_throughput.py
        [--models=bare,ssal] [--configurations=loop_xla,...] [--steps=100] [--repeats=5]
        [--warmup=10] [--batch_size=N] [--process_per_repeat] [--output=FILE.json]

Models: the quick-start recipes, ``models/fashion_mnist_baseline.flags`` ("bare") and
``models/fashion_mnist_ssal.flags`` ("ssal": its groupings, heads, loss weights and alpha),
with every setting of the recipe (batch 128, SGD with Nesterov momentum 0.9, the slanted
triangular schedule, weight decay 5e-4 on the kernels of backbone and heads), on synthetic
28x28x1 images (random pixels and labels: a step's speed does not depend on them) through the
trainer's input pipeline (``augment=shift``).

Configurations (``CONFIGURATIONS``), each in a fresh process:

- ``loop_*``: the custom loop, ``ssal_keras.training``'s ``Trainer`` step (its XLA-compiled
  loss-and-gradient function when XLA is on, ``apply_gradients`` under the strategy, its hit
  counts), timed step by step on one continuing input; no progress lines, evaluation or
  checkpoints.
- ``fit_*``: Keras ``model.fit`` on the same model (an ``SSALModel`` compiled with its own
  loss terms: cross-entropy on ``base`` and each ``aux_b`` at the recipe's loss weights;
  accuracy of every output, like the loop's hit counts), the same optimizer built by the
  trainer's ``build_optimizer`` (the same schedule), the same input pipeline, and the trainer's
  weight decay as L2 penalties: ``L2(rate / 2)`` on exactly the variables the trainer decays,
  whose gradient ``rate * w`` is the term the trainer adds (``common.fit_weight_decay``; Keras's
  optimizer ``weight_decay`` is decoupled, so not the same). ``jit_compile`` as named: Keras
  compiles its whole train step (optimizer included) with XLA, the loop only its
  loss-and-gradient function.
- ``loop_xla_2_devices``: the loop under ``MirroredStrategy`` over 2 logical CPU devices
  (synchronised BatchNorm keeps the step out of XLA on CPU replicas: ``xla_used`` says what
  ran).

Each configuration: ``--warmup`` untimed steps (tracing, compilation), then ``--repeats``
repeats of ``--steps`` steps; images/s of a repeat = its images / its seconds. Writes
``benchmark_train_throughput.json`` into ``docs/`` (``common`` documents the protocol). Time
on 2 idle CPU cores: about 15 minutes with the defaults (the two-device configurations
take a third of it).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BENCHMARK = "train_throughput"
OUTPUT = "benchmark_train_throughput.json"
#: model -> recipe
MODELS = {"bare": "fashion_mnist_baseline", "ssal": "fashion_mnist_ssal"}
SHAPE, CLASSES = (28, 28, 1), 10
#: configuration -> (path, XLA, logical CPU devices)
CONFIGURATIONS = {
    "loop_xla": ("loop", True, 1),
    "loop_no_xla": ("loop", False, 1),
    "fit_xla": ("fit", True, 1),
    "fit_no_xla": ("fit", False, 1),
    "loop_xla_2_devices": ("loop", True, 2),
}
#: ratio name -> (numerator configuration, denominator configuration), per model
RATIOS = {
    "loop_over_fit_xla": ("loop_xla", "fit_xla"),
    "loop_over_fit_no_xla": ("loop_no_xla", "fit_no_xla"),
    "xla_over_no_xla_loop": ("loop_xla", "loop_no_xla"),
    "xla_over_no_xla_fit": ("fit_xla", "fit_no_xla"),
    "two_devices_over_one_loop_xla": ("loop_xla_2_devices", "loop_xla"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"Comma-separated, of: {', '.join(CONFIGURATIONS)} (each for "
                             "every model of --models), or one model's, e.g. ssal_loop_xla.")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="Global batch (default: the recipes', 128).")
    common.add_protocol_flags(parser, output=OUTPUT, steps=100, warmup=10, repeats=5)
    common.add_worker_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.models = common.choices(parser, "--models", args.models, MODELS)
    # "loop_xla": that configuration of every chosen model; "ssal_loop_xla": of one model.
    valid = {**{c: c for c in CONFIGURATIONS},
             **{f"{m}_{c}": c for m in MODELS for c in CONFIGURATIONS}}
    args.configurations = common.choices(parser, "--configurations", args.configurations, valid)
    common.resolve_protocol(parser, args)
    return common.set_command(args, __file__, argv)


def specs(args):
    """The training specs of the chosen models and configurations."""
    chosen = [f"{m}_{c}" for m in args.models for c in CONFIGURATIONS
              if c in args.configurations or f"{m}_{c}" in args.configurations]
    out = []
    for model in args.models:
        for configuration in CONFIGURATIONS:
            if f"{model}_{configuration}" not in chosen:
                continue
            path, jit, devices = CONFIGURATIONS[configuration]
            out.append({"name": f"{model}_{configuration}", "recipe": MODELS[model],
                        "shape": list(SHAPE), "classes": CLASSES, "groups": None,
                        "path": path, "jit": jit, "precision": "float32", "devices": devices,
                        "batch_size": args.batch_size,  # None: the recipe's
                        "warmup": args.warmup, "steps": args.steps,
                        "repeats": args.repeats})
    return out


def configuration_entry(result):
    """One configuration's record: what ran and its figures."""
    spec = result["spec"]
    rates = common.rate_summary(result["seconds"], result["images_per_repeat"])
    return {
        "recipe": f"models/{spec['recipe']}.flags", "path": spec["path"],
        "xla_requested": spec["jit"], "xla_used": result["compute"]["xla"],
        "logical_devices": spec["devices"], "replicas": result["compute"]["replicas"],
        "dtype_policy": result["compute"]["dtype_policy"], "batch_size": spec["batch_size"],
        "images_per_repeat": result["images_per_repeat"],
        "seconds_per_repeat": common.summary(result["seconds"]),
        "images_per_sec": rates,
        "warmup_seconds": result["warmup_seconds"],
        "forward_flops_per_image": result["forward_flops_per_image"],
        "params": result["params"],
    }


def ratios(configurations):
    """Every ratio of ``RATIOS`` (and bare against SSAL) whose two sides were measured."""
    out = {}
    for model in MODELS:
        for name, (top, bottom) in RATIOS.items():
            a, b = configurations.get(f"{model}_{top}"), configurations.get(f"{model}_{bottom}")
            if a and b:
                out[f"{model}_{name}"] = common.ratio(
                    a["images_per_sec"], f"configurations.{model}_{top}.images_per_sec",
                    b["images_per_sec"], f"configurations.{model}_{bottom}.images_per_sec")
    for configuration in CONFIGURATIONS:
        bare, ssal = (configurations.get(f"{m}_{configuration}") for m in ("bare", "ssal"))
        if bare and ssal:
            # Time per image of SSAL over bare: how much longer an SSAL step takes.
            out[f"ssal_time_overhead_{configuration}"] = common.ratio(
                bare["images_per_sec"], f"configurations.bare_{configuration}.images_per_sec",
                ssal["images_per_sec"], f"configurations.ssal_{configuration}.images_per_sec")
            out["ssal_flops_overhead"] = {
                "value": ssal["forward_flops_per_image"] / bare["forward_flops_per_image"],
                "numerator": "SSAL forward FLOPs per image (conv and dense layers)",
                "denominator": "bare forward FLOPs per image"}
    return out


def print_report(document):
    print(f"\n{'configuration':32s} {'img/s (min / median / max)':>32s}")
    for name, entry in document["configurations"].items():
        rate = entry["images_per_sec"]
        print(f"{name:32s} {rate['min']:10.1f} {rate['median']:10.1f} {rate['max']:10.1f}")
    for name, value in document["ratios"].items():
        print(f"{name}: x{value['value']:.2f}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:  # one process of measure_specs
        common.training_worker_main(args.worker, args.worker_output)
        return None
    results = common.measure_specs(os.path.abspath(__file__), specs(args), smoke=args.smoke,
                                   process_per_repeat=args.process_per_repeat)
    configurations = {name: configuration_entry(r) for name, r in results.items()}
    settings = {**common.protocol_settings(args), "models": args.models,
                "configurations": args.configurations,
                "batch_size": {m: r["batch_size"] for m, r in sorted(
                    {c["recipe"]: c for c in configurations.values()}.items())},
                "data": f"synthetic {SHAPE} images, {CLASSES} classes (random pixels and labels)",
                "process_per_repeat": args.process_per_repeat,
                "repeat_unit": "one repeat = --steps training steps, timed as a whole"}
    document = {"benchmark": BENCHMARK, **common.record(args.command, settings),
                "protocol": common.__doc__.split("\n\n")[1].replace("\n", " "),
                "ratio_convention": "value = numerator median / denominator median, both "
                                    "images/s: > 1 means the numerator is faster; "
                                    "ssal_time_overhead_* = bare / SSAL images/s (SSAL's "
                                    "time per image over bare's)",
                "configurations": configurations, "ratios": ratios(configurations)}
    common.write_json(args.output, document)
    print_report(document)
    print(f"\nwritten: {args.output}")
    return document


if __name__ == "__main__":
    main()
