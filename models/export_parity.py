"""The export table of BUILD_NOTES.md ("Export"): largest differences, Keras vs export.

    python3 models/export_parity.py --quick_start_run DIR [--output FILE] [--rows NAME,...] \
        [--exports DIR]

Each row builds a model (random weights, seeded; or the trained quick-start run ``DIR``),
exports it through the package's public export function, ``ssal_keras.export.export_folder``
(SavedModel and ONNX, opset 17, into ``EXPORTS/<row>`` with ``--exports``, else a temporary
folder removed afterwards), and records what the export's own
``export.json`` says: the largest absolute difference of each format against
``model(x, training=False)`` on the export's seeded check batches (1 and 7 random raw-pixel
images), overall and per output. Nothing is recomputed here. The rows (the tiny models are
those of tests/test_export.py):

- ``preact``: tiny preact ResNet, heads cbr/inception_e/SE/dense, all outputs;
- ``se_wrn``: tiny SE-WRN, the ImageNet head blocks (PyTorch paddings and pools), mean/std
  normalisation, all outputs;
- ``densenet``: tiny DenseNet-BC, default head, 1 channel, the joint output;
- ``resnet50_imagenet``: torchvision's ResNet50 at 32x32, a plain classifier (``base``);
- ``quick_start``: the trained quick-start SSAL run ``--quick_start_run`` (its ``metrics.json``
  must say it completed), all outputs;
- ``paper_resnet50_cifar100``: the paper's ResNet50 CIFAR100 SSAL model
  (``ssal_keras.paper_model("resnet50_cifar100")``'s layout) as the trainer builds
  models/resnet50_cifar100_ssal.flags, inputs divided by 255 inside, random weights; all
  outputs, and again with the base output only (ONNX only; ``base_only``).

Writes ``FILE`` (default ``export_parity.json`` in ``docs/``), atomically: the command, the
date, the versions the exports recorded, the tolerance and check batches, and one record per
row. ``--rows`` measures some rows only (the test drives it on the tiniest). Time on 2 CPU
cores shared with a training run: 5.5 minutes, 4.5 of them the two ResNet50s.
"""

import argparse
import datetime
import os
import shlex
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOCS = "docs"
NAME = "export_parity.json"
PAPER_RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "resnet50_cifar100_ssal.flags")
PAPER_GROUPS = (20, 33, 50)  # the paper's CIFAR100 groupings' sizes; any grouping exports alike


# --- models (random weights; the tiny ones as tests/test_export.py builds them) -----------
def _tiny_preact():
    import ssal_keras
    from ssal_keras.modeling import backbones

    backbone = backbones.preact_resnet(
        block="basic", stage_blocks=(1, 1), stage_widths=(8, 16), stage_strides=(1, 2),
        stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False,
        num_classes=4, input_shape=(16, 16, 3), normalization="scale", name="tiny_preact")
    return ssal_keras.SSALModel(backbone, branches=[
        ssal_keras.Branch(tap="stage1", grouping=[0, 0, 1, 1],
                          head=["cbr(8,3)", "inception_e(0.05)", "gap"]),
        ssal_keras.Branch(tap="stage2", grouping=[0, 1, 2, 0], head=["se(4)", "gap", "dense(8)"]),
    ], alpha=0.5)


def _tiny_se_wrn():
    import ssal_keras
    from ssal_keras.modeling import backbones

    backbone = backbones.wide_resnet(
        depth=10, width=1, se_reduction=4, num_classes=5, input_shape=(16, 16, 3),
        normalization=((120.0, 110.0, 100.0), (60.0, 62.0, 64.0)))
    return ssal_keras.SSALModel(backbone, branches=[
        ssal_keras.Branch(tap="stage1", grouping=[0, 1, 1, 2, 2], head=[
            "cbr(8,3,2,0)", "inception_c_smaller(0.05)", "inception_d_smaller(0.05)",
            "inception_e_smaller(0.05)", "gap"], head_style="authors_pytorch"),
    ], alpha=0.4)


def _tiny_densenet():
    import ssal_keras
    from ssal_keras.modeling import backbones

    backbone = backbones.densenet_bc(depth=10, growth_rate=4, num_classes=3,
                                     input_shape=(16, 16, 1), normalization="scale")
    return ssal_keras.SSALModel(backbone, branches=[
        ssal_keras.Branch(tap="transition1", grouping=[0, 1, 1]),  # the default head
    ], alpha=0.5)


def _resnet50_imagenet():
    from ssal_keras.modeling import backbones

    return backbones.build("resnet50_imagenet", num_classes=3, input_shape=(32, 32, 3),
                           normalization="scale")


def _paper_resnet50_cifar100():
    """``ssal_keras.paper_model("resnet50_cifar100")``'s layout (28,886,131 parameters) as the
    trainer builds it from PAPER_RECIPE: with the recipe's division by 255 inside. (The bare
    ``paper_model`` has no normalisation layer; fed raw 0..255 pixels, the random network
    saturates every softmax and the check would compare one-hot vectors.)"""
    import types

    import numpy as np

    from ssal_keras.training import RunConfig, run

    config = RunConfig.from_flagfile(PAPER_RECIPE, dataset="npz:unused")
    shape = types.SimpleNamespace(num_classes=100, image_shape=(32, 32, 3))
    resolved = config.resolve()
    return run.build_model(resolved, shape, [np.arange(100) % k for k in PAPER_GROUPS],
                           resolved.backbone.normalization)


def _quick_start(run_dir):
    from ssal_keras import runs
    from ssal_keras.runs import reader

    metrics_path = os.path.join(run_dir, runs.METRICS_FILE)
    if not os.path.exists(metrics_path) or not runs.read_json(metrics_path).get("completed"):
        raise SystemExit(f"--quick_start_run {run_dir}: not a completed run (its "
                         f"{runs.METRICS_FILE} must say \"completed\": true).")
    return reader.load(run_dir).model


# name -> (the table's words, builder, outputs, also export the base output alone)
ROWS = {
    "preact": ("tiny preact ResNet, heads cbr/inception_e/SE/dense, all outputs",
               _tiny_preact, "all", False),
    "se_wrn": ("tiny SE-WRN, the ImageNet head blocks (PyTorch paddings and pools), mean/std "
               "normalisation", _tiny_se_wrn, "all", False),
    "densenet": ("tiny DenseNet-BC, default head, 1 channel", _tiny_densenet, "joint", False),
    "resnet50_imagenet": ("resnet50_imagenet (torchvision's) at 32x32, plain",
                          _resnet50_imagenet, None, False),
    "quick_start": ("quick-start SSAL run, all outputs", _quick_start, "all", False),
    "paper_resnet50_cifar100": ("paper ResNet50 CIFAR100 SSAL, random weights",
                                _paper_resnet50_cifar100, "all", True),
}


def _exported(model, folder, *, outputs, formats, source):
    """Exports ``model`` into ``folder`` and returns its ``export.json``, read from disk."""
    import ssal_keras.export as export
    from ssal_keras import runs

    export.export_folder(model, folder, formats=formats, outputs=outputs, source=source)
    return runs.read_json(os.path.join(folder, export.METADATA))


def _figures(meta):
    """The row's figures, as ``export.json`` records them."""
    return {
        "input_shape": meta["input"]["shape"],
        "outputs": [o["name"] for o in meta["outputs"]],
        **{fmt: report["max_abs_diff"] for fmt, report in meta["formats"].items()},
        "per_output": {fmt: report["max_abs_diff_per_output"]
                       for fmt, report in meta["formats"].items()},
    }


def measure_row(name, work, *, quick_start_run=None):
    """Builds, exports and reads back one row of ``ROWS``; returns its record and the
    export's ``export.json``."""
    import keras

    label, build, outputs, base_only = ROWS[name]
    start = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    if name == "quick_start":
        model, source = build(quick_start_run), os.path.abspath(quick_start_run)
    else:
        model, source = build(), f"models/export_parity.py, row {name} (random weights)"
    meta = _exported(model, os.path.join(work, name), outputs=outputs,
                     formats=("saved_model", "onnx"), source=source)
    record = {"name": name, "model": label, "source": source, **_figures(meta)}
    if base_only:
        alone = _exported(model, os.path.join(work, f"{name}_base"), outputs="base",
                          formats=("onnx",), source=source)
        record["base_only"] = _figures(alone)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record, meta


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick_start_run", help="A completed quick-start SSAL run folder "
                        "(needed by the quick_start row).")
    parser.add_argument("--output", default=os.path.join(DOCS, NAME), help="The JSON to write.")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"Comma-separated rows to measure, of: {', '.join(ROWS)}.")
    parser.add_argument("--exports", help="Folder to keep the exports in (one folder per row, "
                        "named as the row); default: a temporary folder, removed.")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        parser.error(f"--rows: unknown or no rows ({', '.join(unknown)}); valid: "
                     f"{', '.join(ROWS)}.")
    if "quick_start" in names and not args.quick_start_run:
        parser.error("the quick_start row needs --quick_start_run (a completed run folder).")

    from ssal_keras import runs

    started = time.perf_counter()
    rows, metas = [], []
    with tempfile.TemporaryDirectory(prefix="export_parity_") as work:
        for name in names:
            record, meta = measure_row(name, args.exports or work,
                                       quick_start_run=args.quick_start_run)
            rows.append(record)
            metas.append(meta)
            print(f"{name}: SavedModel {record['saved_model']:.2g}, ONNX Runtime "
                  f"{record['onnx']:.2g} ({record['seconds']:.0f} s)", flush=True)
    report = {
        "command": " ".join(["python3 models/export_parity.py", *map(shlex.quote, argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": metas[0]["versions"],
        "tolerance": metas[0]["tolerance"],
        "opset": metas[0]["opset"],
        "check": metas[0]["check"],
        "figures": "largest absolute difference, export minus Keras, as each export's "
                   "export.json records it (formats.FORMAT.max_abs_diff; per output: "
                   "max_abs_diff_per_output)",
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    runs.write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
