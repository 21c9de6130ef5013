"""The fair test of BUILD_NOTES.md ("Fair test on Fashion-MNIST"): its phases and its report.

    python3 models/fair_test_fashion_mnist.py groupings|select|test|report|all [--runs DIR]

- ``groupings`` (phase 0): trains the baseline of seed 0 and makes the join- and split-similar
  groupings of 3 and 5 groups from its confusion matrix on the 5,000 held-out training images
  (``models/groupings/``), and the identity grouping of the control.
- ``select`` (phase 1): trains the candidate heads at the selection seed (100, never a test
  seed) in order of cost, runs ``analyze errors`` on each (held-out images), and takes the
  first whose every branch beats the group accuracy its base implies there; the alpha is the
  best of its held-out sweep. Writes ``DIR/selection.json``; the SSAL recipes must carry the
  choice (``models/fashion_mnist_ssal.flags``: its heads and ``--alpha``), and ``test``
  refuses to run otherwise.
- ``test`` (phase 2): baseline, SSAL, identity control and split similar at seeds 0, 1, 2
  (seed by seed), each a recipe of ``models/`` with ``--seed``, then ``analyze errors``.
- ``report``: ``docs/fair_test.json`` (every run, its command, the paired comparisons and their
  verdicts by the protocol's rule), ``docs/fair_test.png``, the tables for BUILD_NOTES.md, and
  ``docs/quick_start_reference.json`` (the baseline's mean, which the quick start prints beside
  its own figures: ``--reference``).

Completed runs are kept: the trainer resumes a run folder and stops at once when it is done,
so the script can be stopped and started again. Time on 2 CPU cores: about 2 hours in all.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys

import numpy as np

from ssal_keras import runs as run_files
from ssal_keras.analysis import plots, summary
from ssal_keras.training import RunConfig

SEEDS = (0, 1, 2)
SELECTION_SEED = 100
CONFIGS = ("baseline", "ssal", "identity", "split_similar")
RECIPES = {config: f"models/fashion_mnist_{config}.flags" for config in CONFIGS}
GROUPINGS = {
    ("join_similar", 3): "models/groupings/fashion_mnist_3.txt",
    ("join_similar", 5): "models/groupings/fashion_mnist_5.txt",
    ("split_similar", 3): "models/groupings/fashion_mnist_split_3.txt",
    ("split_similar", 5): "models/groupings/fashion_mnist_split_5.txt",
}
IDENTITY_GROUPING = "models/groupings/fashion_mnist_identity_10.txt"
# Phase 1's candidates in order of cost: the head at stage1 (3 groups), the head at stage2 (5).
CANDIDATES = {
    "medium": ("cbr(32,3,2) cbr(64,3,2) gap", "cbr(64,3,2) cbr(64,3) gap"),
    "heavy": ("cbr(64,3,2) cbr(128,3,2) gap", "cbr(128,3,2) cbr(128,3) gap"),
}
MAX_SELECTION_WALL_SECONDS = 600
SSAL_FLAGS = ("--taps=stage1,stage2", "--loss_weights=0.5,0.75")
# The protocol's comparisons: (name, config A, output of A, config B, output of B).
COMPARISONS = (
    ("ssal +JP vs baseline (primary)", "ssal", "joint_top1", "baseline", "base_top1"),
    ("ssal +TR vs baseline", "ssal", "base_top1", "baseline", "base_top1"),
    ("ssal +JP vs identity +JP (grouping vs capacity)", "ssal", "joint_top1", "identity",
     "joint_top1"),
    ("ssal +JP vs split_similar +JP", "ssal", "joint_top1", "split_similar", "joint_top1"),
)


def run_dir(runs, config, seed):
    return os.path.join(runs, f"{config}_seed{seed}")


# The data order these runs were made with: a 10,000-example shuffle buffer, the trainer's
# only order before --shuffle=full (the authors') became the default. Passing it keeps the
# test's figures reproducible.
DATA_ORDER = "--shuffle=buffer:10000"


def _run(command):
    print("+ " + command, flush=True)
    subprocess.run(shlex.split(command), check=True, stdin=subprocess.DEVNULL,
                   env={"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ})


def train(folder, *flag_args):
    """Trains (or resumes, or skips when complete) one run; returns its command."""
    command = " ".join(["python3 -m ssal_keras.train", *flag_args, f"--model_dir={folder}"])
    if not summary.finished_runs(folder):
        _run(command)
    return command


def errors(folder, *flag_args):
    """``analyze errors`` of an SSAL run (once): its report, held-out part included."""
    path = os.path.join(folder, run_files.ANALYSIS_DIR, "errors.json")
    if not os.path.exists(path):
        _run(" ".join(["python3 -m ssal_keras.analyze errors", f"--model_dir={folder}",
                       *flag_args]))
    return run_files.read_json(path)


def groupings_phase(runs):
    baseline = run_dir(runs, "baseline", 0)
    train(baseline, f"--flagfile={RECIPES['baseline']}", "--seed=0", DATA_ORDER)
    matrix = os.path.join(baseline, run_files.HELD_OUT_CONFUSION_FILE)
    for (criterion, groups), output in GROUPINGS.items():
        _run(f"python3 -m ssal_keras.group --matrix={matrix} --kind=confusion "
             f"--criterion={criterion} --num_groups={groups} --output={output}")
    run_files.write_text(IDENTITY_GROUPING, "".join(f"{label}\n" for label in range(10)))


def held_out_margins(report):
    """Per branch: its group accuracy on the held-out images and the one its base implies."""
    branches = report["held_out"]["branches"]
    return ([b["aux_accuracy"] for b in branches], [b["base_group_accuracy"] for b in branches])


def select_phase(runs):
    join = ",".join(GROUPINGS[("join_similar", k)] for k in (3, 5))
    candidates = {}
    chosen = None
    for name, heads in CANDIDATES.items():
        folder = os.path.join(runs, f"select_{name}_seed{SELECTION_SEED}")
        command = train(folder, f"--flagfile={RECIPES['baseline']}", f"--seed={SELECTION_SEED}",
                        DATA_ORDER,
                        f"--groupings={join}", *SSAL_FLAGS,
                        *(f"--head='{head}'" for head in heads))
        report = errors(folder)
        aux, base = held_out_margins(report)
        wall = run_files.read_json(os.path.join(folder, run_files.METRICS_FILE))["wall_seconds"]
        candidates[name] = {
            "heads": list(heads), "command": command, "wall_seconds": wall,
            "aux_group_top1_held_out": aux, "base_group_top1_held_out": base,
            "smallest_margin": min(a - b for a, b in zip(aux, base)),
            "passes": all(a > b for a, b in zip(aux, base)),
            "best_alpha_held_out": report["alpha_sweep"]["best_alpha"],
        }
        if candidates[name]["passes"] and wall <= MAX_SELECTION_WALL_SECONDS:
            chosen = name
            break
    if chosen is None:  # none passes: the largest smallest margin within the time limit
        in_time = [n for n, c in candidates.items()
                   if c["wall_seconds"] <= MAX_SELECTION_WALL_SECONDS]
        chosen = max(in_time or candidates, key=lambda n: candidates[n]["smallest_margin"])
    selection = {"seed": SELECTION_SEED, "candidates": candidates, "chosen": chosen,
                 "precondition_met": candidates[chosen]["passes"],
                 "alpha": candidates[chosen]["best_alpha_held_out"]}
    run_files.write_json(os.path.join(runs, "selection.json"), selection)
    print(json.dumps({k: selection[k] for k in ("chosen", "precondition_met", "alpha")}))
    return selection


def check_recipe(selection):
    """The SSAL recipe must carry phase 1's heads and alpha (the test runs the recipes)."""
    recipe = RunConfig.from_flagfile(RECIPES["ssal"])
    heads, alpha = list(recipe.head), [recipe.alpha]
    expected = list(selection["candidates"][selection["chosen"]]["heads"])
    if heads != expected or alpha != [selection["alpha"]]:
        raise SystemExit(f"{RECIPES['ssal']} has heads {heads} and alpha {alpha}; phase 1 "
                         f"chose {expected} and alpha {selection['alpha']}: update the recipe.")


def test_phase(runs):
    check_recipe(run_files.read_json(os.path.join(runs, "selection.json")))
    for seed in SEEDS:
        for config in CONFIGS:
            folder = run_dir(runs, config, seed)
            train(folder, f"--flagfile={RECIPES[config]}", f"--seed={seed}", DATA_ORDER)
            if config != "baseline":
                errors(folder)


def _base_group_accuracy(confusion, grouping):
    """The group accuracy implied by a classifier's confusion matrix (rows: true labels)."""
    same_group = grouping[:, None] == grouping[None, :]
    return float(confusion[same_group].sum() / confusion.sum())


def collect(runs):
    """One record per finished test run, in the schema of ``docs/fair_test.json``."""
    join = [np.loadtxt(GROUPINGS[("join_similar", k)], dtype=int) for k in (3, 5)]
    records = []
    for seed in SEEDS:
        for config in CONFIGS:
            folder = run_dir(runs, config, seed)
            if not summary.finished_runs(folder):
                continue
            metrics = run_files.read_json(os.path.join(folder, run_files.METRICS_FILE))
            record = {"config": config, "seed": seed, "base_top1": metrics["base_top1"],
                      "joint_top1": metrics["joint_top1"],
                      "command": (f"python3 -m ssal_keras.train --flagfile={RECIPES[config]} "
                                  f"--seed={seed} {DATA_ORDER} --model_dir={folder}"),
                      "wall_seconds": metrics["wall_seconds"]}
            if config == "baseline":  # no branches: its implied accuracy on the SSAL groupings
                confusion = np.load(os.path.join(folder, run_files.HELD_OUT_CONFUSION_FILE))
                record["aux_group_top1_held_out"] = []
                record["base_group_top1_held_out"] = [_base_group_accuracy(confusion, g)
                                                      for g in join]
            else:
                path = os.path.join(folder, run_files.ANALYSIS_DIR, "errors.json")
                if not os.path.exists(path):
                    continue
                analysis = run_files.read_json(path)
                aux, base = held_out_margins(analysis)
                record["aux_group_top1_held_out"] = aux
                record["base_group_top1_held_out"] = base
                # Why the joint output moves: predictions it fixes and breaks (test split).
                test = analysis.get("test", {})
                record["joint_fixes_test"] = test.get("joint_fixes")
                record["joint_breaks_test"] = test.get("joint_breaks")
            records.append(record)
    return records


def compare(records):
    """The protocol's paired comparisons over the seeds both configurations finished."""
    by_key = {(r["config"], r["seed"]): r for r in records}
    results = {}
    for name, config_a, output_a, config_b, output_b in COMPARISONS:
        seeds = [s for s in SEEDS if (config_a, s) in by_key and (config_b, s) in by_key]
        result = summary.paired_comparison([by_key[(config_a, s)][output_a] for s in seeds],
                                           [by_key[(config_b, s)][output_b] for s in seeds])
        results[name] = {"seeds": seeds, **result}
    return results


def deployed_top1(record):
    """The output a user deploys: the joint prediction of an SSAL model, else the base."""
    return record["joint_top1"] if record["joint_top1"] is not None else record["base_top1"]


def table(records):
    """Per configuration, each figure's mean and sample sd over its seeds (``summary.stats``)
    and the mean wall time in minutes: the rows of the results table."""
    rows = {}
    for config in CONFIGS:
        runs = [r for r in records if r["config"] == config]
        if not runs:
            continue
        per_branch = lambda key: [summary.stats([r[key][b] for r in runs])  # noqa: E731
                                  for b in range(len(runs[0][key]))]
        rows[config] = {
            "seeds": len(runs),
            **{key: summary.stats([r.get(key) for r in runs])
               for key in ("base_top1", "joint_top1", "joint_fixes_test", "joint_breaks_test")},
            **{key: per_branch(key) for key in ("aux_group_top1_held_out",
                                                "base_group_top1_held_out")},
            "wall_minutes": round(float(np.mean([r["wall_seconds"] for r in runs])) / 60, 1)}
    return rows


def _percent(stats):
    """A figure in percent, mean ± standard error over the seeds (BUILD_NOTES's ±)."""
    return "-" if stats is None else f"{100 * stats['mean']:.2f} ± {100 * stats['se']:.2f}"


def markdown(rows, comparisons):
    lines = ["| config | seeds | base top-1 (+TR) | joint top-1 (+JP) | branch group top-1, "
             "held-out | base's implied group top-1, held-out | joint fixes / breaks, test | "
             "wall (min) |",
             "|---|---|---|---|---|---|---|---|"]
    for config, row in rows.items():
        per_branch = lambda key: " / ".join(map(_percent, row[key])) or "-"  # noqa: E731
        lines.append(f"| {config} | {row['seeds']} | {_percent(row['base_top1'])} | "
                     f"{_percent(row['joint_top1'])} | "
                     f"{per_branch('aux_group_top1_held_out')} | "
                     f"{per_branch('base_group_top1_held_out')} | "
                     f"{_percent(row['joint_fixes_test'])} / "
                     f"{_percent(row['joint_breaks_test'])} | {row['wall_minutes']:.1f} |")
    lines += ["", "| comparison (paired, points) | differences by seed | mean ± SE | verdict |",
              "|---|---|---|---|"]
    for name, c in comparisons.items():
        if not c["n"]:
            continue
        se = "-" if c["se"] is None else f"{100 * c['se']:.2f}"
        lines.append(f"| {name} | {', '.join(f'{100 * d:+.2f}' for d in c['differences'])} | "
                     f"{100 * c['mean']:+.2f} ± {se} | {c['verdict']} |")
    return "\n".join(lines)


def summarize(report):
    """The report's derived figures, from its own records: the results table, the paired
    comparisons and each selection candidate's wall time in minutes (BUILD_NOTES prints
    them; ``tables`` rebuilds them from a committed docs/fair_test.json without the runs)."""
    report["comparisons"] = compare(report["runs"])
    report["table"] = table(report["runs"])
    for candidate in ((report.get("selection") or {}).get("candidates") or {}).values():
        candidate["wall_minutes"] = round(candidate["wall_seconds"] / 60, 1)
    report["command"] = "python3 models/fair_test_fashion_mnist.py all"
    return report


def tables_phase(docs):
    path = os.path.join(docs, "fair_test.json")
    report = summarize(run_files.read_json(path))
    run_files.write_json(path, report)
    print(markdown(report["table"], report["comparisons"]))


def report_phase(runs, docs):
    records = collect(runs)
    if not records:
        raise SystemExit(f"no finished test run in {runs}: run the test phase first.")
    selection_path = os.path.join(runs, "selection.json")
    report = summarize({
        "protocol": ("BUILD_NOTES.md, 'Fair test on Fashion-MNIST (issue 10): protocol', "
                     "committed before the first run (db1edb1). Seeds paired; alpha fixed from "
                     "the held-out sweep of phase 1; verdict 'beats' when mean - 2 SE > 0, "
                     "'below' when mean + 2 SE < 0."),
        "selection": run_files.read_json(selection_path) if os.path.exists(selection_path) else None,
        "runs": records,
    })
    run_files.write_json(os.path.join(docs, "fair_test.json"), report)
    baseline = summary.stats([r["base_top1"] for r in records if r["config"] == "baseline"])
    if baseline:
        run_files.write_json(os.path.join(docs, "quick_start_reference.json"), {
            "top1": baseline["mean"], "std": baseline["std"], "seeds": baseline["n"],
            "label": f"the baseline of this recipe ({RECIPES['baseline']}), mean ± sd",
            "explained_in": "BUILD_NOTES.md, 'Fair test on Fashion-MNIST' and 'Quick start'"})
    plots.paired_plot(
        os.path.join(docs, "fair_test.png"), categories=CONFIGS,
        series={f"seed {seed}": [next((deployed_top1(r) for r in records
                                       if r["config"] == c and r["seed"] == seed), None)
                                 for c in CONFIGS] for seed in SEEDS},
        title="Fashion-MNIST fair test: deployed output (joint; base for baseline)",
        ylabel="test top-1")
    print(markdown(report["table"], report["comparisons"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("groupings", "select", "test", "report", "tables",
                                          "all"))
    parser.add_argument("--runs", default="runs/fair_test", help="Folder of the runs.")
    parser.add_argument("--docs", default="docs", help="Folder of the report.")
    args = parser.parse_args(argv)
    if args.phase in ("groupings", "all"):
        groupings_phase(args.runs)
    if args.phase in ("select", "all"):
        select_phase(args.runs)
    if args.phase in ("test", "all"):
        test_phase(args.runs)
    if args.phase in ("report", "all"):
        report_phase(args.runs, args.docs)
    if args.phase == "tables":
        tables_phase(args.docs)


if __name__ == "__main__":
    sys.exit(main())
