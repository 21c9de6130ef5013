"""Training speed of the paper's models through the project's trainer: XLA and precision.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/paper_train_step.py
        [--models=resnet50_cifar100,se_wrn_16_8_cifar100,fashion_mnist_quick_start]
        [--configurations=ssal_xla_float32,...] [--steps=N] [--warmup=N] [--repeats=3]
        [--batch_size=N] [--process_per_repeat] [--no_merge] [--output=FILE.json]

For each model (``MODELS``: the SSAL recipe of ``models/`` and its baseline recipe, on
synthetic images of the model's input shape, random pixels and labels: a step's speed does
not depend on them; groupings c mod k for the paper's 20/33/50 groups), every configuration
(``CONFIGURATIONS``) times the trainer's own step (``ssal_keras.training``'s ``Trainer``: the
loss-and-gradient function, XLA-compiled when XLA is on, ``apply_gradients``, hit counts;
``common.time_training``) in a fresh process: the SSAL recipe with XLA on and off, in float32
and in mixed bfloat16, and the bare backbone (the baseline recipe) in float32 without XLA, for
the SSAL overhead. Every setting is the recipe's (batch: the recipe's, 64 for the paper's
models and 128 for the quick start, unless ``--batch_size``). Protocol (``common``):
``--warmup`` untimed steps (tracing, XLA compilation), then ``--repeats`` repeats of
``--steps`` steps, images/s of a repeat = its images / its seconds; min / median / max over
the repeats. Each model's run also measures the host's matmul peaks (``tf.matmul`` of
4096x4096, float32 and bfloat16, the same protocol in calls) and sets each configuration's
achieved GFLOP/s (3 x forward FLOPs x images/s: forward, and backward at twice the forward;
FLOPs of convolutions and dense layers, 2 x multiply-adds) against them.

Writes ``benchmark_paper_train_step.json`` into ``docs/``: per model its own command, date, machine,
settings, configurations and ratios (medians of the same run); a later run of some models
replaces those models' entries and keeps the others (``--no_merge``: start afresh), so the
paper's models can be measured in separate sessions. Top-level ``cpu_xla_speedup``
(backbone -> XLA / no XLA images/s of the SSAL recipe, float32, rounded to 2 decimals) is the
figure ``ssal_keras.training.device_policy.CPU_XLA_SPEEDUP`` must equal; ``cpu_bfloat16_speedup``
the bfloat16 / float32 ratio without XLA.

Time on 2 idle CPU cores with the defaults: the quick start about 7 minutes; SE-WRN 16-8's
first configuration (XLA, float32) took 13.5 minutes, so each paper model takes over an hour:
measure one per session with ``--models=NAME`` (the JSON merges them), or only the two
configurations behind ``cpu_xla_speedup``.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BENCHMARK = "paper_train_step"
OUTPUT = "benchmark_paper_train_step.json"
#: model -> its backbone (the registry name device_policy keys on), SSAL and baseline
#: recipes, input shape, classes, groups per branch (None: the recipe's grouping files), and
#: default warm-up and timed steps.
MODELS = {
    "resnet50_cifar100": {
        "backbone": "resnet50_cifar", "ssal": "resnet50_cifar100_ssal",
        "bare": "resnet50_cifar100_baseline", "shape": (32, 32, 3), "classes": 100,
        "groups": (20, 33, 50), "warmup": 3, "steps": 50},
    "se_wrn_16_8_cifar100": {
        "backbone": "se_wrn_16_8", "ssal": "se_wrn_16_8_cifar100_ssal",
        "bare": "se_wrn_16_8_cifar100_baseline", "shape": (32, 32, 3), "classes": 100,
        "groups": (20, 33, 50), "warmup": 3, "steps": 50},
    "fashion_mnist_quick_start": {
        "backbone": "resnet_fashion_mnist", "ssal": "fashion_mnist_ssal",
        "bare": "fashion_mnist_baseline", "shape": (28, 28, 1), "classes": 10,
        "groups": None, "warmup": 10, "steps": 200},
}
#: configuration -> (recipe: "ssal" or "bare", XLA, precision (--mixed_precision))
CONFIGURATIONS = {
    "ssal_xla_float32": ("ssal", True, "off"),
    "ssal_no_xla_float32": ("ssal", False, "off"),
    "ssal_xla_bfloat16": ("ssal", True, "bfloat16"),
    "ssal_no_xla_bfloat16": ("ssal", False, "bfloat16"),
    "bare_no_xla_float32": ("bare", False, "off"),
}
#: ratio name -> (numerator, denominator) configurations: images/s medians.
RATIOS = {
    "xla_over_no_xla_float32": ("ssal_xla_float32", "ssal_no_xla_float32"),
    "xla_over_no_xla_bfloat16": ("ssal_xla_bfloat16", "ssal_no_xla_bfloat16"),
    "bfloat16_over_float32_no_xla": ("ssal_no_xla_bfloat16", "ssal_no_xla_float32"),
    "bfloat16_over_float32_xla": ("ssal_xla_bfloat16", "ssal_xla_float32"),
    # bare over SSAL images/s: SSAL's time per image over the bare backbone's.
    "ssal_time_overhead_no_xla_float32": ("bare_no_xla_float32", "ssal_no_xla_float32"),
}
#: Matmul size of the peaks (and in --smoke).
MATMUL_SIZE, SMOKE_MATMUL_SIZE = 4096, 256


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"Comma-separated, of: {', '.join(MODELS)}.")
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"Comma-separated, of: {', '.join(CONFIGURATIONS)}.")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="Global batch of every model (default: each recipe's).")
    parser.add_argument("--no_merge", action="store_true",
                        help="Write only this run's models (default: keep the other models "
                             "already in --output).")
    common.add_protocol_flags(parser, output=OUTPUT, steps="50; 200 for the quick start",
                              warmup="3; 10 for the quick start", repeats=3)
    common.add_worker_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.models = common.choices(parser, "--models", args.models, MODELS)
    args.configurations = common.choices(parser, "--configurations", args.configurations,
                                   CONFIGURATIONS)
    # Per-model defaults: resolved per model below; check the floor on what was given.
    given = {k: getattr(args, k) for k in ("warmup", "steps")}
    args._protocol_defaults = dict(args._protocol_defaults, steps=common.MIN_STEPS, warmup=1)
    common.resolve_protocol(parser, args)
    args.given = given
    return common.set_command(args, __file__, argv)


def model_protocol(args, name):
    """``(warmup, steps)`` of one model: the flags, else the smoke or the model's defaults."""
    if args.smoke:
        return (args.given["warmup"] or common.SMOKE["warmup"],
                args.given["steps"] or common.SMOKE["steps"])
    return (args.given["warmup"] or MODELS[name]["warmup"],
            args.given["steps"] or MODELS[name]["steps"])


def specs(args, name):
    """The training specs of one model's chosen configurations."""
    model = MODELS[name]
    warmup, steps = model_protocol(args, name)
    out = []
    for configuration in args.configurations:
        kind, jit, precision = CONFIGURATIONS[configuration]
        recipe = model[kind]
        out.append({"name": configuration, "recipe": recipe, "shape": list(model["shape"]),
                    "classes": model["classes"],
                    "groups": list(model["groups"]) if model["groups"] and kind == "ssal"
                    else None,
                    "path": "loop", "jit": jit, "precision": precision, "devices": 1,
                    "batch_size": args.batch_size,  # None: the recipe's (the worker's)
                    "warmup": warmup, "steps": steps, "repeats": args.repeats})
    return out


def matmul_spec(args):
    """The worker spec of the matmul peaks (``common.time_matmul``)."""
    return {"name": "matmul_peaks", "kind": "matmul",
            "size": SMOKE_MATMUL_SIZE if args.smoke else MATMUL_SIZE, "warmup": 2,
            "steps": common.SMOKE["steps"] if args.smoke else common.MIN_STEPS,
            "repeats": args.repeats}


# === One model ==============================================================================
def measure_model(args, name, log=print):
    """One model's entry: its record, configurations, peaks and ratios."""
    model = MODELS[name]
    results = common.measure_specs(os.path.abspath(__file__),
                                   [matmul_spec(args)] + specs(args, name), smoke=args.smoke,
                                   process_per_repeat=args.process_per_repeat, log=log)
    matmul = results.pop("matmul_peaks")
    peaks = {"size": matmul["spec"]["size"], "calls_per_repeat": matmul["spec"]["steps"],
             **{dtype: common.summary(values)
                for dtype, values in matmul["gflop_per_sec"].items()}}
    configurations = {}
    for configuration, result in results.items():
        spec = result["spec"]
        rates = common.rate_summary(result["seconds"], result["images_per_repeat"])
        flops = result["forward_flops_per_image"]
        achieved = common.summary([3 * flops * r / 1e9 for r in rates["repeats"]])
        own = "bfloat16" if spec["precision"] == "bfloat16" else "float32"
        configurations[configuration] = {
            "recipe": f"models/{spec['recipe']}.flags", "xla_requested": spec["jit"],
            "xla_used": result["compute"]["xla"], "precision": spec["precision"],
            "dtype_policy": result["compute"]["dtype_policy"],
            "batch_size": spec["batch_size"], "images_per_repeat": result["images_per_repeat"],
            "seconds_per_repeat": common.summary(result["seconds"]),
            "images_per_sec": rates, "warmup_seconds": result["warmup_seconds"],
            "forward_gflop_per_image": flops / 1e9, "params": result["params"],
            "achieved_gflop_per_sec": achieved,
            "share_of_float32_peak": common.ratio(
                achieved, f"configurations.{configuration}.achieved_gflop_per_sec",
                peaks["float32"], "matmul_peak_gflop_per_sec.float32"),
            "share_of_own_peak": common.ratio(
                achieved, f"configurations.{configuration}.achieved_gflop_per_sec",
                peaks[own], f"matmul_peak_gflop_per_sec.{own}"),
        }
    warmup, steps = model_protocol(args, name)
    settings = {**common.protocol_settings(args), "warmup": warmup, "steps": steps,
                "configurations": args.configurations,
                "batch_size": {c: entry["batch_size"] for c, entry in configurations.items()},
                "data": f"synthetic {model['shape']} images, {model['classes']} classes "
                        "(random pixels and labels)",
                "groups_per_branch": list(model["groups"]) if model["groups"]
                else "the recipe's grouping files",
                "process_per_repeat": args.process_per_repeat}
    return {**common.record(args.command, settings), "backbone": model["backbone"],
            "recipes": {"ssal": f"models/{model['ssal']}.flags",
                        "bare": f"models/{model['bare']}.flags"},
            "matmul_peak_gflop_per_sec": peaks, "configurations": configurations,
            "ratios": model_ratios(configurations)}


def model_ratios(configurations):
    """``RATIOS`` whose two configurations were measured, and the SSAL FLOPs overhead."""
    out = {}
    for name, (top, bottom) in RATIOS.items():
        if top in configurations and bottom in configurations:
            out[name] = common.ratio(
                configurations[top]["images_per_sec"], f"configurations.{top}.images_per_sec",
                configurations[bottom]["images_per_sec"],
                f"configurations.{bottom}.images_per_sec")
    ssal = configurations.get("ssal_no_xla_float32")
    bare = configurations.get("bare_no_xla_float32")
    if ssal and bare:
        out["ssal_flops_overhead"] = {
            "value": ssal["forward_gflop_per_image"] / bare["forward_gflop_per_image"],
            "numerator": "configurations.ssal_no_xla_float32.forward_gflop_per_image",
            "denominator": "configurations.bare_no_xla_float32.forward_gflop_per_image"}
    return out


def top_level(models):
    """The per-backbone figures the code cites, from every model in the file."""
    xla, bf16 = {}, {}
    for entry in models.values():
        ratios = entry["ratios"]
        if "xla_over_no_xla_float32" in ratios:
            xla[entry["backbone"]] = round(ratios["xla_over_no_xla_float32"]["value"], 2)
        if "bfloat16_over_float32_no_xla" in ratios:
            bf16[entry["backbone"]] = round(ratios["bfloat16_over_float32_no_xla"]["value"], 2)
    return {
        "cpu_xla_speedup": xla,
        "cpu_xla_speedup_is": "per backbone: images/s of the SSAL recipe with XLA over "
                              "without, float32, medians of one run "
                              "(models.<model>.ratios.xla_over_no_xla_float32), 2 decimals",
        "cpu_bfloat16_speedup": bf16,
        "cpu_bfloat16_speedup_is": "per backbone: images/s of the SSAL recipe in mixed "
                                   "bfloat16 over float32, both without XLA "
                                   "(models.<model>.ratios.bfloat16_over_float32_no_xla), "
                                   "2 decimals",
    }


def print_report(entry, name):
    print(f"\n{name} ({entry['backbone']})")
    for configuration, c in entry["configurations"].items():
        r = c["images_per_sec"]
        print(f"  {configuration:24s} {r['min']:9.2f} {r['median']:9.2f} {r['max']:9.2f} img/s"
              f"  {c['achieved_gflop_per_sec']['median']:8.1f} GFLOP/s")
    for ratio_name, value in entry["ratios"].items():
        print(f"  {ratio_name}: x{value['value']:.2f}")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        common.training_worker_main(args.worker, args.worker_output)
        return None
    measured = {}
    for name in args.models:
        measured[name] = measure_model(args, name)
        print_report(measured[name], name)
    models = common.merge_models(args.output, BENCHMARK, measured, merge=not args.no_merge)
    document = {"benchmark": BENCHMARK, "command": args.command, "date": common.now(),
                "protocol": common.__doc__.split("\n\n")[1].replace("\n", " "),
                "ratio_convention": "value = numerator median / denominator median, both "
                                    "images/s of the same run: > 1 means the numerator is "
                                    "faster; ssal_time_overhead_* = bare / SSAL images/s",
                **top_level(models), "models": models}
    common.write_json(args.output, document)
    print(f"\ncpu_xla_speedup: {document['cpu_xla_speedup']}\n"
          f"cpu_bfloat16_speedup: {document['cpu_bfloat16_speedup']}\nwritten: {args.output}")
    return document


if __name__ == "__main__":
    main()
