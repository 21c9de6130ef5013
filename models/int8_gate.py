"""The int8 table of BUILD_NOTES.md ("Export"): the default int8 gate on trained runs.

    python3 models/int8_gate.py --runs DIR [DIR ...] [--output FILE] [--exports DIR]

For each completed run ``DIR`` (its ``metrics.json`` says ``"completed": true``) this runs, as
a user does,

    python -m ssal_keras.export --model_dir=DIR --output_dir=OUT --formats=onnx --quantize=int8

(the default gate: 256 calibration images and up to 2,000 others from the run's held-out
training images, at most 0.5 points of top-1 lost), then reads the ``int8`` record of
``OUT/export.json``: the deployed output's float top-1, int8 top-1, the drop in points and the
argmax agreement, as the export recorded them (nothing is recomputed). ``OUT`` is
``EXPORTS/<run folder's name>`` with ``--exports``, else a temporary folder removed
afterwards.

Writes ``FILE`` (default ``int8_gate.json`` in ``docs/``), atomically: the command, the date,
the versions the exports recorded, one row per run (its seed from its ``run.json``, the export
command, the figures) and, over the runs, each figure's mean, sample standard deviation and
standard error (in the units of the rows: top-1 and agreement as fractions, the drop in
points). Time on 2 CPU cores shared with a training run: about 40 s per
quick-start run.
"""

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOCS = "docs"
NAME = "int8_gate.json"
FIGURES = ("float_top1", "int8_top1", "drop_points", "argmax_agreement")


def _completed(run):
    """Raises ``SystemExit`` unless ``run`` is a completed run folder."""
    from ssal_keras import runs

    metrics = os.path.join(run, runs.METRICS_FILE)
    if not (os.path.exists(metrics) and runs.read_json(metrics).get("completed")
            and os.path.exists(os.path.join(run, runs.MODEL_FILE))):
        raise SystemExit(f"--runs {run}: not a completed run (it needs {runs.MODEL_FILE} and "
                         f"a {runs.METRICS_FILE} that says \"completed\": true).")


def export_int8(run, out):
    """Runs the int8 export of ``run`` into ``out``; returns ``(command, export.json)``."""
    from ssal_keras import runs

    args = ["-m", "ssal_keras.export", f"--model_dir={run}", f"--output_dir={out}",
            "--formats=onnx", "--quantize=int8"]
    command = " ".join(["python", *map(shlex.quote, args)])
    print(f"+ {command}", flush=True)
    subprocess.run([sys.executable, *args], check=True, stdin=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return command, runs.read_json(os.path.join(out, "export.json"))


def row(run, command, meta):
    """One run's record: the export's ``int8`` figures as ``export.json`` holds them."""
    from ssal_keras.training.config import read_config

    gate, config = meta["int8"]["gate"], read_config(run)
    return {
        "run": os.path.abspath(run),
        "seed": config.seed if config is not None else None,
        "command": command,
        "output": gate["output"],
        "examples": gate["examples"],
        "calibration": meta["int8"]["calibration"],
        "max_drop_points": gate["max_drop_points"],
        **{figure: gate[figure] for figure in FIGURES},
    }


def summarise(rows):
    """Each figure's mean, sample standard deviation and standard error over ``rows``
    (``ssal_keras.analysis.summary.stats``)."""
    from ssal_keras.analysis import summary

    return {figure: summary.stats([r[figure] for r in rows]) for figure in FIGURES}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="Completed run folders.")
    parser.add_argument("--output", default=os.path.join(DOCS, NAME), help="The JSON to write.")
    parser.add_argument("--exports", help="Folder to keep the exports in (one folder per run, "
                        "named as the run's); default: a temporary folder, removed.")
    args = parser.parse_args(argv)
    names = [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(set(names)) != len(names):
        parser.error("--runs: two runs share a folder name; their exports would collide.")
    for run in args.runs:
        _completed(run)

    from ssal_keras import runs

    started = time.perf_counter()
    rows, metas = [], []
    with tempfile.TemporaryDirectory(prefix="int8_gate_") as work:
        for run, name in zip(args.runs, names):
            out = os.path.join(args.exports or work, name)
            command, meta = export_int8(run, out)
            rows.append(row(run, command, meta))
            metas.append(meta)
            figures = rows[-1]
            print(f"{name}: {figures['output']} top-1 float {figures['float_top1']:.4f}, int8 "
                  f"{figures['int8_top1']:.4f} (drop {figures['drop_points']:.2f} points), "
                  f"argmax agreement {figures['argmax_agreement']:.4f} on "
                  f"{figures['examples']} images", flush=True)
    report = {
        "command": " ".join(["python3 models/int8_gate.py", *map(shlex.quote, argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": metas[0]["versions"],
        "method": metas[0]["int8"]["method"],
        "units": "float_top1, int8_top1, argmax_agreement: fractions; drop_points: points of "
                 "top-1 (100 x (float_top1 - int8_top1)); std: sample standard deviation, se: std / sqrt(n)",
        "rows": rows,
        "summary": summarise(rows),
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
