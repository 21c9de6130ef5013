"""Hierarchy-aware metrics: ``mistakes_within_group``, the share of the base and joint outputs'
wrong predictions whose predicted class lies in the true class's group, per branch.

The computation is checked on hand-made predictions with a known answer; then one small SSAL
run, trained in-process by the trainer the CLI uses, is checked where a user reads the figure:
its ``metrics.json``, ``evaluate_run``, ``python -m ssal_keras.evaluate`` and
``python -m ssal_keras.analyze summary``.
"""

import json
import os
import shutil

import numpy as np
import pytest

from ssal_keras import runs as run_files
from ssal_keras.evaluation import scoring
from ssal_keras.runs.reader import evaluate_run
from ssal_keras.training import train
from tests.conftest import ROOT, metrics, run_clis_at_once, small_config

GROUPING_FILE = os.path.join(ROOT, "models", "groupings", "fashion_mnist_3.txt")


def _one_hot(classes, depth):
    """Probabilities that put all their mass on ``classes`` (what argmax reads back)."""
    return np.eye(depth, dtype=np.float32)[np.asarray(classes)]


# --- the computation, on a known answer -----------------------------------------------------
LABELS = np.array([0, 1, 2, 3, 0, 2, 1, 3])
# Base: wrong at 0 (0->1, same group), 2 (2->3, same), 3 (3->0, other), 4 (0->2, other).
BASE_PREDICTED = np.array([1, 1, 3, 0, 2, 2, 1, 3])
# Joint: wrong at 0 only (0->1, same group under [0, 0, 1, 1]).
JOINT_PREDICTED = np.array([1, 1, 2, 3, 0, 2, 1, 3])
GROUPINGS = [np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3])]


def _ssal_outputs(rows):
    """The SSAL outputs (``base``, ``aux_<b>``, ``joint``) of the examples ``rows``."""
    predictions = {"base": _one_hot(BASE_PREDICTED[rows], 4),
                   "joint": _one_hot(JOINT_PREDICTED[rows], 4)}
    for b, g in enumerate(GROUPINGS):
        predictions[f"aux_{b}"] = _one_hot(g[LABELS[rows]], int(g.max()) + 1)
    return predictions


def test_counts_of_mistakes_within_group():
    assert scoring.mistakes_within_group(BASE_PREDICTED, LABELS, [0, 0, 1, 1]) == (4, 2)
    assert scoring.mistakes_within_group(BASE_PREDICTED, LABELS, [0, 1, 2, 3]) == (4, 0)
    assert scoring.mistakes_within_group(LABELS, LABELS, [0, 0, 1, 1]) == (0, 0)


def test_streamed_batches_give_the_known_shares():
    # Two uneven batches add up to the figures of the whole set: counts, not batch means.
    accuracy = scoring.Accuracy(GROUPINGS, num_classes=4)
    accuracy.update(_ssal_outputs(slice(0, 3)), LABELS[:3])
    accuracy.update(_ssal_outputs(slice(3, None)), LABELS[3:])
    result = accuracy.result()
    assert result["mistakes_within_group"] == {"base": [0.5, 0.0], "joint": [1.0, 0.0]}
    whole = scoring.Accuracy(GROUPINGS, num_classes=4)
    whole.update(_ssal_outputs(slice(None)), LABELS)
    assert whole.result()["mistakes_within_group"] == result["mistakes_within_group"]


def test_no_mistakes_gives_none_and_a_baseline_gives_empty_lists():
    perfect = scoring.Accuracy(GROUPINGS, num_classes=4)
    perfect.update({"base": _one_hot(LABELS, 4), "joint": _one_hot(LABELS, 4),
                    "aux_0": _one_hot(GROUPINGS[0][LABELS], 2),
                    "aux_1": _one_hot(LABELS, 4)}, LABELS)
    assert perfect.result()["mistakes_within_group"] == {"base": [None, None],
                                                         "joint": [None, None]}
    baseline = scoring.Accuracy([], num_classes=4)
    baseline.update(_one_hot(BASE_PREDICTED, 4), LABELS)  # a plain classifier's one output
    assert baseline.result()["mistakes_within_group"] == {"base": [], "joint": []}


# --- a real run, where a user reads the figure ----------------------------------------------
@pytest.fixture(scope="module")
def ssal_run(tmp_path_factory, fashion_dir):
    """A finished one-branch SSAL run folder (the 3-group Fashion-MNIST grouping)."""
    model_dir = str(tmp_path_factory.mktemp("hierarchy") / "ssal_seed0")
    train(small_config(fashion_dir, groupings=(GROUPING_FILE,), taps=("stage1",),
                       head=("gap",), jit_compile=False), model_dir, log=print)
    return model_dir


def test_the_run_records_the_share_and_evaluate_run_reproduces_it(ssal_run):
    record = metrics(ssal_run)
    shares = record["mistakes_within_group"]
    assert set(shares) == {"base", "joint"}
    for output in ("base", "joint"):
        assert len(shares[output]) == 1 and 0.0 <= shares[output][0] <= 1.0, shares
    # Every epoch's evaluation carries it too (the same scoring.score).
    assert record["history"][-1]["eval"]["mistakes_within_group"] == shares
    # Bit for bit: the same batches, the same compiled function, integer counts.
    assert evaluate_run(ssal_run)["mistakes_within_group"] == shares


def test_evaluate_cli_and_summary_report_it(ssal_run, tmp_path):
    record = metrics(ssal_run)
    # A second "seed" (a copy: equal figures) and a baseline whose metrics.json predates the
    # figure: the summary averages what is there and leaves the rest out.
    root = tmp_path / "runs"
    shutil.copytree(ssal_run, root / "ssal_seed0")
    shutil.copytree(ssal_run, root / "ssal_seed1")
    os.makedirs(root / "baseline_seed0")
    run_files.write_json(str(root / "baseline_seed0" / run_files.METRICS_FILE), {
        "completed": True, "base_top1": 0.5, "joint_top1": None, "aux_top1": []})
    out = tmp_path / "docs"
    results = run_clis_at_once({
        "evaluate": ("ssal_keras.evaluate", f"--model_dir={ssal_run}"),
        "summary": ("ssal_keras.analyze", "summary", f"--output_dir={out}",
                    f"--runs=baseline={root}/baseline_seed*", f"--runs=ssal={root}/ssal_seed*"),
    })
    for name, (returncode, _, stderr) in results.items():
        assert returncode == 0, (name, stderr[-3000:])

    printed = json.loads(results["evaluate"][1].strip().splitlines()[-1])
    assert printed["mistakes_within_group"] == record["mistakes_within_group"]

    with open(out / "summary.json") as f:
        report = json.load(f)
    for output in ("base", "joint"):
        (branch,) = report["ssal"]["mistakes_within_group"][output]
        assert branch["n"] == 2 and branch["std"] == 0.0
        assert branch["mean"] == pytest.approx(record["mistakes_within_group"][output][0])
    assert report["baseline"]["mistakes_within_group"] == {"base": [], "joint": []}
    table = (out / "summary.md").read_text()
    assert table in results["summary"][1]
    header, _, *rows = table.splitlines()
    assert "base mistakes within aux_0 groups" in header
    assert "joint mistakes within aux_0 groups" in header
    ssal_row = next(row for row in rows if row.startswith("| ssal "))
    share = record["mistakes_within_group"]["joint"][0]
    assert ssal_row.rstrip(" |").endswith(f"{100 * share:.2f} ± 0.00")
