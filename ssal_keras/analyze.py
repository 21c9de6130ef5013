r"""The paper's further experiments on a finished run: ``python -m ssal_keras.analyze COMMAND``.

Commands (each writes JSON and a PNG; by default into ``DIR/analysis/``):

- ``cam --model_dir=DIR [--output=FILE.png] [--num_images=N]``: class activation maps of the
  base classifier (supplement D): incorrect predictions on the left, correct ones on the
  right, each with the true and predicted label, their groups in every branch and the
  branches' own votes.
- ``adversarial --model_dir=DIR --attack=fgsm|bim --epsilons=0,0.01,...``: examples crafted
  against the base output only; error of the base, of each branch (group error) and of the
  joint prediction per epsilon (supplement E.3). Epsilons are fractions of the pixel range.
- ``errors --model_dir=DIR [--alphas=...]``: where the branches and the base disagree and who
  is right, and the joint accuracy over a sweep of the combination exponent on the run's
  held-out images; the best exponent is printed for ``python -m ssal_keras.export --alpha``.
- ``summary --runs=LABEL=GLOB [--runs=...] --output_dir=DOCS``: mean and spread over seeds of
  several runs' metrics and analyses (top-1 of every output, the share of base and joint
  mistakes within each branch's groups, ...), as a Markdown table, JSON and the averaged curves.
- ``curves --model_dir=DIR [--model_dir=DIR2 ...] [--output=FILE.png]``: training loss and
  evaluation top-1 of every output per epoch, from each run's ``metrics.json`` (default
  ``DIR/analysis/curves.png``; ``--output`` is required for several runs); the JSON beside
  the PNG holds the values the figure's lines were drawn with, per run.

``--model_dir`` may be repeated for ``curves`` only; the other commands take one run folder.
"""

import json
import math
import os
import shlex
import sys

import numpy as np
from absl import flags

from ssal_keras import cli, data, runs
from ssal_keras.analysis import attacks, cam, error_analysis, plots, summary
from ssal_keras.evaluation import scoring
from ssal_keras.modeling import outputs
from ssal_keras.runs import reader

COMMANDS = ("cam", "adversarial", "errors", "summary", "curves")
#: The commands that take several ``--model_dir``.
MULTI_RUN_COMMANDS = ("curves",)
ALPHA_SPLITS = ("held_out", "test")

_MODEL_DIR = flags.DEFINE_multi_string("model_dir", [], "A run folder holding model.keras; "
                                       "curves: repeatable, a folder holding metrics.json.")
_OUTPUT = flags.DEFINE_string("output", None, "cam: the PNG file (default DIR/analysis/cam.png); "
                              "its JSON goes beside it. curves: the PNG file (default "
                              "DIR/analysis/curves.png; required for several runs); "
                              "the JSON of the drawn values goes beside it.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "adversarial, errors: the folder of the "
                                  "JSON and PNG files (default DIR/analysis); summary: required.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 8, "cam: images in all, half of them "
                                   "incorrect predictions.")
_ATTACK = flags.DEFINE_string("attack", "fgsm", f"adversarial: one of {', '.join(attacks.ATTACKS)}.")
_EPSILONS = flags.DEFINE_list("epsilons", ["0", "0.005", "0.01", "0.02", "0.04", "0.08"],
                              "adversarial: largest change per pixel, fractions of 0..255.")
_ALPHAS = flags.DEFINE_list("alphas", [f"{a / 10:g}" for a in range(21)],
                            "errors: combination exponents to sweep.")
_ALPHA_SPLIT = flags.DEFINE_string("alpha_split", "held_out", "errors: data of the alpha sweep: "
                                   "held_out (the run's --held_out_examples) or test.")
_RUNS = flags.DEFINE_multi_string("runs", [], "summary: LABEL=GLOB of run folders (one per "
                                  "seed), repeatable.")
_NAME = flags.DEFINE_string("name", "summary", "summary: prefix of the files written.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset spec (default: the run's --dataset).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default: the run's).")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", None,
                                      "Cap on test examples (default: the run's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Batch size.")


def _model_dir():
    """The single ``--model_dir`` of the commands other than ``curves`` (None if not given);
    ``run`` has refused several."""
    return _MODEL_DIR.value[0] if _MODEL_DIR.value else None


def _load():
    if not _model_dir():
        raise cli.UsageError("--model_dir is required: a run folder holding model.keras.")
    if _BATCH_SIZE.value < 1:
        raise cli.UsageError(f"--batch_size must be >= 1; received {_BATCH_SIZE.value}.")
    return reader.load(_model_dir())


def _test_data(run, *, held_out=False):
    dataset, held_out_split = run.load_data(dataset=_DATASET.value, data_dir=_DATA_DIR.value,
                                            eval_examples=_EVAL_EXAMPLES.value, held_out=held_out)
    batches = data.eval_pipeline(dataset, batch_size=_BATCH_SIZE.value)
    if held_out:
        held_out_batches = data.eval_pipeline(held_out_split, batch_size=_BATCH_SIZE.value,
                                              image_size=dataset.image_size)
        return dataset, batches, held_out_batches
    return dataset, batches


def _output_dir(run):
    return _OUTPUT_DIR.value or os.path.join(run.model_dir, runs.ANALYSIS_DIR)


def _write(path, report):
    runs.write_json(path, report)
    print(f"wrote {path}", flush=True)


def _groups_text(groupings, label):
    return "[" + ",".join(str(int(g[label])) for g in groupings) + "]" if groupings else ""


def cam_command():
    """Supplement D: CAM of the base classifier, incorrect and correct predictions."""
    if _NUM_IMAGES.value < 2:
        raise cli.UsageError(f"--num_images must be >= 2 (one incorrect and one correct "
                             f"prediction at least); received {_NUM_IMAGES.value}.")
    output = _OUTPUT.value or os.path.join(_model_dir() or ".", runs.ANALYSIS_DIR, "cam.png")
    if not output.lower().endswith(".png"):
        raise cli.UsageError(f"--output={output} must name a .png file.")
    run = _load()
    dataset, batches = _test_data(run)
    names = run.class_names or dataset.class_names
    groupings = outputs.model_groupings(run.model)
    chosen, scanned = cam.select_examples(run.model, batches,
                                          incorrect=math.ceil(_NUM_IMAGES.value / 2),
                                          correct=_NUM_IMAGES.value // 2)
    columns = [chosen["incorrect"], chosen["correct"]]

    def caption(item):
        lines = [f"true {names[item['label']]} {_groups_text(groupings, item['label'])}",
                 f"pred {names[item['predicted']]} {_groups_text(groupings, item['predicted'])}"
                 f" {100 * item['probability']:.0f}%"]
        if groupings:
            lines.append(f"branches [{','.join(str(v) for v in item['branch_votes'])}]")
        return "\n".join(lines)

    plots.cam_grid(
        output, images=[[c["image"] for c in column] for column in columns],
        maps=[[c["map"] for c in column] for column in columns],
        captions=[[caption(c) for c in column] for column in columns],
        columns_titles=["incorrect", "correct"],
        title="CAM of the base classifier; [groups in each branch]")
    print(f"wrote {output}", flush=True)
    report = {
        "model_dir": run.model_dir,
        "groupings": [g.tolist() for g in groupings],
        "class_names": list(names),
        **{kind: [{k: v for k, v in item.items() if k not in ("image", "map")}
                  for item in chosen[kind]] for kind in chosen},
        "examples_scanned": scanned,
    }
    _write(os.path.splitext(output)[0] + ".json", report)


def adversarial_command():
    """Supplement E.3: FGSM or BIM against the base output; every output's error."""
    if _ATTACK.value not in attacks.ATTACKS:
        raise cli.UsageError(f"unknown attack {_ATTACK.value!r}; use --attack="
                             f"{' or --attack='.join(attacks.ATTACKS)}.")
    epsilons = attacks.validate_epsilons(_EPSILONS.value)
    run = _load()
    _, batches = _test_data(run)
    results = attacks.robustness(run.model, batches, attack=_ATTACK.value, epsilons=epsilons)
    for result in results:
        print(json.dumps(result), flush=True)
    report = {"model_dir": run.model_dir, "attack": _ATTACK.value,
              "epsilon_units": "fraction of the 0..255 pixel range", "results": results}
    folder = _output_dir(run)
    series = {outputs.BASE: [r["base_error"] for r in results]}
    for b in range(len(results[0]["aux_error"])):
        series[f"{outputs.aux_name(b)} (groups)"] = [r["aux_error"][b] for r in results]
    if results[0]["joint_error"] is not None:
        series[outputs.JOINT] = [r["joint_error"] for r in results]
    plots.line_plot(os.path.join(folder, f"adversarial_{_ATTACK.value}.png"), x=epsilons,
                    series=series, title=f"{_ATTACK.value.upper()} against the base output",
                    xlabel="epsilon (fraction of pixel range)", ylabel="test error")
    _write(os.path.join(folder, f"adversarial_{_ATTACK.value}.json"), report)


def _sweep_alphas():
    """The exponents of the errors command's sweep (``--alphas``), once ``--alpha_split`` is
    known to be valid."""
    if _ALPHA_SPLIT.value not in ALPHA_SPLITS:
        raise cli.UsageError(f"--alpha_split must be one of {', '.join(ALPHA_SPLITS)}; "
                             f"received {_ALPHA_SPLIT.value!r}.")
    alphas = []
    for raw in _ALPHAS.value:
        try:
            alphas.append(float(raw))
        except ValueError:
            raise cli.UsageError(f"alpha {raw!r} is not a number; e.g. --alphas=0,0.3,0.5.") from None
    return alphas


def _errors_report(run, groupings, alphas, *, held_out):
    """The content of ``errors.json``, and the test joint accuracy at the trained alpha (for
    the summary line).

    The alpha sweep runs on the held-out images when ``held_out`` (else on the test split) and
    is also scored on the test split, so the choice can be set against the test figure.
    """
    _, test_batches, *rest = _test_data(run, held_out=held_out)
    test_predictions, test_labels = scoring.predict_outputs(run.model, test_batches)
    sweep_predictions, sweep_labels = (scoring.predict_outputs(run.model, rest[0]) if held_out
                                       else (test_predictions, test_labels))
    sweep, best = error_analysis.alpha_sweep(sweep_predictions, sweep_labels, groupings, alphas)
    test_sweep, _ = error_analysis.alpha_sweep(test_predictions, test_labels, groupings, alphas)
    trained_alpha = float(run.model.alpha)
    report = {
        "model_dir": run.model_dir,
        "test": error_analysis.branch_agreement(test_predictions, test_labels, groupings),
        # The held-out images are where heads and alpha may be chosen (never the test split).
        **({"held_out": error_analysis.branch_agreement(sweep_predictions, sweep_labels,
                                                        groupings)}
           if held_out else {}),
        "alpha_sweep": {
            "split": _ALPHA_SPLIT.value, "examples": int(sweep_labels.size),
            "alphas": alphas,
            "joint_accuracy": sweep, "test_joint_accuracy": test_sweep,
            "best_alpha": best, "trained_alpha": trained_alpha,
            "test_joint_accuracy_at_best": error_analysis.joint_accuracy(
                test_predictions, test_labels, groupings, best),
        },
    }
    at_trained_alpha = error_analysis.joint_accuracy(test_predictions, test_labels, groupings,
                                                     trained_alpha)
    return report, at_trained_alpha


def _plot_alpha_sweep(path, sweep_report, split_label):
    """The joint accuracy over the exponents, on the sweep's split and on the test split."""
    on_test = f"{outputs.JOINT} (test)"
    plots.line_plot(path, x=sweep_report["alphas"],
                    series={f"{outputs.JOINT} ({split_label})": sweep_report["joint_accuracy"],
                            on_test: sweep_report["test_joint_accuracy"]},
                    line_styles={on_test: "--"},
                    title="Joint prediction vs combination exponent", xlabel="alpha",
                    ylabel="top-1 accuracy", marker_x=sweep_report["best_alpha"])


def _print_errors_summary(report, groupings, split_label, at_trained_alpha):
    """Each branch against its base on the held-out images, then the alpha to export."""
    for index, branch in enumerate(report.get("held_out", {}).get("branches", [])):
        print(f"{outputs.aux_name(index)} ({int(np.max(groupings[index])) + 1} groups) on the "
              f"held-out images: branch group top-1 {branch['aux_accuracy']:.4f}, base's "
              f"implied group top-1 {branch['base_group_accuracy']:.4f}", flush=True)
    sweep_report = report["alpha_sweep"]
    best = sweep_report["best_alpha"]
    print(f"best alpha {best:g} ({split_label} joint accuracy "
          f"{max(sweep_report['joint_accuracy']):.4f}); test joint accuracy "
          f"{sweep_report['test_joint_accuracy_at_best']:.4f} at it, {at_trained_alpha:.4f}"
          f" at the trained alpha {sweep_report['trained_alpha']:g}; export with --alpha={best:g}",
          flush=True)


def errors_command():
    """The authors' error analysis and the alpha sweep on held-out data."""
    alphas = _sweep_alphas()
    run = _load()
    groupings = outputs.model_groupings(run.model)
    if not groupings:
        raise cli.UsageError(f"the run in {run.model_dir} has no SSAL branches: the error "
                             "analysis compares branches with the base; give an SSAL run.")
    held_out = _ALPHA_SPLIT.value == "held_out"
    report, at_trained_alpha = _errors_report(run, groupings, alphas, held_out=held_out)
    folder = _output_dir(run)
    split_label = "held-out" if held_out else "test"
    _plot_alpha_sweep(os.path.join(folder, "alpha_sweep.png"), report["alpha_sweep"],
                      split_label)
    _write(os.path.join(folder, "errors.json"), report)
    _print_errors_summary(report, groupings, split_label, at_trained_alpha)


def summary_command():
    """Mean and spread over seeds of several runs (the reproduction table of BUILD_NOTES)."""
    if not _OUTPUT_DIR.value:
        raise cli.UsageError("--output_dir is required for summary: where the table and the "
                             "averaged plots go.")
    if not _RUNS.value:
        raise cli.UsageError("--runs is required: LABEL=GLOB of run folders, repeatable.")
    groups = []
    for entry in _RUNS.value:
        label, equals, pattern = entry.partition("=")
        if label == "command":
            raise cli.UsageError(f"--runs={entry}: 'command' is taken (the JSON records the "
                                 "command under it); choose another label.")
        if not equals or not label or not pattern:
            raise cli.UsageError(f"--runs={entry} must be LABEL=GLOB, e.g. "
                                 "--runs=ssal=runs/fashion_mnist_ssal_seed*.")
        folders = summary.finished_runs(pattern)
        if not folders:
            raise cli.UsageError(f"--runs={entry}: no finished run folder (with a completed "
                                 f"{runs.METRICS_FILE}) matches {pattern}.")
        groups.append((label, folders))
    report = summary.summarize(groups)
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    prefix = os.path.join(_OUTPUT_DIR.value, _NAME.value)
    for path in summary.write_figures(report, prefix):
        print(f"wrote {path}", flush=True)
    table = summary.markdown_table(report)
    runs.write_text(f"{prefix}.md", table)
    # The command that made it, beside the groups (a label may not be "command", below).
    _write(f"{prefix}.json", {**report, "command": "python3 -m ssal_keras.analyze "
                              + shlex.join(sys.argv[1:])})
    print(table, flush=True)


def _run_label(model_dir, model_dirs):
    """A run's name in the figure: its folder's name, or its path where two share a name."""
    name = os.path.basename(os.path.normpath(model_dir))
    names = [os.path.basename(os.path.normpath(d)) for d in model_dirs]
    return name if names.count(name) == 1 else os.path.normpath(model_dir)


def _is_number(value, *, optional=False):
    return ((value is None and optional)
            or (isinstance(value, (int, float)) and not isinstance(value, bool)))


def _read_curves(model_dir):
    """``(epochs, train_loss, {output: top-1 values})`` of the run's ``metrics.json`` history.

    Raises:
        cli.UsageError: naming the folder or the file, when it is missing or its history is
            empty or not the trainer's.
    """
    if not os.path.isdir(model_dir):
        raise cli.UsageError(f"model_dir {model_dir} does not exist; give a run folder "
                             f"holding {runs.METRICS_FILE}.")
    path = os.path.join(model_dir, runs.METRICS_FILE)
    if not os.path.isfile(path):
        raise cli.UsageError(f"no {runs.METRICS_FILE} in {model_dir}: the run has not finished "
                             "an epoch yet, or this is not a run folder.")
    try:
        history = runs.read_json(path).get("history")
    except (OSError, ValueError, AttributeError) as error:
        raise cli.UsageError(f"cannot read {path} as the trainer's metrics ({error}).") from None
    if not isinstance(history, list) or not history:
        raise cli.UsageError(f"{path} has no per-epoch history: train the run for an epoch "
                             "at least.")
    branches = None
    for record in history:
        evaluation = record.get("eval") if isinstance(record, dict) else None
        aux = evaluation.get("aux_top1", []) if isinstance(evaluation, dict) else None
        if (not isinstance(evaluation, dict) or not _is_number(record.get("epoch"))
                or not _is_number(record.get("train_loss"), optional=True)
                or not _is_number(evaluation.get("base_top1"))
                or not _is_number(evaluation.get("joint_top1"), optional=True)
                or not isinstance(aux, list) or not all(_is_number(a) for a in aux)
                or (branches is not None and len(aux) != branches)):
            raise cli.UsageError(f"{path} holds a malformed history record "
                                 f"{json.dumps(record)[:120]}; expected the trainer's "
                                 "{epoch, train_loss, eval: {base_top1, joint_top1, "
                                 "aux_top1}} per epoch.")
        branches = len(aux)
    evaluations = [r["eval"] for r in history]
    top1 = {outputs.BASE: [e["base_top1"] for e in evaluations]}
    if any(e["joint_top1"] is not None for e in evaluations):
        top1[outputs.JOINT] = [e["joint_top1"] for e in evaluations]
    for b in range(branches):
        top1[outputs.aux_name(b)] = [e.get("aux_top1", [])[b] for e in evaluations]
    return [r["epoch"] for r in history], [r["train_loss"] for r in history], top1


def curves_command():
    """Training loss and every output's evaluation top-1 per epoch, of one or several runs."""
    model_dirs = _MODEL_DIR.value
    if not model_dirs:
        raise cli.UsageError("--model_dir is required: a run folder holding "
                             f"{runs.METRICS_FILE} (repeat it to compare runs).")
    if len(model_dirs) > 1 and not _OUTPUT.value:
        raise cli.UsageError(f"--output=FILE.png is required with {len(model_dirs)} "
                             "--model_dir: the figure of several runs belongs to none of them.")
    output = _OUTPUT.value or os.path.join(model_dirs[0], runs.ANALYSIS_DIR, "curves.png")
    if not output.lower().endswith(".png"):
        raise cli.UsageError(f"--output={output} must name a .png file.")
    curves = []
    for model_dir in model_dirs:
        epochs, train_loss, top1 = _read_curves(model_dir)
        curves.append({"label": _run_label(model_dir, model_dirs), "epochs": epochs,
                       "train_loss": train_loss, "top1": top1})
    drawn = plots.training_curves(output, curves)
    print(f"wrote {output}", flush=True)
    # The figure's values, read back from its lines: a user re-plots or checks them.
    _write(os.path.splitext(output)[0] + ".json",
           {"runs": [{"model_dir": model_dir, **run}
                     for model_dir, run in zip(model_dirs, drawn)]})


def run(command):
    if len(_MODEL_DIR.value) > 1 and command not in MULTI_RUN_COMMANDS:
        raise cli.UsageError(f"--model_dir given {len(_MODEL_DIR.value)} times; {command} "
                             f"takes one run folder (only {', '.join(MULTI_RUN_COMMANDS)} "
                             "takes several).")
    {"cam": cam_command, "adversarial": adversarial_command, "errors": errors_command,
     "summary": summary_command, "curves": curves_command}[command]()


def main():
    """The ``ssal-analyze`` console command; the same as ``python -m ssal_keras.analyze``."""
    cli.run(run, prog="analyze", commands=COMMANDS, module=__name__)


if __name__ == "__main__":
    main()
