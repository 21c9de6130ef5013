"""Mean and spread over seeds of several groups of finished runs: the reproduction table.

A group is one recipe run at several seeds (``baseline``, ``ssal``, ...). For each group this
reads every run's ``metrics.json`` and, where present, the files ``python -m ssal_keras.analyze``
left in its ``analysis/`` folder (``errors.json``, ``adversarial_<attack>.json``), and reports
mean, sample standard deviation, min and max of each figure.
"""

import glob
import os

import numpy as np

from ssal_keras import runs
from ssal_keras.analysis import attacks, plots
from ssal_keras.modeling import outputs

# Line styles of the groups in a figure comparing them (first group: the reference).
_GROUP_LINE_STYLES = ("--", "-", ":", "-.")


def stats(values):
    """Mean, sample standard deviation, standard error of the mean (sd / sqrt(n)), min, max and
    count of the non-None values (None when there are none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "se": std / float(np.sqrt(array.size)),
            "min": float(array.min()), "max": float(array.max()), "n": int(array.size)}


def paired_comparison(a_values, b_values, *, z=2.0):
    """Paired differences ``a - b`` over seeds and the verdict of the fair test's rule.

    ``a_values[i]`` and ``b_values[i]`` come from the same seed (same data order and initial
    backbone). The verdict is ``"beats"`` when ``mean - z * SE > 0``, ``"below"`` when
    ``mean + z * SE < 0``, otherwise ``"no difference shown"`` (also with fewer than two
    pairs); SE is the sample standard deviation of the differences over ``sqrt(n)``.
    """
    if len(a_values) != len(b_values):
        raise ValueError(f"paired values need the same seeds: {len(a_values)} against "
                         f"{len(b_values)} values.")
    differences = np.asarray(a_values, dtype=float) - np.asarray(b_values, dtype=float)
    n = int(differences.size)
    mean = float(differences.mean()) if n else None
    se = float(differences.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    verdict = "no difference shown"
    if se is not None and mean - z * se > 0:
        verdict = "beats"
    elif se is not None and mean + z * se < 0:
        verdict = "below"
    return {"differences": differences.tolist(), "n": n, "mean": mean, "se": se,
            "verdict": verdict}


def finished_runs(pattern):
    """Run folders matching the glob ``pattern`` whose ``metrics.json`` says completed."""
    folders = sorted(f for f in glob.glob(pattern) if os.path.isdir(f))
    return [f for f in folders if os.path.exists(os.path.join(f, runs.METRICS_FILE))
            and runs.read_json(os.path.join(f, runs.METRICS_FILE)).get("completed")]


def _analysis(folder, name):
    path = os.path.join(folder, runs.ANALYSIS_DIR, name)
    return runs.read_json(path) if os.path.exists(path) else None


def _average_curves(reports):
    """Mean and spread per epsilon of adversarial reports with the same epsilons as the first."""
    epsilons = [r["epsilon"] for r in reports[0]["results"]]
    usable = [r for r in reports if [x["epsilon"] for x in r["results"]] == epsilons]
    readers = {outputs.BASE: lambda x: x["base_error"], outputs.JOINT: lambda x: x["joint_error"]}
    for b in range(len(usable[0]["results"][0]["aux_error"])):
        readers[f"{outputs.aux_name(b)} (groups)"] = lambda x, b=b: x["aux_error"][b]
    errors = {}
    for name, read in readers.items():
        per_epsilon = [stats([read(r["results"][i]) for r in usable])
                       for i in range(len(epsilons))]
        if all(s is not None for s in per_epsilon):
            errors[name] = {"mean": [s["mean"] for s in per_epsilon],
                            "std": [s["std"] for s in per_epsilon]}
    return {"epsilons": epsilons, "runs": len(usable), "errors": errors}


def _within_group(metrics, output, branch):
    """A run's ``mistakes_within_group`` share of ``output`` for ``branch``; None where the
    run has none (no mistakes, or a ``metrics.json`` written before the figure existed)."""
    shares = (metrics.get("mistakes_within_group") or {}).get(output) or []
    return shares[branch] if branch < len(shares) else None


def summarize(groups):
    """Statistics over the runs of each group.

    Args:
        groups: list of ``(label, folders)``: finished run folders, one per seed.

    Returns:
        A dict ``{label: entry}``; an entry holds ``runs``, ``base_top1``, ``joint_top1``,
        ``aux_top1`` (per branch), ``mistakes_within_group`` (``{"base": [...], "joint":
        [...]}``, per branch) and ``wall_seconds`` statistics; from ``errors.json``
        ``best_alpha``, ``test_joint_top1_at_best_alpha``, ``agreement`` (per branch),
        ``joint_fixes`` and ``joint_breaks``; and ``adversarial_<attack>`` curves.
    """
    summary = {}
    for label, folders in groups:
        metrics = [runs.read_json(os.path.join(f, runs.METRICS_FILE)) for f in folders]
        branches = min(len(m["aux_top1"]) for m in metrics)
        entry = {
            "runs": list(folders),
            "base_top1": stats([m["base_top1"] for m in metrics]),
            "joint_top1": stats([m.get("joint_top1") for m in metrics]),
            "aux_top1": [stats([m["aux_top1"][b] for m in metrics]) for b in range(branches)],
            "mistakes_within_group": {
                output: [stats([_within_group(m, output, b) for m in metrics])
                         for b in range(branches)]
                for output in (outputs.BASE, outputs.JOINT)},
            "wall_seconds": stats([m.get("wall_seconds") for m in metrics]),
        }
        errors = [e for e in (_analysis(f, "errors.json") for f in folders) if e]
        if errors:
            entry["best_alpha"] = stats([e["alpha_sweep"]["best_alpha"] for e in errors])
            entry["test_joint_top1_at_best_alpha"] = stats(
                [e["alpha_sweep"]["test_joint_accuracy_at_best"] for e in errors])
            entry["agreement"] = [stats([e["test"]["branches"][b]["agreement"] for e in errors])
                                  for b in range(len(errors[0]["test"]["branches"]))]
            entry["joint_fixes"] = stats([e["test"].get("joint_fixes") for e in errors])
            entry["joint_breaks"] = stats([e["test"].get("joint_breaks") for e in errors])
        for attack in attacks.ATTACKS:
            reports = [r for r in (_analysis(f, f"adversarial_{attack}.json") for f in folders)
                       if r]
            if reports:
                entry[f"adversarial_{attack}"] = _average_curves(reports)
        summary[label] = entry
    return summary


def _percent(value):
    return "-" if value is None else f"{100 * value['mean']:.2f} ± {100 * value['std']:.2f}"


def markdown_table(summary):
    """One row per group: top-1 of base, joint and each branch, the alpha sweep, and the share
    of base and joint mistakes within each branch's groups, in % (mean ± sample standard
    deviation over the group's runs)."""
    branches = max(len(e["aux_top1"]) for e in summary.values())
    within_columns = [(output, b) for output in (outputs.BASE, outputs.JOINT)
                      for b in range(branches)]
    header = (["runs", "n", "base top-1 (+TR)", "joint top-1 (+JP)"]
              + [f"{outputs.aux_name(b)} group top-1" for b in range(branches)]
              + ["best alpha (held-out)", "joint top-1 at best alpha"]
              + [f"{output} mistakes within {outputs.aux_name(b)} groups"
                 for output, b in within_columns])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in summary.items():
        aux = [_percent(entry["aux_top1"][b]) if b < len(entry["aux_top1"]) else "-"
               for b in range(branches)]
        alpha = entry.get("best_alpha")
        within = entry.get("mistakes_within_group") or {}
        within_cells = [_percent((within.get(output) or [])[b])
                        if b < len(within.get(output) or []) else "-"
                        for output, b in within_columns]
        row = ([label, str(entry["base_top1"]["n"]), _percent(entry["base_top1"]),
                _percent(entry["joint_top1"])] + aux
               + [f"{alpha['mean']:.2f} ± {alpha['std']:.2f}" if alpha else "-",
                  _percent(entry.get("test_joint_top1_at_best_alpha"))] + within_cells)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_figures(summary, prefix):
    """The averaged adversarial curves: per group (every output, with spread bands) and, per
    attack, the base and joint error of all groups in one figure.

    Returns:
        list of str: the PNG files written.
    """
    written = []
    xlabel, ylabel = "epsilon (fraction of pixel range)", "test error"
    for attack in attacks.ATTACKS:
        compared, compared_styles, epsilons = {}, {}, None
        for index, (label, entry) in enumerate(summary.items()):
            curves = entry.get(f"adversarial_{attack}")
            if not curves:
                continue
            path = f"{prefix}_{label}_adversarial_{attack}.png"
            plots.line_plot(
                path, x=curves["epsilons"],
                series={k: v["mean"] for k, v in curves["errors"].items()},
                spreads={k: v["std"] for k, v in curves["errors"].items()},
                title=f"{attack.upper()} against the base output ({label}, "
                      f"mean ± std of {curves['runs']} runs)", xlabel=xlabel, ylabel=ylabel)
            written.append(path)
            if epsilons not in (None, curves["epsilons"]):
                continue  # another sweep: not on the same axis
            epsilons = curves["epsilons"]
            for output in (outputs.BASE, outputs.JOINT):
                if output in curves["errors"]:
                    name = f"{output} ({label})"
                    compared[name] = curves["errors"][output]["mean"]
                    compared_styles[name] = _GROUP_LINE_STYLES[index % len(_GROUP_LINE_STYLES)]
        if len({name.split(" ", 1)[1] for name in compared}) > 1:
            path = f"{prefix}_adversarial_{attack}.png"
            plots.line_plot(path, x=epsilons, series=compared, line_styles=compared_styles,
                            title=f"{attack.upper()} against the base output (mean of seeds)",
                            xlabel=xlabel, ylabel=ylabel)
            written.append(path)
    return written
