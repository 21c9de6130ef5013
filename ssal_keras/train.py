r"""Trains a baseline or an SSAL model: ``python -m ssal_keras.train --flagfile=models/X.flags``.

    python -m ssal_keras.train --flagfile=models/fashion_mnist_ssal.flags \
        --model_dir=runs/fashion_mnist_ssal [--flag=value ...]

Flags on the command line override the flagfile. ``--model_dir`` is the run's folder
(``ssal_keras.rundir``); the same command again resumes the run from its last checkpoint.
A run with ``--groupings`` empty is a baseline; ``--groupings=FILE,FILE`` or ``auto`` (with
``--grouping_source=BASELINE_DIR`` and ``--num_groups``) trains an SSAL model.

Phases: strategy -> data -> groupings -> model and optimizer -> loop (``ssal_keras.loop``)
-> final evaluation, ``metrics.json`` and ``model.keras``.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
from absl import flags, logging

import ssal_keras
from ssal_keras import backbones, cli, data, distribute, heads, losses, loop, rundir, schedules
from ssal_keras import grouping as grouping_lib
from ssal_keras import weight_decay as weight_decay_lib

_RUN_FLAGS = []


def _define(kind, name, default, *rest):
    """``flags.DEFINE_<kind>``, remembering the flag so the run can write its flags."""
    holder = getattr(flags, f"DEFINE_{kind}")(name, default, *rest)
    _RUN_FLAGS.append(holder)
    return holder


# --- run and data --------------------------------------------------------------------------
_MODEL_DIR = _define("string", "model_dir", None, "The run's folder (created; resumed if it exists).")
_DATASET = _define("string", "dataset", "fashion_mnist",
                   "fashion_mnist, tfds:NAME, folder:PATH or npz:PATH (ssal_keras.data.load).")
_DATA_DIR = _define("string", "data_dir", None, "Data folder (TFDS data_dir, IDX files).")
_TRAIN_EXAMPLES = _define("integer", "train_examples", None, "Cap on training examples.")
_EVAL_EXAMPLES = _define("integer", "eval_examples", None, "Cap on evaluation examples.")
_IMAGE_SIZE = _define("integer", "image_size", None,
                      "Resize to N x N (ImageNet-style random-resized crops for training, "
                      "resize and centre crop for evaluation); needed for datasets whose "
                      "images differ in size.")
_HELD_OUT_EXAMPLES = _define(
    "integer", "held_out_examples", 0,
    "Training examples kept out of training; a baseline scores its confusion matrix on them "
    "for --groupings=auto of later SSAL runs.")
_AUGMENT = _define("enum", "augment", "shift_flip", ["none", "shift", "shift_flip"],
                   "Training augmentation: integer shifts of -4..4 px with symmetric fill and "
                   "flips (AUTHORS.md 7.1); with --image_size, random-resized crops and flips.")
_CROP_AREA = _define("list", "crop_area", [],
                     "With --image_size: min,max area of torchvision's random-resized crops, as "
                     "fractions of the image (the authors' ImageNet run: 0.3,1.3333, AUTHORS.md "
                     "7.2); empty: Inception-style crops of area 0.08-1 (tf.image's sampler).")
_COLOR_JITTER = _define("float", "color_jitter", 0.0,
                        "With --image_size: brightness, contrast and saturation jitter strength "
                        "(torchvision ColorJitter; the authors' ImageNet run: 0.4).")
_NORMALIZATION = _define("enum", "normalization", "scale",
                         ["none", "scale", "mean_std", "imagenet"],
                         "Input normalisation inside the model: /255, the training split's "
                         "per-channel mean/std, or the fixed ImageNet mean/std.")
# --- model ---------------------------------------------------------------------------------
_PAPER_MODEL = _define("string", "paper_model", None,
                       "A key of ssal_keras.PAPER_MODELS: its backbone, taps, heads, loss weights "
                       "and alpha become the defaults.")
_BACKBONE = _define("string", "backbone", None,
                    "ssal_keras.backbones.build name (default resnet_fashion_mnist).")
_GROUPINGS = _define("list", "groupings", [],
                     "Grouping files (one per branch), 'auto', or empty for a baseline.")
_GROUPING_SOURCE = _define("string", "grouping_source", None,
                           "Baseline run folder whose held-out confusion drives "
                           "--groupings=auto.")
_NUM_GROUPS = _define("list", "num_groups", [], "Group counts of --groupings=auto, per branch.")
_GROUPING_CRITERION = _define("enum", "grouping_criterion", "join_similar",
                              ["join_similar", "split_similar"], "Criterion of auto groupings.")
_GROUPING_TIE_BREAK = _define("enum", "grouping_tie_break", "random",
                              list(grouping_lib.TIE_BREAKS),
                              "Ties of auto groupings: random (seeded) or authors (their "
                              "create_grouping_v2 exactly, distances from the raw maximum; "
                              "AUTHORS.md 10).")
_TAPS = _define("list", "taps", [], "Tap of each branch (ssal_keras.backbones.taps).")
_HEADS = _define("multi_string", "head", [],
                 "Head of each branch, in order: a preset of ssal_keras.heads.HEAD_PRESETS or "
                 "blocks separated by spaces ('cbr(64,3) gap'); default heads.DEFAULT_HEAD.")
_HEAD_STYLE = _define("string", "head_style", None,
                      "Layer settings of the heads, a name of ssal_keras.heads.HEAD_STYLES "
                      "(default: the paper model's, else authors_keras).")
_ZERO_INIT_RESIDUAL = _define("bool", "zero_init_residual", None,
                              "resnet50_imagenet: start the last BatchNorm of every block at 0 "
                              "(default: the paper model's, else off).")
_LOSS_WEIGHTS = _define("list", "loss_weights", [], "Loss weight of each branch (default 1).")
_ALPHA = _define("float", "alpha", None, "Combination exponent of the joint prediction "
                 "(default: the paper model's, else 0.3).")
_OBJECTIVE = _define("enum", "objective", "multitask", ["multitask", "joint"],
                     "multitask: the paper's loss; joint: the joint output alone (supplement E.1).")
# --- optimisation --------------------------------------------------------------------------
_EPOCHS = _define("integer", "epochs", 10, "Epochs.")
_BATCH_SIZE = _define("integer", "batch_size", 128, "Global batch size (all replicas).")
_LEARNING_RATE = _define("float", "learning_rate", 0.1, "Peak learning rate.")
_MOMENTUM = _define("float", "momentum", 0.9, "SGD momentum.")
_NESTEROV = _define("bool", "nesterov", False, "Nesterov momentum.")
_WEIGHT_DECAY = _define("float", "weight_decay", 5e-4,
                        "Weight decay, the gradient term wd * w (PyTorch SGD's; a Keras l2(c) "
                        "is 2c), of the parameter classes of --weight_decay_params.")
_WEIGHT_DECAY_PARAMS = _define(
    "list", "weight_decay_params", list(weight_decay_lib.DEFAULT_DECAYED),
    "Parameter classes decayed at --weight_decay: "
    + ", ".join(weight_decay_lib.PARAMETER_CLASSES) + " (ssal_keras.weight_decay).")
_AUX_WEIGHT_DECAY = _define("float", "aux_weight_decay", None,
                            "Weight decay of the classes of --aux_weight_decay_params "
                            "(default --weight_decay).")
_AUX_WEIGHT_DECAY_PARAMS = _define(
    "list", "aux_weight_decay_params", list(weight_decay_lib.DEFAULT_AUX_DECAYED),
    "Parameter classes decayed at --aux_weight_decay.")
_SCHEDULE = _define("enum", "schedule", "slanted_triangular",
                    ["slanted_triangular", "warmup_step", "warmup_cosine", "constant",
                     "epoch_triangular", "piecewise_linear"],
                    "Learning-rate schedule: per step, ssal_keras.schedules.WarmupSchedule; "
                    "epoch_triangular, the authors' CIFAR one (EpochTriangularSchedule); "
                    "piecewise_linear, their ImageNet one (PiecewiseLinearSchedule).")
_WARMUP_EPOCHS = _define("float", "warmup_epochs", 10,
                         "Epochs of linear warm-up (whole epochs for epoch_triangular and "
                         "piecewise_linear).")
_LR_DROP_EPOCHS = _define("list", "lr_drop_epochs", ["30", "60", "80"],
                          "Epochs where warmup_step multiplies the rate by 0.1.")
_LABEL_SMOOTHING = _define("float", "label_smoothing", 0.0, "Label smoothing of every output.")
_LABEL_SMOOTHING_MODE = _define("enum", "label_smoothing_mode", "uniform",
                                list(losses.SMOOTHING_MODES),
                                "uniform: the label gets 1-s+s/K; others: 1-s, and s/(K-1) each "
                                "other class (the authors', AUTHORS.md 7.1).")
_MIXED_PRECISION = _define("bool", "mixed_precision", False,
                           "Compute in bfloat16 (mixed_bfloat16; float32 variables and outputs).")
_JIT_COMPILE = _define("bool", "jit_compile", True, "Compile the per-replica step with XLA.")
_SEED = _define("integer", "seed", 0, "Seed of weights, data order, augmentation and ties.")
# --- devices, checkpoints, logs ------------------------------------------------------------
_STRATEGY = _define("enum", "strategy", "default", ["default", "mirrored", "multi_worker"],
                    "tf.distribute strategy; multi_worker reads TF_CONFIG.")
_LOGICAL_CPU_DEVICES = _define("integer", "logical_cpu_devices", 1,
                               "Split the CPU into N devices (mirrored training without GPUs).")
_SYNC_BATCH_NORM = _define("bool", "sync_batch_norm", True,
                           "Under several replicas, compute BatchNorm statistics over the global "
                           "batch (on CPU replicas this keeps the step out of XLA).")
_CHECKPOINT_STEPS = _define("integer", "checkpoint_steps", 0,
                            "Also checkpoint every N steps (always once an epoch).")
_LOG_EVERY_STEPS = _define("integer", "log_every_steps", 50, "Steps between progress lines.")
_EVAL_BATCH_SIZE = _define("integer", "eval_batch_size", 256, "Evaluation batch size.")
# Not settings of the run, so not in its record.
_REFERENCE = flags.DEFINE_string(
    "reference", None, "A JSON file of a measured reference figure to print beside the run's "
    "own at the end: {\"top1\", \"std\", \"seeds\", \"label\", \"explained_in\"} (the quick "
    "start's: docs/quick_start_reference.json, written by the fair test's report).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Resolve and check the settings, write them to the run folder, "
                             "print them and exit, without reading data or training.")

# Flags that may change between the start of a run and its resumption.
_RESUMABLE_CHANGES = {"log_every_steps", "checkpoint_steps", "eval_batch_size", "flagfile"}
DEFAULT_BACKBONE = "resnet_fashion_mnist"
DEFAULT_ALPHA = 0.3


def log(line):
    print(line, flush=True)


def _serialize_flags():
    """The run's flags in flagfile form (``--name=value`` lines; booleans ``--x``/``--nox``)."""
    lines = (h._flagvalues[h.name].serialize() for h in _RUN_FLAGS)
    return "".join(f"{line}\n" for line in lines if line)


def _check_resume(model_dir):
    """A started run's flags must match the command's (but for a few harmless ones).

    A folder without checkpoints or metrics holds no training (a ``--dry_run``'s record, or
    a run killed before its first checkpoint): its record is simply replaced.
    """
    started = any(os.path.exists(os.path.join(model_dir, f))
                  for f in (rundir.CHECKPOINTS_DIR, rundir.METRICS_FILE))
    if not started:
        return
    bools = {h.name for h in _RUN_FLAGS if h._flagvalues[h.name].boolean}
    saved = rundir.read_flags(model_dir, bools)
    if not saved:
        return
    current = rundir.parse_flags(_serialize_flags(), bools)
    for name in sorted((set(saved) | set(current)) - _RESUMABLE_CHANGES):
        if saved.get(name) != current.get(name):
            show = lambda values: (f"--{name}={values[name]}" if name in values  # noqa: E731
                                   else f"no --{name}")
            raise cli.UsageError(
                f"{model_dir} holds a run started with {show(saved)}, but this command says "
                f"{show(current)}; use the run's own flags "
                f"({os.path.join(model_dir, rundir.FLAGS_FILE)}) to resume it, or a new "
                "--model_dir."
            )


def read_reference(path):
    """The reference figure of ``--reference`` (checked before any training), or None."""
    if not path:
        return None
    try:
        reference = rundir.read_json(path)
    except FileNotFoundError:
        raise cli.UsageError(f"--reference={path}: no such file; give the JSON file of a "
                             "measured reference, e.g. docs/quick_start_reference.json.") from None
    except ValueError as error:
        raise cli.UsageError(f"--reference={path} is not valid JSON ({error}).") from None
    keys = {"top1", "std", "seeds", "label", "explained_in"}
    top1 = reference.get("top1") if isinstance(reference, dict) else None
    if not isinstance(reference, dict) or not keys <= set(reference) or not (
            isinstance(top1, float) and 0 <= top1 <= 1):
        raise cli.UsageError(f"--reference={path} must be a JSON object with {sorted(keys)} and "
                             "a top-1 between 0 and 1.")
    return reference


def report_lines(final, reference):
    """The run's closing lines: the reference (if any), its own figures, where they are
    explained."""
    own = f"this run: base output top-1 {final['base_top1']:.4f}"
    if final.get("joint_top1") is not None:
        own = (f"this run: +TR (base output) top-1 {final['base_top1']:.4f}, "
               f"+JP (joint output) top-1 {final['joint_top1']:.4f}")
    if reference is None:
        return [own]
    spread = f" ± {reference['std']:.4f}" if reference.get("std") else ""
    return [f"reference: test top-1 {reference['top1']:.4f}{spread}, {reference['label']} "
            f"({reference['seeds']} seed(s))", own, f"explained in: {reference['explained_in']}"]


def _int_list(values, name):
    try:
        return [int(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"--{name} must be a list of integers; received {values}.") from None


def _float_list(values, name):
    try:
        return [float(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"--{name} must be a list of numbers; received {values}.") from None


def _check_numbers():
    for holder, minimum in ((_EPOCHS, 1), (_BATCH_SIZE, 1), (_LOGICAL_CPU_DEVICES, 1),
                            (_EVAL_BATCH_SIZE, 1), (_LOG_EVERY_STEPS, 1),
                            (_CHECKPOINT_STEPS, 0), (_HELD_OUT_EXAMPLES, 0)):
        if holder.value < minimum:
            raise cli.UsageError(f"--{holder.name} must be >= {minimum}; received {holder.value}.")
    for holder in (_TRAIN_EXAMPLES, _EVAL_EXAMPLES):
        if holder.value is not None and holder.value < 1:
            raise cli.UsageError(f"--{holder.name} must be >= 1; received {holder.value}.")
    if not _LEARNING_RATE.value > 0:
        raise cli.UsageError(f"--learning_rate must be > 0; received {_LEARNING_RATE.value}.")
    if not 0.0 <= _LABEL_SMOOTHING.value < 1.0:
        raise cli.UsageError(
            f"--label_smoothing must be in [0, 1); received {_LABEL_SMOOTHING.value}.")


# === Groupings ===============================================================================
def _check_grouping_flags():
    """Checks --groupings and its companions without reading data; returns the branch count."""
    names = _GROUPINGS.value
    if names != ["auto"]:
        for path in names:
            if not os.path.isfile(path):
                raise cli.UsageError(f"grouping file {path} does not exist (--groupings).")
        return len(names)
    num_groups = _int_list(_NUM_GROUPS.value, "num_groups")
    if not num_groups:
        raise cli.UsageError("--groupings=auto needs --num_groups, e.g. --num_groups=20,33,50.")
    if not _GROUPING_SOURCE.value:
        raise cli.UsageError("--groupings=auto needs --grouping_source=BASELINE_DIR, a "
                             "baseline run trained with --held_out_examples=N.")
    return len(num_groups)


def resolve_groupings(dataset, model_dir, chief):
    """The groupings of the run's branches (empty for a baseline), saved in ``DIR/groupings``."""
    names = _GROUPINGS.value
    if not names:
        return []
    folder = os.path.join(model_dir, rundir.GROUPINGS_DIR)
    _check_grouping_flags()
    if names == ["auto"]:
        num_groups = _int_list(_NUM_GROUPS.value, "num_groups")
        source = os.path.join(_GROUPING_SOURCE.value, rundir.HELD_OUT_CONFUSION_FILE)
        if not os.path.exists(source):
            raise cli.UsageError(
                f"{source} does not exist: --grouping_source must be a finished baseline run "
                "trained with --held_out_examples=N (it scores its confusion on them).")
        confusion = np.load(source)
        if confusion.shape != (dataset.num_classes,) * 2:
            raise cli.UsageError(
                f"{source} is a {confusion.shape[0]}-class confusion matrix but "
                f"{_DATASET.value} has {dataset.num_classes} classes.")
        groupings = [grouping_lib.grouping_from_confusion(
            confusion, k, criterion=_GROUPING_CRITERION.value,
            tie_break=_GROUPING_TIE_BREAK.value, seed=_SEED.value) for k in num_groups]
        if chief:
            rundir.write_npy(os.path.join(folder, "confusion.npy"), confusion)
    else:
        groupings = [grouping_lib.load_grouping(path) for path in names]
    for path, g in zip(names * len(groupings) if names == ["auto"] else names, groupings):
        if len(g) != dataset.num_classes:
            raise cli.UsageError(
                f"grouping {path} has {len(g)} labels but {_DATASET.value} has "
                f"{dataset.num_classes} classes; give one group id per class.")
    if chief:
        os.makedirs(folder, exist_ok=True)
        for index, g in enumerate(groupings):
            grouping_lib.save_grouping(os.path.join(folder, f"grouping_{index}.txt"), g)
    return groupings


# === Settings ================================================================================
# The ImageNet statistics of torchvision's models, in raw-pixel units (AUTHORS.md 7.2).
IMAGENET_MEAN_STD = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))


def _paper():
    if not _PAPER_MODEL.value:
        return None
    paper = ssal_keras.PAPER_MODELS.get(_PAPER_MODEL.value)
    if paper is None:
        raise cli.UsageError(f"--paper_model={_PAPER_MODEL.value} is not one of "
                             f"{', '.join(ssal_keras.PAPER_MODELS)}.")
    return paper


def _branch_settings(num_branches):
    """Taps, heads, loss weights and alpha from the flags, defaulting to --paper_model's."""
    paper = _paper()
    taps = list(_TAPS.value) or list(paper.taps if paper else [])
    head_list = [h if h in heads.HEAD_PRESETS or h == "default" else h.split()
                 for h in _HEADS.value] or list(
                     paper.heads if paper else ["default"] * num_branches)
    weights = _float_list(_LOSS_WEIGHTS.value, "loss_weights") or list(
        paper.loss_weights if paper else [1.0] * num_branches)
    for name, values in (("taps", taps), ("head", head_list), ("loss_weights", weights)):
        if len(values) != num_branches:
            raise cli.UsageError(
                f"--{name} has {len(values)} entries but there are {num_branches} groupings; "
                "give one per branch.")
    head_list = [None if h == "default" else h for h in head_list]
    alpha = _ALPHA.value if _ALPHA.value is not None else (paper.alpha if paper else DEFAULT_ALPHA)
    return taps, head_list, weights, alpha


def _backbone_settings():
    """The backbone's name and every option its family builder will receive."""
    paper = _paper()
    name = _BACKBONE.value or (paper.backbone if paper else DEFAULT_BACKBONE)
    if paper and name != paper.backbone:
        raise cli.UsageError(
            f"--backbone={name} contradicts --paper_model={_PAPER_MODEL.value}, whose "
            f"backbone is {paper.backbone}; drop one of them.")
    options = dict(paper.backbone_options) if (paper and _GROUPINGS.value) else {}
    if _ZERO_INIT_RESIDUAL.value is not None:
        options["zero_init_residual"] = _ZERO_INIT_RESIDUAL.value
    try:
        return name, backbones.registry.resolved_options(name, **options), options
    except ValueError as error:
        raise cli.UsageError(f"--backbone={name}: {error}") from None


def _head_style():
    paper = _paper()
    name = _HEAD_STYLE.value or (paper.head_style if paper else heads.DEFAULT_HEAD_STYLE)
    try:
        return heads.resolve_style(name)
    except ValueError as error:
        raise cli.UsageError(f"--head_style: {error}") from None


def _decay_settings():
    aux_rate = (_AUX_WEIGHT_DECAY.value if _AUX_WEIGHT_DECAY.value is not None
                else _WEIGHT_DECAY.value)
    try:
        decayed, aux_decayed = weight_decay_lib.check_classes(
            _WEIGHT_DECAY_PARAMS.value, _AUX_WEIGHT_DECAY_PARAMS.value)
    except ValueError as error:
        raise cli.UsageError(f"--{error}") from None
    return dict(weight_decay=_WEIGHT_DECAY.value, aux_weight_decay=aux_rate,
                decayed=decayed, aux_decayed=aux_decayed)


def build_schedule(steps_per_epoch):
    """The run's learning-rate schedule (AUTHORS.md section 2 for the authors' two)."""
    kind, peak, epochs = _SCHEDULE.value, _LEARNING_RATE.value, _EPOCHS.value
    if kind in ("epoch_triangular", "piecewise_linear"):
        if not float(_WARMUP_EPOCHS.value).is_integer():
            raise cli.UsageError(f"--schedule={kind} warms up over whole epochs; received "
                                 f"--warmup_epochs={_WARMUP_EPOCHS.value}.")
        cls = (schedules.EpochTriangularSchedule if kind == "epoch_triangular"
               else schedules.PiecewiseLinearSchedule)
        try:
            return cls(peak, steps_per_epoch, epochs, warmup_epochs=int(_WARMUP_EPOCHS.value))
        except ValueError as error:
            raise cli.UsageError(f"--schedule={kind}: {error}") from None
    total = steps_per_epoch * epochs
    warmup = min(int(round(_WARMUP_EPOCHS.value * steps_per_epoch)), total)
    return schedules.WarmupSchedule(
        peak,
        warmup_steps=0 if kind == "constant" else warmup,
        total_steps=total,
        decay={"slanted_triangular": "linear", "warmup_step": "step",
               "warmup_cosine": "cosine", "constant": "constant"}[kind],
        step_boundaries=[e * steps_per_epoch
                         for e in _int_list(_LR_DROP_EPOCHS.value, "lr_drop_epochs")],
    )


def _augment_options():
    crop_area = tuple(_float_list(_CROP_AREA.value, "crop_area")) or None
    if crop_area is not None and (len(crop_area) != 2 or not 0 < crop_area[0] <= crop_area[1]):
        raise cli.UsageError(f"--crop_area must be two numbers min,max with 0 < min <= max; "
                             f"received {','.join(_CROP_AREA.value)}.")
    if not 0.0 <= _COLOR_JITTER.value < 1.0:
        raise cli.UsageError(f"--color_jitter must be in [0, 1); received {_COLOR_JITTER.value}.")
    if (crop_area or _COLOR_JITTER.value) and not _IMAGE_SIZE.value:
        raise cli.UsageError("--crop_area and --color_jitter act on random-resized crops: they "
                             "need --image_size (ImageNet-style data).")
    return {"crop_area": crop_area, "color_jitter": _COLOR_JITTER.value}


def resolve_settings():
    """Every setting of the run, resolved from the flags and checked, without reading data.

    What ``--dry_run`` prints, and what the tests pin for each recipe: flag values after the
    recipe and the command line, the backbone's builder options (the authors' BatchNorm,
    initialisers, dropout, downsampling), each parameter class's weight decay, and the
    branches (taps, head layouts and style, loss weights, alpha).

    Raises:
        cli.UsageError: naming the first unknown or contradictory setting.
    """
    _check_numbers()
    name, options, _ = _backbone_settings()
    rates = weight_decay_lib.rates_by_class(**_decay_settings())
    build_schedule(steps_per_epoch=1)  # checks the schedule's arguments
    settings = {
        "flags": {h.name: h.value for h in _RUN_FLAGS},
        "backbone": name,
        "backbone_options": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                             for k, v in options.items()},
        "weight_decay": rates,
        "augment_options": _augment_options(),
        "branches": None,
    }
    names = _GROUPINGS.value
    if names:
        taps, head_list, weights, alpha = _branch_settings(_check_grouping_flags())
        try:
            layouts = [list(heads.resolve_layout(h)) for h in head_list]
        except ValueError as error:
            raise cli.UsageError(f"--head: {error}") from None
        settings["branches"] = {
            "taps": taps, "heads": layouts, "loss_weights": weights, "alpha": alpha,
            "head_style": dataclasses.asdict(_head_style()), "objective": _OBJECTIVE.value,
        }
    return settings


# === Model ===================================================================================
def build_model(dataset, groupings, normalization):
    """The run's model: the backbone alone (baseline) or with SSAL branches."""
    name, _, options = _backbone_settings()
    backbone = backbones.build(name, num_classes=dataset.num_classes,
                               input_shape=dataset.image_shape, normalization=normalization,
                               **options)
    if not groupings:
        return backbone
    taps, head_list, weights, alpha = _branch_settings(len(groupings))
    style = _head_style()
    branches = [ssal_keras.Branch(tap=t, grouping=g, head=h, loss_weight=w, head_style=style)
                for t, g, h, w in zip(taps, groupings, head_list, weights)]
    return ssal_keras.SSALModel(backbone, branches, alpha=alpha, objective=_OBJECTIVE.value,
                                name=f"ssal_{name}")


def build_optimizer(steps_per_epoch):
    """SGD with momentum (and Nesterov) on the run's schedule (AUTHORS.md section 2).

    Keras's SGD folds the rate into the velocity (``v = m v - lr g; w += v``), as the authors'
    Keras (CIFAR) runs did; PyTorch's (their ImageNet runs) applies it after
    (``b = m b + g; w -= lr b``). The two agree while the rate is constant.
    """
    return keras.optimizers.SGD(learning_rate=build_schedule(steps_per_epoch),
                                momentum=_MOMENTUM.value, nesterov=_NESTEROV.value)


def dry_run(model_dir):
    """Writes the run's record and prints its resolved settings; reads no data."""
    settings = resolve_settings()
    rundir.write_text(os.path.join(model_dir, rundir.FLAGS_FILE), _serialize_flags())
    print(json.dumps(settings, indent=2, sort_keys=True, default=list), flush=True)
    log(f"dry run: settings checked and written to {model_dir}/{rundir.FLAGS_FILE}; "
        "nothing trained")


# === Run =====================================================================================
def run():
    """Trains (or resumes) the run of the flags, then evaluates and writes it."""
    started = time.time()
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines would drown the log
    model_dir = _MODEL_DIR.value
    if not model_dir:
        raise cli.UsageError("--model_dir is required: the run's folder.")
    resolve_settings()
    reference = read_reference(_REFERENCE.value)
    _check_resume(model_dir)
    if _DRY_RUN.value:
        dry_run(model_dir)
        return
    metrics_path = os.path.join(model_dir, rundir.METRICS_FILE)
    previous = rundir.read_json(metrics_path) if os.path.exists(metrics_path) else {}
    if previous.get("completed") and os.path.exists(os.path.join(model_dir, rundir.MODEL_FILE)):
        log(f"the run is complete ({model_dir}, {previous['epochs']} epochs): nothing to "
            f"train; its results, from {metrics_path}:")
        for line in report_lines(previous, reference):
            log(line)
        return

    # === Strategy ===
    distribute.split_cpu(_LOGICAL_CPU_DEVICES.value)
    strategy = distribute.create_strategy(_STRATEGY.value)
    replicas = strategy.num_replicas_in_sync
    if _BATCH_SIZE.value % replicas:
        raise cli.UsageError(
            f"--batch_size={_BATCH_SIZE.value} does not divide across {replicas} replicas; "
            f"use a multiple of {replicas}.")
    chief = distribute.is_chief(strategy)
    log(f"strategy {_STRATEGY.value}: {replicas} replica(s), global batch {_BATCH_SIZE.value}, "
        f"{_BATCH_SIZE.value // replicas} per replica")
    keras.utils.set_random_seed(_SEED.value)
    # bfloat16 needs no loss scaling; variables, softmax outputs and the joint stay float32.
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if _MIXED_PRECISION.value else "float32")

    # === Data ===
    dataset, held_out = data.load(
        _DATASET.value, data_dir=_DATA_DIR.value, train_examples=_TRAIN_EXAMPLES.value,
        eval_examples=_EVAL_EXAMPLES.value, held_out_examples=_HELD_OUT_EXAMPLES.value,
        seed=_SEED.value, image_size=_IMAGE_SIZE.value)
    log(f"data {_DATASET.value}: {dataset.num_train} training and {dataset.num_eval} evaluation "
        f"images of {dataset.image_shape}, {dataset.num_classes} classes")
    normalization = {"none": None, "scale": "scale",
                     "imagenet": IMAGENET_MEAN_STD}.get(_NORMALIZATION.value)
    if _NORMALIZATION.value == "mean_std":
        normalization = data.channel_statistics(dataset.train)

    # === Groupings ===
    groupings = resolve_groupings(dataset, model_dir, chief)
    if chief:
        rundir.write_text(os.path.join(model_dir, rundir.FLAGS_FILE), _serialize_flags())
        rundir.write_json(os.path.join(model_dir, rundir.CLASS_NAMES_FILE),
                          list(dataset.class_names))

    # === Model and optimizer ===
    with strategy.scope():
        model = build_model(dataset, groupings, normalization)
        if replicas > 1 and _SYNC_BATCH_NORM.value:
            distribute.synchronize_batch_norm(model)
        optimizer = build_optimizer(
            loop.steps_per_epoch(strategy, dataset.num_train, _BATCH_SIZE.value))
        optimizer.build(model.trainable_variables)
    log(f"model {model.name}: {model.count_params():,} parameters"
        + (f", {len(groupings)} SSAL branch(es) of "
           f"{', '.join(str(int(g.max()) + 1) for g in groupings)} groups" if groupings else ""))

    # === Loop ===
    trainer = loop.Trainer(
        strategy=strategy, model=model, optimizer=optimizer, dataset=dataset,
        run_dir=model_dir, global_batch_size=_BATCH_SIZE.value, epochs=_EPOCHS.value,
        augment=_AUGMENT.value, augment_options=_augment_options(), seed=_SEED.value,
        label_smoothing=_LABEL_SMOOTHING.value,
        label_smoothing_mode=_LABEL_SMOOTHING_MODE.value, **_decay_settings(),
        jit_compile=_JIT_COMPILE.value, checkpoint_steps=_CHECKPOINT_STEPS.value,
        log_every_steps=_LOG_EVERY_STEPS.value, eval_batch_size=_EVAL_BATCH_SIZE.value, log=log)
    history = [r for r in previous.get("history", [])]

    def write_metrics(final_eval, images_per_sec, completed):
        record = {
            **{k: final_eval.get(k) for k in ("base_top1", "base_top5", "joint_top1",
                                              "joint_top5", "aux_top1")},
            "params": int(model.count_params()),
            "epochs": len(history),
            "num_replicas": replicas,
            "train_images_per_sec": images_per_sec,
            "wall_seconds": previous.get("wall_seconds", 0.0) + (time.time() - started),
            "completed": completed,
            "history": history,
        }
        if chief:
            rundir.write_json(metrics_path, record)

    def on_epoch_end(record):
        history[:] = [r for r in history if r["epoch"] < record["epoch"]] + [record]
        write_metrics(record["eval"], previous.get("train_images_per_sec"), completed=False)

    try:
        result = trainer.fit(on_epoch_end=on_epoch_end)
    except loop.NonFiniteLoss as error:
        raise cli.UsageError(str(error)) from None
    final = trainer.evaluate() if not history else history[-1]["eval"]
    images_per_sec = result["train_images_per_sec"] or previous.get("train_images_per_sec")
    write_metrics(final, images_per_sec, completed=True)

    # === Outputs ===
    if chief:
        rundir.save_model(model, os.path.join(model_dir, rundir.MODEL_FILE))
        if held_out is not None:
            rundir.write_npy(os.path.join(model_dir, rundir.HELD_OUT_CONFUSION_FILE),
                             trainer.confusion(held_out))
    log(f"done: {metrics_path}")
    for line in report_lines(final, reference):
        log(line)


if __name__ == "__main__":
    cli.run(run, prog="train")
