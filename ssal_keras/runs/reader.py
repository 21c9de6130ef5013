"""A finished training run read back: its model, class names, typed config and data, and
scored (``evaluate_run``).

Every tool that works on a run folder (``evaluate``, ``analyze``, ``export``) reads it here, so
a run folder is checked, and its data found again, in one way. It sits above training: reading
a run needs its typed config (``training.config``) and its device settings.
"""

import dataclasses
import json
import os

import keras

from ssal_keras import data
from ssal_keras.evaluation import scoring
# Importing the model code registers its Keras classes, which safe_mode loading looks up.
from ssal_keras.modeling import model as _registers_model_classes  # noqa: F401
from ssal_keras.runs import writer
from ssal_keras.training import device_policy
from ssal_keras.training import schedules as _registers_schedules  # noqa: F401
from ssal_keras.training.config import read_config


@dataclasses.dataclass
class TrainedRun:
    """A run folder's contents.

    Attributes:
        model_dir: str. The run folder.
        model: keras.Model. ``model.keras`` (an ``SSALModel`` or a plain classifier).
        class_names: list of str or None. ``class_names.json``.
        config: RunConfig or None. The run's settings (``run.json``, or an older run's
            ``flags.txt``); None for a folder holding only a model.
    """

    model_dir: str
    model: object
    class_names: list | None
    config: object | None

    def load_data(self, *, dataset=None, data_dir=None, eval_examples=None, held_out=False):
        """The run's dataset again: its evaluation split and, on request, its held-out part.

        Args:
            dataset: str or None. Dataset spec; None: the run's ``--dataset``.
            data_dir: str or None. Data folder; None: the run's ``--data_dir``.
            eval_examples: int or None. Cap on evaluation examples; None: the run's cap.
            held_out: bool. Also return the training images the run kept out of training
                (``--held_out_examples``, the same images whatever the run's seed).

        Returns:
            ``(Dataset, held_out)``: ``held_out`` an unbatched ``tf.data.Dataset`` or None.

        Raises:
            ValueError: when the data's images do not fit the model, or ``held_out`` is asked
                of a run that kept none.
        """
        config = self.config
        spec = self.dataset_spec(dataset)
        if eval_examples is None and config:
            eval_examples = config.eval_examples
        held_out_examples = config.held_out_examples if config else 0
        if held_out and not held_out_examples:
            raise ValueError(f"the run in {self.model_dir} kept no held-out training images "
                             "(held_out_examples=0); train with --held_out_examples=N, or "
                             "use the test split.")
        loaded, held_out_split = data.load(
            spec, data_dir=data_dir or (config.data_dir if config else None), train_examples=1,
            eval_examples=eval_examples, held_out_examples=held_out_examples if held_out else 0,
            image_size=config.image_size if config else None)
        expected = tuple(self.model.inputs[0].shape[1:])
        if tuple(loaded.image_shape) != expected:
            raise ValueError(f"{spec} has images of {loaded.image_shape} but the model takes "
                             f"{expected}; use the data it was trained for.")
        return loaded, held_out_split

    def dataset_spec(self, dataset=None):
        """``dataset`` if given, else the run's ``--dataset`` (the default dataset for a folder
        holding only a model)."""
        return dataset or (self.config.dataset if self.config else data.DEFAULT_DATASET)

    @property
    def jit_compile(self):
        """Whether the run's setting compiles with XLA on this machine, so an evaluation here
        compiles its forward pass as the run's own did."""
        if not self.config:
            return True
        return device_policy.jit_compile(self.config.jit_compile,
                                         self.config.resolve().backbone.name)[0]

    @property
    def eval_batch_size(self):
        """The run's evaluation batch size (bfloat16 figures depend on the batch shapes)."""
        return self.config.eval_batch_size if self.config else 256


def load(model_dir):
    """Reads a run folder written by ``python -m ssal_keras.train`` (or any folder holding a
    ``model.keras``).

    Raises:
        FileNotFoundError: when the folder or its ``model.keras`` is missing.
        ValueError: when the model or the class names cannot be read.
    """
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model_dir {model_dir} does not exist; give a run folder "
                                f"holding {writer.MODEL_FILE}.")
    path = os.path.join(model_dir, writer.MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no {writer.MODEL_FILE} in {model_dir}: the run has not finished (resume it with "
            f"python -m ssal_keras.train and its flags) or this is not a run folder.")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many kinds for a bad file
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"cannot load {path} as a Keras model ({type(error).__name__}: "
                         f"{message}); re-save it with model.save().") from None
    class_names = None
    names_path = os.path.join(model_dir, writer.CLASS_NAMES_FILE)
    if os.path.exists(names_path):
        try:
            with open(names_path, encoding="utf-8") as f:
                class_names = json.load(f)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {names_path}: {error}.") from None
    return TrainedRun(model_dir=model_dir, model=model, class_names=class_names,
                      config=read_config(model_dir))


def evaluate_run(model_dir, *, dataset=None, data_dir=None, eval_examples=None,
                 batch_size=None):
    """Scores a finished run folder on its evaluation split: what
    ``python -m ssal_keras.evaluate`` prints, and, with the defaults, the run's own final
    figures bit for bit (its data, caps, ``image_size``, ``eval_batch_size`` and XLA setting,
    read back from ``run.json``).

    Args:
        model_dir: str. A run folder holding ``model.keras``.
        dataset, data_dir, eval_examples: Overrides of the run's data settings (None: the
            run's).
        batch_size: int or None. Evaluation batch size (None: the run's).

    Returns:
        dict. ``dataset`` and ``evaluate``'s metrics.

    Raises:
        FileNotFoundError, ValueError: a folder without a model, data that does not fit it.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; received {batch_size}.")
    run = load(model_dir)
    split, _ = run.load_data(dataset=dataset, data_dir=data_dir, eval_examples=eval_examples)
    metrics, _ = scoring.score(run.model, split.eval,
                               batch_size=batch_size or run.eval_batch_size,
                               image_size=split.image_size, jit_compile=run.jit_compile)
    return {"dataset": run.dataset_spec(dataset), **metrics}
