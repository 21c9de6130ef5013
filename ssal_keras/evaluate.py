r"""Evaluates a finished run: ``python -m ssal_keras.evaluate --model_dir=DIR``.

Reads ``DIR/model.keras`` and scores it on the evaluation split of the run's dataset (or of
``--dataset``): top-1 and top-5 of the base output (+TR) and the joint output (+JP), and each
branch's group accuracy. Prints one JSON object; ``--output=FILE`` also writes it.
"""

import json
import os

import keras
from absl import flags

import ssal_keras  # noqa: F401  (registers the custom layers for safe_mode loading)
from ssal_keras import cli, data, evaluation, rundir

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A run folder holding model.keras.")
_DATASET = flags.DEFINE_string("dataset", None, "Dataset spec (default: the run's --dataset).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data folder (default: the run's).")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", None, "Cap on evaluation examples "
                                      "(default: the run's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the metrics to this JSON file.")


def run():
    """Loads the run's model, scores it and prints the metrics."""
    if not _MODEL_DIR.value:
        raise cli.UsageError("--model_dir is required: a run folder holding model.keras.")
    path = os.path.join(_MODEL_DIR.value, rundir.MODEL_FILE)
    if not os.path.exists(path):
        raise cli.UsageError(f"{path} does not exist: the run has not finished (resume it with "
                             "python -m ssal_keras.train and its flags).")
    if _BATCH_SIZE.value < 1:
        raise cli.UsageError(f"--batch_size must be >= 1; received {_BATCH_SIZE.value}.")
    saved = rundir.read_flags(_MODEL_DIR.value)
    spec = _DATASET.value or saved.get("dataset", "fashion_mnist")
    eval_examples = _EVAL_EXAMPLES.value
    if eval_examples is None and "eval_examples" in saved:
        eval_examples = int(saved["eval_examples"])
    image_size = int(saved["image_size"]) if "image_size" in saved else None
    model = keras.saving.load_model(path, safe_mode=True)
    dataset, _ = data.load(spec, data_dir=_DATA_DIR.value or saved.get("data_dir"),
                           train_examples=1, eval_examples=eval_examples, image_size=image_size)
    expected = tuple(model.inputs[0].shape[1:])
    if tuple(dataset.image_shape) != expected:
        raise cli.UsageError(f"{spec} has images of {dataset.image_shape} but the model takes "
                             f"{expected}; evaluate it on the data it was trained for.")
    metrics, _ = evaluation.evaluate(model, data.eval_pipeline(dataset, batch_size=_BATCH_SIZE.value))
    metrics = {"dataset": spec, **metrics}
    text = json.dumps(metrics)
    print(text, flush=True)
    if _OUTPUT.value:
        rundir.write_json(_OUTPUT.value, metrics)


if __name__ == "__main__":
    cli.run(run, prog="evaluate")
