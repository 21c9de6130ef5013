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

import os
import time

import keras
import numpy as np
from absl import flags, logging

import ssal_keras
from ssal_keras import backbones, cli, data, distribute, loop, rundir
from ssal_keras import grouping as grouping_lib
from ssal_keras.schedules import WarmupSchedule

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
                   "Training augmentation (SPEC section 5: shifts up to 5 px, flips).")
_NORMALIZATION = _define("enum", "normalization", "scale", ["none", "scale", "mean_std"],
                         "Input normalisation inside the model: /255, or the training split's "
                         "per-channel mean/std.")
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
_TAPS = _define("list", "taps", [], "Tap of each branch (ssal_keras.backbones.taps).")
_HEADS = _define("multi_string", "head", [],
                 "Head of each branch, in order: a preset of ssal_keras.heads.HEAD_PRESETS or "
                 "blocks separated by spaces ('cbr(64,3) gap'); default heads.DEFAULT_HEAD.")
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
_WEIGHT_DECAY = _define("float", "weight_decay", 5e-4, "Weight decay of the backbone's kernels.")
_AUX_WEIGHT_DECAY = _define("float", "aux_weight_decay", None,
                            "Weight decay of the heads' kernels (default --weight_decay).")
_SCHEDULE = _define("enum", "schedule", "slanted_triangular",
                    ["slanted_triangular", "warmup_step", "warmup_cosine", "constant"],
                    "Learning-rate schedule (ssal_keras.schedules.WarmupSchedule).")
_WARMUP_EPOCHS = _define("float", "warmup_epochs", 10, "Epochs of linear warm-up.")
_LR_DROP_EPOCHS = _define("list", "lr_drop_epochs", ["30", "60", "80"],
                          "Epochs where warmup_step multiplies the rate by 0.1.")
_LABEL_SMOOTHING = _define("float", "label_smoothing", 0.0, "Label smoothing.")
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
    """A run folder's flags must match the command's (but for a few harmless ones)."""
    bools = {h.name for h in _RUN_FLAGS if isinstance(h.value, bool)}
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
def resolve_groupings(dataset, model_dir, chief):
    """The groupings of the run's branches (empty for a baseline), saved in ``DIR/groupings``."""
    names = _GROUPINGS.value
    if not names:
        return []
    folder = os.path.join(model_dir, rundir.GROUPINGS_DIR)
    if names == ["auto"]:
        num_groups = _int_list(_NUM_GROUPS.value, "num_groups")
        if not num_groups:
            raise cli.UsageError("--groupings=auto needs --num_groups, e.g. --num_groups=20,33,50.")
        if not _GROUPING_SOURCE.value:
            raise cli.UsageError("--groupings=auto needs --grouping_source=BASELINE_DIR, a "
                                 "baseline run trained with --held_out_examples=N.")
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
        distance = grouping_lib.confusion_distance(confusion, _GROUPING_CRITERION.value)
        groupings = [grouping_lib.balanced_grouping(distance, k, seed=_SEED.value)
                     for k in num_groups]
        if chief:
            rundir.write_npy(os.path.join(folder, "confusion.npy"), confusion)
    else:
        groupings = []
        for path in names:
            if not os.path.isfile(path):
                raise cli.UsageError(f"grouping file {path} does not exist (--groupings).")
            groupings.append(grouping_lib.load_grouping(path))
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


# === Model ===================================================================================
def _branch_settings(num_branches):
    """Taps, heads, loss weights and alpha from the flags, defaulting to --paper_model's."""
    paper = ssal_keras.PAPER_MODELS.get(_PAPER_MODEL.value) if _PAPER_MODEL.value else None
    if _PAPER_MODEL.value and paper is None:
        raise cli.UsageError(f"--paper_model={_PAPER_MODEL.value} is not one of "
                             f"{', '.join(ssal_keras.PAPER_MODELS)}.")
    taps = list(_TAPS.value) or list(paper.taps if paper else [])
    heads = [h if h in ssal_keras.heads.HEAD_PRESETS or h == "default" else h.split()
             for h in _HEADS.value] or list(paper.heads if paper else [])
    weights = _float_list(_LOSS_WEIGHTS.value, "loss_weights") or list(
        paper.loss_weights if paper else [1.0] * num_branches)
    for name, values in (("taps", taps), ("head", heads), ("loss_weights", weights)):
        if len(values) != num_branches:
            raise cli.UsageError(
                f"--{name} has {len(values)} entries but there are {num_branches} groupings; "
                "give one per branch.")
    heads = [None if h == "default" else h for h in heads]
    alpha = _ALPHA.value if _ALPHA.value is not None else (paper.alpha if paper else DEFAULT_ALPHA)
    return taps, heads, weights, alpha


def build_model(dataset, groupings, normalization):
    """The run's model: the backbone alone (baseline) or with SSAL branches."""
    paper = ssal_keras.PAPER_MODELS.get(_PAPER_MODEL.value) if _PAPER_MODEL.value else None
    name = _BACKBONE.value or (paper.backbone if paper else DEFAULT_BACKBONE)
    backbone = backbones.build(name, num_classes=dataset.num_classes,
                               input_shape=dataset.image_shape, normalization=normalization)
    if not groupings:
        return backbone
    taps, heads, weights, alpha = _branch_settings(len(groupings))
    branches = [ssal_keras.Branch(tap=t, grouping=g, head=h, loss_weight=w)
                for t, g, h, w in zip(taps, groupings, heads, weights)]
    return ssal_keras.SSALModel(backbone, branches, alpha=alpha, objective=_OBJECTIVE.value,
                                name=f"ssal_{name}")


def build_optimizer(steps_per_epoch):
    """SGD with momentum (and Nesterov) on the run's schedule (SPEC section 5)."""
    total = steps_per_epoch * _EPOCHS.value
    warmup = min(int(round(_WARMUP_EPOCHS.value * steps_per_epoch)), total)
    kind = _SCHEDULE.value
    schedule = WarmupSchedule(
        _LEARNING_RATE.value,
        warmup_steps=0 if kind == "constant" else warmup,
        total_steps=total,
        decay={"slanted_triangular": "linear", "warmup_step": "step",
               "warmup_cosine": "cosine", "constant": "constant"}[kind],
        step_boundaries=[e * steps_per_epoch
                         for e in _int_list(_LR_DROP_EPOCHS.value, "lr_drop_epochs")],
    )
    return keras.optimizers.SGD(learning_rate=schedule, momentum=_MOMENTUM.value,
                                nesterov=_NESTEROV.value)


# === Run =====================================================================================
def run():
    """Trains (or resumes) the run of the flags, then evaluates and writes it."""
    started = time.time()
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines would drown the log
    _check_numbers()
    model_dir = _MODEL_DIR.value
    if not model_dir:
        raise cli.UsageError("--model_dir is required: the run's folder.")
    _check_resume(model_dir)

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
    normalization = {"none": None, "scale": "scale"}.get(_NORMALIZATION.value)
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
    aux_weight_decay = (_AUX_WEIGHT_DECAY.value if _AUX_WEIGHT_DECAY.value is not None
                        else _WEIGHT_DECAY.value)
    trainer = loop.Trainer(
        strategy=strategy, model=model, optimizer=optimizer, dataset=dataset,
        run_dir=model_dir, global_batch_size=_BATCH_SIZE.value, epochs=_EPOCHS.value,
        augment=_AUGMENT.value, seed=_SEED.value, label_smoothing=_LABEL_SMOOTHING.value,
        weight_decay=_WEIGHT_DECAY.value, aux_weight_decay=aux_weight_decay,
        jit_compile=_JIT_COMPILE.value, checkpoint_steps=_CHECKPOINT_STEPS.value,
        log_every_steps=_LOG_EVERY_STEPS.value, eval_batch_size=_EVAL_BATCH_SIZE.value, log=log)
    metrics_path = os.path.join(model_dir, rundir.METRICS_FILE)
    previous = rundir.read_json(metrics_path) if os.path.exists(metrics_path) else {}
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
    line = f"done: base top-1 {final['base_top1']:.4f}"
    if final["joint_top1"] is not None:
        line = (f"done: +TR (base output) top-1 {final['base_top1']:.4f}, "
                f"+JP (joint output) top-1 {final['joint_top1']:.4f}")
    log(line + f"; {model_dir}/{rundir.METRICS_FILE}")


if __name__ == "__main__":
    cli.run(run, prog="train")
