"""What the authors' data order costs on the quick start: ``--shuffle=full`` against
``--shuffle=buffer:10000``, for the input pipeline alone and for training.

    TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/data_order.py
        [--configurations=pipeline_full,pipeline_buffer,loop_full,loop_buffer]
        [--steps=100] [--warmup=10] [--repeats=5] [--output=FILE.json]

Data: a synthetic npz of the quick start's training split (55,000 random 28x28x1 images: 60,000
less the 5,000 held out), read as the trainer reads Fashion-MNIST (arrays in memory).
``--shuffle=full`` reads it through a new seeded permutation each epoch, one example at a
time (``data.shuffled_positions``); ``buffer:10000`` through ``tf.data``'s shuffle buffer.
Configurations, each in a fresh process:

- ``pipeline_*``: the trainer's input pipeline alone (``data.train_pipeline`` with the recipe's
  batch of 128, shift augmentation, repeat), batches drawn as fast as it gives them.
- ``loop_*``: the trainer's step on the SSAL recipe (``models/fashion_mnist_ssal.flags``) as
  ``auto`` runs it on this CPU (no XLA, float32), fed by that pipeline
  (``common.time_training``).

Protocol (``common``): ``--warmup`` untimed batches or steps, then ``--repeats`` repeats of
``--steps``; 510 steps cross the first epoch's end (429 steps), so a new permutation or buffer
refill is inside the timing. Writes ``benchmark_data_order.json`` into ``docs/``: per
configuration images/s (min / median / max) and the ratios full / buffer of the medians.
Time on 2 idle CPU cores: about 6 minutes.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BENCHMARK = "data_order"
OUTPUT = "benchmark_data_order.json"
RECIPE = "fashion_mnist_ssal"
SHAPE, CLASSES, TRAIN_IMAGES = (28, 28, 1), 10, 55000
#: configuration -> (what is timed, --shuffle)
CONFIGURATIONS = {
    "pipeline_full": ("pipeline", "full"),
    "pipeline_buffer": ("pipeline", "buffer:10000"),
    "loop_full": ("loop", "full"),
    "loop_buffer": ("loop", "buffer:10000"),
}
RATIOS = {"full_over_buffer_pipeline": ("pipeline_full", "pipeline_buffer"),
          "full_over_buffer_loop": ("loop_full", "loop_buffer")}


def time_pipeline(spec, folder):
    """The trainer's input pipeline alone: warm-up and each repeat's seconds."""
    from ssal_keras import data
    from ssal_keras.training import run

    config = common.synthetic_recipe_config(spec, folder)
    settings = config.resolve()
    dataset, _, _ = run.load_data(settings.data, settings.backbone, lambda line: None)
    batches = iter(data.train_pipeline(
        dataset, batch_size=config.batch_size, augment=config.augment, seed=config.seed,
        shuffle=config.shuffle, repeat=True, **settings.data.augment_options()))

    def draw(count):
        start = time.perf_counter()
        for _ in range(count):
            next(batches)
        return time.perf_counter() - start

    warmup_seconds = draw(spec["warmup"])
    return {"spec": spec, "seconds": [draw(spec["steps"]) for _ in range(spec["repeats"])],
            "warmup_seconds": warmup_seconds,
            "images_per_repeat": config.batch_size * spec["steps"]}


def time_configuration(spec):
    """One configuration's figures, on a synthetic split in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="ssal_bench_") as folder:
        timer = time_pipeline if spec["kind"] == "pipeline" else common.time_training
        return timer(spec, folder)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configurations", default=",".join(CONFIGURATIONS),
                        help=f"Comma-separated, of: {', '.join(CONFIGURATIONS)}.")
    common.add_protocol_flags(parser, output=OUTPUT, steps=100, warmup=10, repeats=5)
    common.add_worker_flags(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.configurations = common.choices(parser, "--configurations", args.configurations,
                                         CONFIGURATIONS)
    common.resolve_protocol(parser, args)
    return common.set_command(args, __file__, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        common.worker_main(args.worker, args.worker_output, time_configuration)
        return None
    configurations = {}
    for name in args.configurations:
        kind, shuffle = CONFIGURATIONS[name]
        spec = {"name": name, "kind": kind, "shuffle": shuffle, "recipe": RECIPE,
                "shape": list(SHAPE), "classes": CLASSES, "groups": None,
                "train_images": TRAIN_IMAGES, "path": "loop", "jit": False, "precision": "float32",
                "devices": 1, "batch_size": None, "warmup": args.warmup, "steps": args.steps,
                "repeats": args.repeats}
        with common.stage(name):
            (result,) = common.run_worker(os.path.abspath(__file__), [spec])
        configurations[name] = {
            "kind": kind, "shuffle": shuffle, "images_per_repeat": result["images_per_repeat"],
            "images_per_sec": common.rate_summary(result["seconds"],
                                                  result["images_per_repeat"]),
            "warmup_seconds": result["warmup_seconds"]}
        print(f"  {name}: {configurations[name]['images_per_sec']['median']:.0f} img/s")
    ratios = {ratio: common.ratio(configurations[a]["images_per_sec"], a,
                                  configurations[b]["images_per_sec"], b)
              for ratio, (a, b) in RATIOS.items() if a in configurations and b in configurations}
    settings = {**common.protocol_settings(args), "recipe": f"models/{RECIPE}.flags",
                "train_images": TRAIN_IMAGES, "data": "synthetic npz, random pixels and labels",
                "xla": False, "precision": "float32"}
    document = {"benchmark": BENCHMARK, **common.record(args.command, settings),
                "configurations": configurations, "ratios": ratios}
    common.check_figures(document)
    common.write_json(args.output, document)
    for name, value in ratios.items():
        print(f"{name}: x{value['value']:.2f}")
    return document


if __name__ == "__main__":
    main()
