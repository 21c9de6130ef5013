r"""Evaluates a finished run: ``python -m ssal_keras.evaluate --model_dir=DIR``.

Reads ``DIR/model.keras`` and scores it on the evaluation split of the run's dataset (or of
``--dataset``): top-1 and top-5 of the base output (+TR) and the joint output (+JP), each
branch's group accuracy, and ``mistakes_within_group``: per branch, the share of the base and
joint outputs' wrong predictions whose predicted class lies in the true class's group
(``{"base": [...], "joint": [...]}``; empty lists for a baseline, None where an output made no
mistake). Prints one JSON object (one line, so scripts can parse it); ``--output=FILE`` also
writes it.
"""

import json

from absl import flags

from ssal_keras import cli, runs
from ssal_keras.runs import reader

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A run folder holding model.keras.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset spec (default: the run's --dataset).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default: the run's).")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", None, "Cap on evaluation examples "
                                      "(default: the run's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: the "
                                   "run's --eval_batch_size, so the figures equal the run's).")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the metrics to this JSON file.")


def run():
    """Scores the run's model (``runs.reader.evaluate_run``) and prints the metrics."""
    if not _MODEL_DIR.value:
        raise cli.UsageError("--model_dir is required: a run folder holding model.keras.")
    metrics = reader.evaluate_run(_MODEL_DIR.value, dataset=_DATASET.value,
                                   data_dir=_DATA_DIR.value, eval_examples=_EVAL_EXAMPLES.value,
                                   batch_size=_BATCH_SIZE.value)
    print(json.dumps(metrics), flush=True)
    if _OUTPUT.value:
        runs.write_json(_OUTPUT.value, metrics)


def main():
    """The ``ssal-evaluate`` console command; the same as ``python -m ssal_keras.evaluate``."""
    cli.run(run, prog="evaluate", module=__name__)


if __name__ == "__main__":
    main()
