"""``RunConfig``: every setting of a training run, typed and checked, in one frozen record.

The field names are the flags of ``python -m ssal_keras.train`` (the CLI turns its flags into
a ``RunConfig``; ``ssal_keras.training.train`` takes one). A run folder keeps its config as
``run.json``, the one record that resuming, ``evaluate``, ``analyze`` and ``export`` read back.

    >>> from ssal_keras.training import RunConfig
    >>> config = RunConfig(epochs=2, batch_size=64)
    >>> config.epochs, config.learning_rate
    (2, 0.1)
    >>> RunConfig.from_json(config.to_json()) == config
    True
    >>> RunConfig(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: epochs=0: must be an integer >= 1.
"""

import dataclasses
import json
import math
import numbers
import os

from ssal_keras import grouping as grouping_lib
from ssal_keras import data, runs
from ssal_keras.data import pipelines
from ssal_keras.modeling import backbones, heads, losses, paper
from ssal_keras.modeling import weight_decay as weight_decay_lib
from ssal_keras.modeling.joint import validate_alpha
from ssal_keras.training import device_policy, flagfile, resolved

AUTO = "auto"
SCHEDULES = ("slanted_triangular", "warmup_step", "warmup_cosine", "constant",
             "epoch_triangular", "piecewise_linear")
#: Settings that may change between the start of a run and its resumption.
RESUMABLE_CHANGES = frozenset({"log_every_steps", "checkpoint_steps", "eval_batch_size",
                               "jit_compile"})
#: Settings whose default changed: a run recorded before the setting existed ran with this.
LEGACY_VALUES = {"shuffle": pipelines.LEGACY_SHUFFLE}
#: Options of the training CLI that are not settings of the run (they may stand in a
#: flagfile, but the run's record leaves them out).
CLI_OPTIONS = ("model_dir", "reference", "dry_run")


def _setting(default, help_text, *, choices=None, minimum=None, repeated=False,
             boolean_aliases=None, old_spellings=None):
    """A ``RunConfig`` field: its default, its help line (the CLI's) and its checks.

    ``boolean_aliases``: ``(value of true, value of false)`` of a choice that was a bool
    flag, so that ``--name``, ``--noname``, ``--name=true`` and the bools of older
    ``run.json`` files keep their meaning. ``old_spellings``: ``{former value: value}`` of a
    choice renamed, so that older recipes, command lines and ``run.json`` files still read.
    """
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={
        "help": help_text, "choices": choices, "minimum": minimum, "repeated": repeated,
        "boolean_aliases": boolean_aliases,
        "old_spellings": old_spellings or {}})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a training run (the flags of ``python -m ssal_keras.train``).

    Construct it with keyword arguments, ``RunConfig.from_flagfile(recipe, **overrides)`` or
    ``RunConfig.from_json(text)``; ``dataclasses.replace(config, epochs=3)`` derives another.
    List settings are tuples. A setting left at None takes the ``paper_model``'s value where it
    has one, else the documented default.

    Raises:
        ValueError: on construction, naming the first setting that is unknown, of the wrong
            type or out of range, and what is valid.
    """

    # --- data ------------------------------------------------------------------------------
    dataset: str = _setting(data.DEFAULT_DATASET, "fashion_mnist, tfds:NAME, folder:PATH or "
                            "npz:PATH (ssal_keras.data.load).")
    data_dir: str | None = _setting(None, "Data folder (TFDS data_dir, IDX files).")
    train_examples: int | None = _setting(None, "Cap on training examples.", minimum=1)
    eval_examples: int | None = _setting(None, "Cap on evaluation examples.", minimum=1)
    image_size: int | None = _setting(
        None, "Resize to N x N (ImageNet-style random-resized crops for training, resize and "
        "centre crop for evaluation); needed for datasets whose images differ in size.",
        minimum=1)
    held_out_examples: int = _setting(
        0, "Training examples kept out of training; a baseline scores its confusion matrix on "
        "them for --groupings=auto of later SSAL runs.", minimum=0)
    augment: str = _setting(
        "shift_flip", "Training augmentation: integer shifts of -4..4 px with symmetric fill "
        "and flips (docs/authors_settings.md, section 7.1); with --image_size, random-resized "
        "crops and flips.",
        choices=("none", "shift", "shift_flip"))
    shuffle: str = _setting(
        "full", "Order of the training examples: full, a new seeded permutation of the whole "
        "training set every epoch (the authors' order; needs a source with random access: "
        "Fashion-MNIST, npz, folders, TFDS sets held in memory); buffer:N, tf.data's shuffle "
        "through N examples (sources read from files front to back, e.g. ImageNet in TFDS).")
    crop_area: tuple[float, ...] = _setting(
        (), "With --image_size: min,max area of torchvision's random-resized crops, as "
        "fractions of the image (the authors' ImageNet run: 0.3,1.3333, "
        "docs/authors_settings.md, section 7.2); "
        "empty: Inception-style crops of area 0.08-1 (tf.image's sampler).")
    color_jitter: float = _setting(
        0.0, "With --image_size: brightness, contrast and saturation jitter strength "
        "(torchvision ColorJitter; the authors' ImageNet run: 0.4).")
    normalization: str = _setting(
        "scale", "Input normalisation inside the model: /255, the training split's "
        "per-channel mean/std, or the fixed ImageNet mean/std.",
        choices=("none", "scale", "mean_std", "imagenet"))
    # --- model -----------------------------------------------------------------------------
    paper_model: str | None = _setting(
        None, "A key of ssal_keras.PAPER_MODELS: its backbone, taps, heads, loss weights and "
        "alpha become the defaults.", choices=tuple(paper.PAPER_MODELS))
    backbone: str | None = _setting(
        None, f"ssal_keras.backbones.build name (default {resolved.DEFAULT_BACKBONE}).",
        choices=tuple(backbones.BACKBONE_NAMES))
    groupings: tuple[str, ...] = _setting(
        (), "Grouping files (one per branch), 'auto', or empty for a baseline.")
    grouping_source: str | None = _setting(
        None, "Baseline run folder whose held-out confusion drives --groupings=auto.")
    num_groups: tuple[int, ...] = _setting((), "Group counts of --groupings=auto, per branch.")
    grouping_criterion: str = _setting("join_similar", "Criterion of auto groupings.",
                                       choices=("join_similar", "split_similar"))
    grouping_tie_break: str = _setting(
        "random", "Ties of auto groupings: random (seeded) or authors (their "
        "create_grouping_v2 exactly, distances from the raw maximum; "
        "docs/authors_settings.md, section 10.2).",
        choices=tuple(grouping_lib.TIE_BREAKS))
    taps: tuple[str, ...] = _setting(
        (), "Tap of each branch: stageN (the output of stage N), stageN_blockM (of one block), "
        "transitionN (DenseNet-BC), or a layer name; ssal_keras.backbones.taps(model) lists "
        "a model's.")
    head: tuple[str, ...] = _setting(
        (), "Head of each branch, in order: default (heads.DEFAULT_HEAD), a preset ("
        + ", ".join(heads.HEAD_PRESETS) + ") or blocks separated by spaces ('cbr(64,3) "
        "gap'; ssal_keras.heads).", repeated=True)
    head_style: str | None = _setting(
        None, "Layer settings of the heads, a name of ssal_keras.heads.HEAD_STYLES (default: "
        "the paper model's, else authors_keras).", choices=tuple(heads.HEAD_STYLES))
    zero_init_residual: bool | None = _setting(
        None, "resnet50_imagenet: start the last BatchNorm of every block at 0 (default: the "
        "paper model's, else off).")
    loss_weights: tuple[float, ...] = _setting((), "Loss weight of each branch (default 1).")
    alpha: float | None = _setting(None, "Combination exponent of the joint prediction "
                                   f"(default: the paper model's, else {resolved.DEFAULT_ALPHA}).")
    objective: str = _setting("multitask", "multitask: the paper's loss; joint: the joint "
                              "output alone (supplement E.1).", choices=("multitask", "joint"))
    # --- optimisation ----------------------------------------------------------------------
    epochs: int = _setting(10, "Epochs.", minimum=1)
    batch_size: int = _setting(128, "Global batch size (all replicas).", minimum=1)
    learning_rate: float = _setting(0.1, "Peak learning rate.")
    momentum: float = _setting(0.9, "SGD momentum.", minimum=0)
    nesterov: bool = _setting(False, "Nesterov momentum.")
    weight_decay: float = _setting(
        5e-4, "Weight decay, the gradient term wd * w (PyTorch SGD's; a Keras l2(c) is 2c), "
        "of the parameter classes of --weight_decay_params.", minimum=0)
    weight_decay_params: tuple[str, ...] = _setting(
        weight_decay_lib.DEFAULT_DECAYED, "Parameter classes decayed at --weight_decay: "
        + ", ".join(weight_decay_lib.PARAMETER_CLASSES) + " (ssal_keras.weight_decay).")
    aux_weight_decay: float | None = _setting(
        None, "Weight decay of the classes of --aux_weight_decay_params (default "
        "--weight_decay).", minimum=0)
    aux_weight_decay_params: tuple[str, ...] = _setting(
        weight_decay_lib.DEFAULT_AUX_DECAYED, "Parameter classes decayed at --aux_weight_decay.")
    schedule: str = _setting(
        "slanted_triangular", "Learning-rate schedule: per step, "
        "ssal_keras.training.schedules.WarmupSchedule; epoch_triangular, the authors' CIFAR "
        "one (EpochTriangularSchedule); piecewise_linear, their ImageNet one "
        "(PiecewiseLinearSchedule).", choices=SCHEDULES)
    warmup_epochs: float = _setting(10.0, "Epochs of linear warm-up (whole epochs for "
                                    "epoch_triangular and piecewise_linear).", minimum=0)
    lr_drop_epochs: tuple[int, ...] = _setting(
        (30, 60, 80), "Epochs where warmup_step multiplies the rate by 0.1.")
    label_smoothing: float = _setting(0.0, "Label smoothing of every output.")
    label_smoothing_mode: str = _setting(
        "uniform", "uniform: the label gets 1-s+s/K; others: 1-s, and s/(K-1) each other "
        "class (the authors', docs/authors_settings.md, section 7.1).",
        choices=tuple(losses.SMOOTHING_MODES))
    mixed_precision: str = _setting(
        "float32", "Compute precision (float32 variables and outputs): float32, bfloat16, "
        "float16 (with loss scaling, for GPUs without bfloat16), or auto: bfloat16 where the "
        "device computes it natively (BUILD_NOTES.md, 'Mixed precision'). A bare "
        "--mixed_precision means bfloat16; 'off', its former spelling of float32, still reads.",
        choices=device_policy.PRECISION_SETTINGS, boolean_aliases=("bfloat16", "float32"),
        old_spellings={"off": "float32"})
    jit_compile: str = _setting(
        "auto", "Compile the per-replica step with XLA: true, false, or auto: on GPUs, and on "
        "CPUs for the backbones it was measured to speed up (BUILD_NOTES.md, 'Training speed "
        "on the paper's models').", choices=device_policy.JIT_SETTINGS,
        boolean_aliases=("true", "false"))
    seed: int = _setting(0, "Seed of weights, data order, augmentation and ties.")
    # --- devices, checkpoints, logs --------------------------------------------------------
    strategy: str = _setting("default", "tf.distribute strategy; multi_worker reads TF_CONFIG.",
                             choices=("default", "mirrored", "multi_worker"))
    logical_cpu_devices: int = _setting(
        1, "Split the CPU into N devices (mirrored training without GPUs).", minimum=1)
    sync_batch_norm: bool = _setting(
        True, "Under several replicas, compute BatchNorm statistics over the global batch (on "
        "CPU replicas this keeps the step out of XLA).")
    checkpoint_steps: int = _setting(0, "Also checkpoint every N steps (always once an "
                                     "epoch).", minimum=0)
    log_every_steps: int = _setting(50, "Steps between progress lines.", minimum=1)
    eval_batch_size: int = _setting(256, "Evaluation batch size.", minimum=1)

    # === Construction ======================================================================
    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = _typed(field, flagfile.unaliased(field, getattr(self, field.name)))
            object.__setattr__(self, field.name, value)
            _check_range(field, value)
        self._check_together()

    @classmethod
    def from_flagfile(cls, path, **overrides):
        """The settings of a recipe (``path``: one flagfile or a list of them, read in order,
        by the rules of ``ssal_keras.training.flagfile``), then ``overrides``, which win.

        Lines naming the CLI's own options (``--model_dir``, ``--reference``, ``--dry_run``)
        are skipped; any other unknown name is an error naming the file.
        """
        values = flagfile.read(path, repeated=REPEATED)
        return cls(**{**flagfile.parse_settings(values, FIELDS, source=path,
                                                skipped=CLI_OPTIONS), **overrides})

    @classmethod
    def from_legacy_flags(cls, path):
        """The config of a run folder written before ``run.json``: its ``flags.txt``, every
        flag in flagfile form, paths as given on the command line that started it."""
        values = flagfile.read(path, repeated=REPEATED, relative_paths=False)
        return cls(**{**LEGACY_VALUES, **flagfile.parse_settings(
            values, FIELDS, source=path, skipped=CLI_OPTIONS)})

    @classmethod
    def from_dict(cls, values):
        """A config from ``to_dict``'s form (lists for tuples); unknown keys are errors. A
        record without a setting of ``LEGACY_VALUES`` was written before it existed and ran
        with that value."""
        if not isinstance(values, dict):
            raise ValueError(f"a run config must be a JSON object; received "
                             f"{type(values).__name__}.")
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}; the settings are the fields of "
                             "RunConfig (python -m ssal_keras.train --help).")
        return cls(**{**LEGACY_VALUES, **values})

    @classmethod
    def from_json(cls, text):
        try:
            values = json.loads(text)
        except ValueError as error:
            raise ValueError(f"a run config must be JSON ({error}).") from None
        return cls.from_dict(values)

    def to_dict(self):
        """Plain JSON types: every field, tuples as lists."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def differences(self, other):
        """Names of the settings (but the ``RESUMABLE_CHANGES``) where ``other`` differs."""
        return [f.name for f in dataclasses.fields(self)
                if f.name not in RESUMABLE_CHANGES
                and getattr(self, f.name) != getattr(other, f.name)]

    # === Resolved settings ===================================================================
    @property
    def paper(self):
        """The ``PaperConfig`` of ``paper_model``, or None."""
        return paper.PAPER_MODELS[self.paper_model] if self.paper_model else None

    @property
    def num_branches(self):
        """SSAL branches of the run (0: a baseline)."""
        return len(self.num_groups) if self.groupings == (AUTO,) else len(self.groupings)

    def resolve(self):
        """The run's settings resolved once into named records (``training.resolved``):
        what the model builder, the trainer and ``--dry_run`` take."""
        return resolved.resolve(self, self.num_branches)

    # === Checks across settings ==============================================================
    def _check_together(self):
        _check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0")
        if self.alpha is not None:
            validate_alpha(self.alpha)
        _check(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing,
               "must be in [0, 1)")
        self._check_augment()
        # Only MirroredStrategy runs on the logical CPU devices; elsewhere the split is unused.
        _check(self.logical_cpu_devices == 1 or self.strategy == "mirrored",
               "logical_cpu_devices", self.logical_cpu_devices,
               f"splits the CPU for strategy=mirrored; with strategy={self.strategy!r} it would "
               "be ignored")
        self._check_model()
        self._check_branches()
        _check(self.schedule not in ("epoch_triangular", "piecewise_linear")
               or float(self.warmup_epochs).is_integer(), "warmup_epochs", self.warmup_epochs,
               f"schedule={self.schedule} warms up over whole epochs; give an integer")
        try:
            resolved.resolve_schedule(self).learning_rate_schedule(steps_per_epoch=1)
        except ValueError as error:
            raise ValueError(f"schedule={self.schedule}: {error}") from None
        weight_decay_lib.check_classes(self.weight_decay_params, self.aux_weight_decay_params)

    def _check_augment(self):
        pipelines.parse_shuffle(self.shuffle)
        area = self.crop_area
        _check(not area or (len(area) == 2 and 0 < area[0] <= area[1]), "crop_area", area,
               "must be two numbers min,max with 0 < min <= max")
        _check(0 <= self.color_jitter < 1, "color_jitter", self.color_jitter,
               "must be in [0, 1)")
        _check(not (area or self.color_jitter) or self.image_size, "image_size",
               self.image_size, "crop_area and color_jitter act on random-resized crops: "
               "give image_size (ImageNet-style data)")

    def _check_model(self):
        source = self.paper
        if source and self.backbone and self.backbone != source.backbone:
            raise ValueError(f"backbone={self.backbone!r} contradicts paper_model="
                             f"{self.paper_model!r}, whose backbone is {source.backbone!r}; "
                             "drop one of them.")
        try:
            resolved.resolve_backbone(self)
        except ValueError as error:
            raise ValueError(f"backbone: {error}") from None

    def _check_branches(self):
        if AUTO in self.groupings:
            _check(self.groupings == (AUTO,), "groupings", self.groupings,
                   "'auto' stands alone: give auto or grouping files")
            _check(self.num_groups, "num_groups", self.num_groups,
                   "groupings=auto needs the group count of each branch, e.g. (20, 33, 50)")
            _check(self.grouping_source, "grouping_source", self.grouping_source,
                   "groupings=auto needs a baseline run folder trained with "
                   "held_out_examples=N")
        for count in self.num_groups:
            _check(count >= 2, "num_groups", self.num_groups, "each count must be >= 2")
        if not self.num_branches:
            return
        branches = resolved.resolve_branches(self, self.num_branches)
        for name, values in (("taps", branches.taps), ("head", branches.heads),
                             ("loss_weights", branches.loss_weights)):
            _check(len(values) == self.num_branches, name, getattr(self, name) or tuple(values),
                   f"has {len(values)} entries but there are {self.num_branches} groupings; "
                   "give one per branch")
        for layout in branches.heads:
            try:
                heads.resolve_layout(layout)
            except ValueError as error:
                raise ValueError(f"head: {error}") from None


REPEATED = frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata["repeated"])
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


def _check(ok, name, value, problem):
    if not ok:
        raise ValueError(f"{name}={value!r}: {problem}.")


def _is(value, kind):
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:
        return (isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, kind)


def _typed(field, value):
    """``value`` checked against the field's type (lists become tuples, ints floats)."""
    kind, item, optional = flagfile.type_parts(field)
    if value is None and optional:
        return None
    name = item.__name__ if item else kind.__name__
    if item is not None:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
                _is(v, item) for v in value):
            raise ValueError(f"{field.name}={value!r}: must be a list of {name}.")
        return tuple(item(v) for v in value)
    if not _is(value, kind):
        valid = f"{name} or None" if optional else name
        raise ValueError(f"{field.name}={value!r}: must be {valid}.")
    return kind(value)


def _check_range(field, value):
    choices, minimum = field.metadata["choices"], field.metadata["minimum"]
    if value is None:
        return
    if choices and value not in choices:
        raise ValueError(f"{field.name}={value!r}: not a valid value; valid: "
                         f"{', '.join(choices)}.")
    if minimum is not None and value < minimum:
        kind = "an integer" if isinstance(value, int) else "a number"
        raise ValueError(f"{field.name}={value!r}: must be {kind} >= {minimum}.")


def read_config(model_dir):
    """The ``RunConfig`` a run was started with: ``run.json``, else an older run's
    ``flags.txt`` (flagfile lines, read as they were written); None when it has neither.

    Raises:
        ValueError: naming the file, when it holds no valid config.
    """
    path = os.path.join(model_dir, runs.CONFIG_FILE)
    legacy = os.path.join(model_dir, runs.LEGACY_FLAGS_FILE)
    try:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return RunConfig.from_json(f.read())
        if os.path.exists(legacy):
            return RunConfig.from_legacy_flags(legacy)
    except ValueError as error:
        shown = path if os.path.exists(path) else legacy
        raise ValueError(f"{shown} holds no valid run config ({error}); restore the "
                         "file, or train into a new --model_dir.") from None
    return None
