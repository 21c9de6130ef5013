"""Does bfloat16 keep the quick start's accuracy? The evidence behind ``--mixed_precision=auto``.

    python3 models/precision_parity_fashion_mnist.py [--runs DIR] [--docs DIR]

Protocol (issue 12; written before the first run):
- Runs: the quick-start SSAL recipe (``models/fashion_mnist_ssal.flags``) at seeds 0, 1, 2, once
  in float32 and once in mixed bfloat16 (bfloat16 compute, float32 variables), XLA on in both,
  nothing else changed. Seeds are paired.
- Measure: the joint (+JP) top-1 of each finished model on the recipe's 5,000 held-out
  training images (``analyze errors --alphas=<the trained alpha>``), and, reported beside it but
  not used for the decision, on the test split (``metrics.json``).
- Rule: bfloat16 passes when the mean held-out joint top-1 over the three seeds is within 0.3
  points of float32's. Only then may ``--mixed_precision=auto`` pick bfloat16 on CPUs.

Writes ``DOCS/precision_parity.json``: every run with its command and figures, the paired
differences with their mean and standard deviation, and the verdict. Finished runs are kept:
the script can be stopped and started again. Time on 2 CPU cores: about 50 minutes. Speed is
not recorded here (benchmarks/paper_train_step.py measures it, on an otherwise idle machine).
"""

import argparse
import os
import sys

from fair_test_fashion_mnist import errors, train  # noqa: I001  (models/ is this script's path)

from ssal_keras import runs as run_files
from ssal_keras.analysis import summary

SEEDS = (0, 1, 2)
RECIPE = "models/fashion_mnist_ssal.flags"
ALPHA = 0.1  # the recipe's --alpha: the held-out figure is the deployed output's
# Each precision's flags, as every release since the flag existed spells them.
PRECISIONS = {"float32": ("--nomixed_precision", "--jit_compile=true"),
              "bfloat16": ("--mixed_precision", "--jit_compile=true")}
MAX_MEAN_DROP = 0.003


def measure(runs):
    """Trains (or resumes) every run and returns its record."""
    records = []
    for seed in SEEDS:
        for precision, flags in PRECISIONS.items():
            folder = os.path.join(runs, f"{precision}_seed{seed}")
            command = train(folder, f"--flagfile={RECIPE}", f"--seed={seed}", *flags)
            sweep = errors(folder, f"--alphas={ALPHA}")["alpha_sweep"]
            metrics = run_files.read_json(os.path.join(folder, run_files.METRICS_FILE))
            records.append({"precision": precision, "seed": seed, "command": command,
                            "joint_top1_held_out": sweep["joint_accuracy"][0],
                            "joint_top1_test": metrics["joint_top1"],
                            "base_top1_test": metrics["base_top1"]})
    return records


def verdict(records):
    """Paired bfloat16 - float32 differences per figure, and the rule's verdict."""
    by = {(r["precision"], r["seed"]): r for r in records}
    report = {}
    for figure in ("joint_top1_held_out", "joint_top1_test"):
        report[figure] = {precision: summary.stats([by[precision, s][figure] for s in SEEDS])
                          for precision in PRECISIONS}
        report[figure]["bfloat16_minus_float32"] = summary.stats(
            [by["bfloat16", s][figure] - by["float32", s][figure] for s in SEEDS])
    drop = -report["joint_top1_held_out"]["bfloat16_minus_float32"]["mean"]
    report["passes"] = bool(drop <= MAX_MEAN_DROP)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/precision_parity", help="Folder of the runs.")
    parser.add_argument("--docs", default="docs", help="Folder of the report.")
    args = parser.parse_args(argv)
    records = measure(args.runs)
    report = {"protocol": __doc__.split("Protocol (issue 12; written before the first run):")[1]
              .split("Writes")[0].strip(), "runs": records, **verdict(records)}
    run_files.write_json(os.path.join(args.docs, "precision_parity.json"), report)
    print(f"bfloat16 - float32, held-out joint top-1: "
          f"{report['joint_top1_held_out']['bfloat16_minus_float32']}; passes: "
          f"{report['passes']}")


if __name__ == "__main__":
    sys.exit(main())
