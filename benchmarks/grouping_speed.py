"""Times `balanced_grouping` (supplement section A / SPEC section 2) on random distances.

The ImageNet case of the paper: 1000 labels into 500 and 200 groups. The authors' loop
version takes about 160 s for 1000 labels in 500 groups; this one takes a few hundredths of a
second. Command (from the repository root) and what it printed on a 2-core CPU container
(shared with other jobs):

    python benchmarks/grouping_speed.py --num_labels 1000 --num_groups 500 200 --repeats 3

    1000 labels, 500 groups: median 0.042 s over 3 runs (sizes 1..3)
    1000 labels, 200 groups: median 0.046 s over 3 runs (sizes 3..6)
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    from ssal_keras.grouping import balanced_grouping, group_sizes
except ImportError:  # Run from a checkout without installing the package.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from ssal_keras.grouping import balanced_grouping, group_sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_labels", type=int, default=1000, help="Number of labels C.")
    parser.add_argument(
        "--num_groups", type=int, nargs="+", default=[500, 200], help="Group counts k to time."
    )
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per k (median).")
    parser.add_argument("--size_margin", type=float, default=1.1, help="As in the paper.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random matrix.")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    distance = rng.uniform(size=(args.num_labels, args.num_labels))
    distance = (distance + distance.T) / 2
    for k in args.num_groups:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            grouping = balanced_grouping(distance, k, size_margin=args.size_margin)
            times.append(time.perf_counter() - start)
        sizes = group_sizes(grouping)
        print(
            f"{args.num_labels} labels, {k} groups: median {np.median(times):.3f} s over "
            f"{args.repeats} runs (sizes {sizes.min()}..{sizes.max()})"
        )


if __name__ == "__main__":
    main()
