"""Times `balanced_grouping` (supplement section A / docs/method.md, section 2) on random distances.

The ImageNet case of the paper: 1000 labels into 500 and 200 groups. The authors' loop
version takes about 160 s for 1000 labels in 500 groups; this one takes a few hundredths of a
second. Command (from the repository root):

    python benchmarks/grouping_speed.py [--num_labels 1000] [--num_groups 500 200]
        [--steps 50] [--warmup 2] [--repeats 3] [--output FILE.json]

Each case (one group count k) runs ``--warmup`` untimed calls, then ``--repeats`` repeats of
``--steps`` timed calls on the same seeded symmetric random distance matrix; a repeat's figure
is its seconds / calls (the protocol of ``common``). Writes
``benchmark_grouping_speed.json`` into ``docs/``: per case the seconds per call of every repeat with
their min / median / max, and the group sizes. Time: under a minute on 2 CPU cores.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from ssal_keras.grouping import balanced_grouping, group_sizes  # noqa: E402

BENCHMARK = "grouping_speed"
OUTPUT = "benchmark_grouping_speed.json"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_labels", type=int, default=1000, help="Number of labels C.")
    parser.add_argument(
        "--num_groups", type=int, nargs="+", default=[500, 200], help="Group counts k to time."
    )
    parser.add_argument("--size_margin", type=float, default=1.1, help="As in the paper.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random matrix.")
    common.add_protocol_flags(parser, output=OUTPUT, steps=50, warmup=2, repeats=3,
                              what="calls")
    args = parser.parse_args(argv)
    bad = [k for k in args.num_groups if not 1 <= k <= args.num_labels]
    if bad:
        parser.error(f"--num_groups {bad}: each must be in 1..--num_labels")
    common.resolve_protocol(parser, args)
    return common.set_command(args, __file__, argv)


def time_case(distance, k, args):
    """Seconds per call of each repeat, and the grouping's sizes."""
    call = lambda: balanced_grouping(distance, k, size_margin=args.size_margin)  # noqa: E731
    for _ in range(args.warmup):
        grouping = call()
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            grouping = call()
        seconds.append((time.perf_counter() - start) / args.steps)
    sizes = group_sizes(grouping)
    return seconds, (int(sizes.min()), int(sizes.max()))


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    distance = rng.uniform(size=(args.num_labels, args.num_labels))
    distance = (distance + distance.T) / 2
    cases = {}
    for k in args.num_groups:
        seconds, (low, high) = time_case(distance, k, args)
        cases[f"{args.num_labels}_labels_{k}_groups"] = {
            "num_labels": args.num_labels, "num_groups": k,
            "seconds_per_call": common.summary(seconds),
            "group_sizes": {"min": low, "max": high}}
        s = cases[f"{args.num_labels}_labels_{k}_groups"]["seconds_per_call"]
        print(f"{args.num_labels} labels, {k} groups: {s['median']:.4f} s per call (median of "
              f"{args.repeats} repeats of {args.steps} calls; min {s['min']:.4f}, max "
              f"{s['max']:.4f}; sizes {low}..{high})")
    settings = {**common.protocol_settings(args), "num_labels": args.num_labels,
                "num_groups": args.num_groups, "size_margin": args.size_margin,
                "seed": args.seed,
                "distance": "symmetric, uniform in [0, 1) (seeded), the same for every call",
                "repeat_unit": "one repeat = --steps calls, timed as a whole"}
    document = {"benchmark": BENCHMARK, **common.record(args.command, settings), "cases": cases}
    common.write_json(args.output, document)
    print(f"written: {args.output}")
    return document


if __name__ == "__main__":
    main()
