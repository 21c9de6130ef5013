"""Does bfloat16 keep the quick start's accuracy where ``--mixed_precision=auto`` uses it?

    python3 models/precision_parity_fashion_mnist.py [--runs DIR] [--docs DIR]

Protocol (issue 20; written before the first run):
- Runs: the quick-start SSAL recipe (``models/fashion_mnist_ssal.flags``, its own data order:
  a full shuffle every epoch) at seeds 0, 1, 2, once in float32 (``--mixed_precision=float32``)
  and once in mixed bfloat16 (``--mixed_precision=bfloat16``: bfloat16 compute, float32
  variables), both with ``--jit_compile=auto``, nothing else changed. ``auto`` is what a user
  gets: on this CPU it runs the quick start without XLA. Every run's ``metrics.json`` records
  the XLA setting it resolved to; the report refuses pairs that differ in it.
- Measure: the joint (+JP) top-1 of each finished model on the recipe's 5,000 held-out
  training images (``analyze errors --alphas=<the trained alpha>``), and, reported beside it but
  not used for the decision, on the test split (``metrics.json``).
- Rule: d_s = bfloat16 - float32 per seed, in points of held-out joint top-1; SE = sample
  standard deviation of d over sqrt(n). bfloat16 passes when mean(d) - 2 SE >= -0.3 points.
  If it fails at three seeds while mean(d) >= -0.3, seeds 3 and 4 are added and the rule is
  applied once more to all five; that decision is final. Only when it passes may
  ``--mixed_precision=auto`` pick bfloat16 on CPUs (``device_policy.CPU_BFLOAT16_PARITY`` is
  tested equal to this report).

Writes ``DOCS/precision_parity.json``: every run with its command, resolved XLA setting and
figures, the paired differences with their mean and standard error, the verdict, and whether
it is final (after the first stage, while extra seeds are due, it is not). Finished
runs are kept: the script can be stopped and started again. Time on 2 CPU cores: about 45
minutes (75 with the extra seeds). Speed is not recorded here
(benchmarks/paper_train_step.py measures it, on an otherwise idle machine).
"""

import argparse
import os
import sys

from fair_test_fashion_mnist import errors, train  # noqa: I001  (models/ is this script's path)

from ssal_keras import runs as run_files
from ssal_keras.analysis import summary

SEEDS = (0, 1, 2)
EXTRA_SEEDS = (3, 4)
RECIPE = "models/fashion_mnist_ssal.flags"
ALPHA = 0.1  # the recipe's --alpha: the held-out figure is the deployed output's
PRECISIONS = {"float32": ("--mixed_precision=float32", "--jit_compile=auto"),
              "bfloat16": ("--mixed_precision=bfloat16", "--jit_compile=auto")}
MARGIN = 0.003  # 0.3 points of top-1
Z = 2.0


def measure(runs, seeds):
    """Trains (or resumes) every run of ``seeds`` and returns their records."""
    records = []
    for seed in seeds:
        for precision, flags in PRECISIONS.items():
            folder = os.path.join(runs, f"{precision}_seed{seed}")
            command = train(folder, f"--flagfile={RECIPE}", f"--seed={seed}", *flags)
            sweep = errors(folder, f"--alphas={ALPHA}")["alpha_sweep"]
            metrics = run_files.read_json(os.path.join(folder, run_files.METRICS_FILE))
            records.append({"precision": precision, "seed": seed, "command": command,
                            "compute": metrics["compute"],
                            "joint_top1_held_out": sweep["joint_accuracy"][0],
                            "joint_top1_test": metrics["joint_top1"],
                            "base_top1_test": metrics["base_top1"]})
    return records


def verdict(records):
    """Per figure, each precision's spread and the paired bfloat16 - float32 differences;
    the rule's verdict on the held-out figure."""
    by = {(r["precision"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    for seed in seeds:
        if by["float32", seed]["compute"]["xla"] != by["bfloat16", seed]["compute"]["xla"]:
            raise SystemExit(f"seed {seed}: the two runs resolved XLA differently; the pair "
                             "does not compare precisions alone.")
    report = {"seeds": seeds, "xla": by["float32", seeds[0]]["compute"]["xla"]}
    for figure in ("joint_top1_held_out", "joint_top1_test"):
        report[figure] = {precision: summary.stats([by[precision, s][figure] for s in seeds])
                          for precision in PRECISIONS}
        report[figure]["bfloat16_minus_float32"] = summary.paired_comparison(
            [by["bfloat16", s][figure] for s in seeds],
            [by["float32", s][figure] for s in seeds], z=Z)
    paired = report["joint_top1_held_out"]["bfloat16_minus_float32"]
    report["lower_bound"] = paired["mean"] - Z * paired["se"]
    report["passes"] = bool(report["lower_bound"] >= -MARGIN)
    return report


def write_report(docs, records, *, final):
    """Writes ``DOCS/precision_parity.json`` from the runs so far; ``final``: the rule's
    decision is taken (else the extra seeds are still to come, and ``auto`` may not use it)."""
    protocol = __doc__.split("Protocol (issue 20; written before the first run):")[1]
    report = {"protocol": protocol.split("Writes")[0].strip(),
              "command": "python3 models/precision_parity_fashion_mnist.py", "final": final,
              "runs": records, **verdict(records)}
    run_files.write_json(os.path.join(docs, "precision_parity.json"), report)
    paired = report["joint_top1_held_out"]["bfloat16_minus_float32"]
    print(f"bfloat16 - float32, held-out joint top-1: mean {paired['mean']:+.4f}, "
          f"SE {paired['se']:.4f} (n {paired['n']}); mean - 2 SE {report['lower_bound']:+.4f}; "
          f"passes: {report['passes']}; final: {final}")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/precision_parity", help="Folder of the runs.")
    parser.add_argument("--docs", default="docs", help="Folder of the report.")
    parser.add_argument("--report_only", action="store_true",
                        help="Report the finished first-stage runs without training the extra "
                             "seeds (the report then says final: false where they are due).")
    args = parser.parse_args(argv)
    records = measure(args.runs, SEEDS)
    first = verdict(records)
    extra_due = (not first["passes"]
                 and first["joint_top1_held_out"]["bfloat16_minus_float32"]["mean"] >= -MARGIN)
    if extra_due:
        write_report(args.docs, records, final=False)
        if args.report_only:
            return
        records += measure(args.runs, EXTRA_SEEDS)
    write_report(args.docs, records, final=True)


if __name__ == "__main__":
    sys.exit(main())
