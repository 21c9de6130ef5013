"""``train(config, model_dir)``: one training run, in-process, as ``python -m ssal_keras.train``
runs it (the CLI only turns its flags into a ``RunConfig``).

Phases: settings -> strategy -> the run folder's lock and the leftovers of killed writes
(``ssal_keras.runs``) -> data -> groupings -> model and optimizer -> loop
(``ssal_keras.training.trainer``) -> ``model.keras``, then ``metrics.json`` marked complete.
The run folder (``ssal_keras.runs``) keeps the config as ``run.json``; the same call again
resumes the run from its last checkpoint, or returns its metrics once it is complete.

Example (a four-class toy dataset, one epoch of the quick-start network)::

    >>> import os, tempfile
    >>> import numpy as np
    >>> from ssal_keras.training import RunConfig, train
    >>> folder = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 4, 160)
    >>> images = (rng.uniform(0, 50, (160, 28, 28)) + 50 * labels[:, None, None]).astype("uint8")
    >>> np.savez(os.path.join(folder, "toy.npz"), x_train=images[:128], y_train=labels[:128],
    ...          x_test=images[128:], y_test=labels[128:])
    >>> config = RunConfig(dataset=f"npz:{folder}/toy.npz", epochs=1, batch_size=32,
    ...                    warmup_epochs=0.5, jit_compile=False)
    >>> metrics = train(config, os.path.join(folder, "run"), log=lambda line: None)
    >>> metrics["completed"], metrics["epochs"], 0.0 <= metrics["base_top1"] <= 1.0
    (True, 1, True)
"""

import contextlib
import dataclasses
import json
import os
import time

import keras
import numpy as np
from absl import logging

from ssal_keras import data
from ssal_keras import grouping as grouping_lib
from ssal_keras import runs
from ssal_keras.modeling.model import Branch, SSALModel
from ssal_keras.runs import lock
from ssal_keras.training import checkpoints, device_policy, distribute, trainer
from ssal_keras.training import config as config_lib
from ssal_keras.training.config import AUTO, RunConfig


def train(config, model_dir, *, log=print):
    """Trains (or resumes) the run of ``config`` in ``model_dir``, then evaluates and writes it.

    Args:
        config: RunConfig. Every setting of the run.
        model_dir: str. The run's folder: created, or resumed when it holds the same run.
        log: callable. Prints one progress line (default ``print``).

    Returns:
        dict. The run's metrics, as in ``model_dir/metrics.json``: ``base_top1``,
        ``base_top5``, ``joint_top1``, ``joint_top5`` (None for a baseline), ``aux_top1``,
        ``mistakes_within_group``, ``params``, ``epochs``, ``num_replicas``, ``compute`` (the
        XLA and dtype policy it ran with), ``train_images_per_sec``, ``wall_seconds``,
        ``completed`` and the per-epoch ``history``.

    Raises:
        ValueError: naming the setting or the file at fault (a run folder holding another
            run, a missing grouping file, data that does not fit, no readable checkpoint);
            ``runs.lock.RunFolderBusy``, one of them, when another trainer holds the folder.
    """
    started = time.time()
    _check_config(config)
    model_dir = os.fspath(model_dir)
    _check_grouping_files(config)
    previous = _previous_metrics(config, model_dir)
    if previous.get("completed") and os.path.exists(os.path.join(model_dir, runs.MODEL_FILE)):
        log(f"the run is complete ({model_dir}, {previous['epochs']} epochs): nothing to "
            f"train; its results are in {os.path.join(model_dir, runs.METRICS_FILE)}")
        return previous
    with _process_settings(config, log):
        strategy, chief = _strategy(config, log)
        # Only the chief writes the run folder, so only the chief holds its lock.
        with lock.held(model_dir, log=log) if chief else contextlib.nullcontext():
            if chief:
                runs.clean_leftovers(model_dir, log=log)
                checkpoints.clean_leftovers(model_dir, log=log)
            # Read again under the lock: another trainer may have moved the run on.
            previous = _previous_metrics(config, model_dir)
            record = _train_in_folder(config, model_dir, strategy, chief, previous, started,
                                      log)
    log(f"done: {os.path.join(model_dir, runs.METRICS_FILE)}")
    return record


def _train_in_folder(config, model_dir, strategy, chief, previous, started, log):
    """Data, groupings, model and loop of a run whose folder this process may write."""
    run = config.resolve()
    dataset, held_out, normalization = load_data(run.data, run.backbone, log)
    groupings = resolve_groupings(config, dataset, model_dir, chief)
    if chief:
        runs.write_text(os.path.join(model_dir, runs.CONFIG_FILE), config.to_json())
        runs.write_json(os.path.join(model_dir, runs.CLASS_NAMES_FILE),
                        list(dataset.class_names))
    model, optimizer = model_and_optimizer(run, strategy, dataset, groupings, normalization,
                                           sync_batch_norm=config.sync_batch_norm, log=log)
    jit_compile, why = device_policy.jit_compile(config.jit_compile, run.backbone.name)
    log(f"XLA {'on' if jit_compile else 'off'} ({why})")
    loop = trainer.Trainer(strategy=strategy, model=model, optimizer=optimizer,
                           dataset=dataset, model_dir=model_dir, run=run,
                           jit_compile=jit_compile, log=log)
    return _fit_and_write(loop, model_dir, previous, started, chief, held_out)


def _check_config(config):
    if not isinstance(config, RunConfig):
        raise ValueError(f"config must be a ssal_keras.training.RunConfig; received "
                         f"{type(config).__name__} (build one with RunConfig(...) or "
                         "RunConfig.from_flagfile(...)).")


def _previous_metrics(config, model_dir):
    """The metrics of the run already in ``model_dir`` (``{}`` if none), after checking it is
    the run of ``config``: a started run resumes only with the settings it began with."""
    started = any(os.path.exists(os.path.join(model_dir, f))
                  for f in (checkpoints.CHECKPOINTS_DIR, runs.METRICS_FILE))
    saved = config_lib.read_config(model_dir) if started else None
    if saved is not None:
        changed = saved.differences(config)
        if changed:
            name = changed[0]
            raise ValueError(
                f"{model_dir} holds a run started with {name}={getattr(saved, name)!r}, but "
                f"this config says {name}={getattr(config, name)!r}; resume it with the "
                f"run's own settings ({os.path.join(model_dir, runs.CONFIG_FILE)}) or use "
                "a new model_dir.")
    path = os.path.join(model_dir, runs.METRICS_FILE)
    return runs.read_json(path) if os.path.exists(path) else {}


@contextlib.contextmanager
def _process_settings(config, log):
    """The run's seed, precision and log level, the caller's precision restored after."""
    precision, why = device_policy.precision(config.mixed_precision)
    policy = keras.mixed_precision.global_policy()
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines would drown the log
    keras.utils.set_random_seed(config.seed)
    # Variables, softmax outputs and the joint stay float32 (float16 adds loss scaling:
    # build_optimizer).
    keras.mixed_precision.set_global_policy(device_policy.KERAS_POLICIES[precision])
    log(f"precision {precision} ({why})")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)
        logging.set_verbosity(verbosity)


def _strategy(config, log):
    distribute.split_cpu(config.logical_cpu_devices)
    strategy = distribute.create_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"batch_size={config.batch_size} does not divide across {replicas} "
                         f"replicas; use a multiple of {replicas}.")
    log(f"strategy {config.strategy}: {replicas} replica(s), global batch {config.batch_size}, "
        f"{config.batch_size // replicas} per replica")
    return strategy, distribute.is_chief(strategy)


def load_data(settings, backbone, log):
    """The dataset of ``settings`` (``resolved.DataSettings``), its held-out part (or None)
    and the model's input normalisation (``backbone``'s, measured for ``mean_std``)."""
    dataset, held_out = data.load(
        settings.dataset, data_dir=settings.data_dir, train_examples=settings.train_examples,
        eval_examples=settings.eval_examples, held_out_examples=settings.held_out_examples,
        seed=settings.seed, image_size=settings.image_size, log=log)
    data.check_shuffle(dataset, settings.shuffle)
    log(f"data {settings.dataset}: {dataset.num_train} training and {dataset.num_eval} "
        f"evaluation images of {dataset.image_shape}, {dataset.num_classes} classes, "
        f"shuffle {settings.shuffle}")
    normalization = backbone.normalization
    if normalization == "mean_std":
        normalization = data.channel_statistics(dataset.train)
    return dataset, held_out, normalization


# === Groupings ===============================================================================
def _check_grouping_files(config):
    if config.groupings != (AUTO,):
        for path in config.groupings:
            if not os.path.isfile(path):
                raise ValueError(f"grouping file {path} does not exist (groupings).")


def _auto_groupings(config, dataset):
    source = os.path.join(config.grouping_source, runs.HELD_OUT_CONFUSION_FILE)
    if not os.path.exists(source):
        raise ValueError(
            f"{source} does not exist: grouping_source must be a finished baseline run "
            "trained with held_out_examples=N (it scores its confusion on them).")
    confusion = np.load(source)
    if confusion.shape != (dataset.num_classes,) * 2:
        raise ValueError(f"{source} is a {confusion.shape[0]}-class confusion matrix but "
                         f"{config.dataset} has {dataset.num_classes} classes.")
    return confusion, [grouping_lib.grouping_from_confusion(
        confusion, k, criterion=config.grouping_criterion,
        tie_break=config.grouping_tie_break, seed=config.seed) for k in config.num_groups]


def resolve_groupings(config, dataset, model_dir, chief):
    """The groupings of the run's branches (empty for a baseline), saved in
    ``model_dir/groupings`` (with the confusion matrix that made them, for ``auto``)."""
    if not config.groupings:
        return []
    folder = os.path.join(model_dir, runs.GROUPINGS_DIR)
    _check_grouping_files(config)
    if config.groupings == (AUTO,):
        confusion, groupings = _auto_groupings(config, dataset)
        names = [f"auto ({k} groups)" for k in config.num_groups]
        if chief:
            runs.write_npy(os.path.join(folder, "confusion.npy"), confusion)
    else:
        groupings = [grouping_lib.load_grouping(path) for path in config.groupings]
        names = list(config.groupings)
    for name, g in zip(names, groupings):
        if len(g) != dataset.num_classes:
            raise ValueError(f"grouping {name} has {len(g)} labels but {config.dataset} has "
                             f"{dataset.num_classes} classes; give one group id per class.")
    if chief:
        os.makedirs(folder, exist_ok=True)
        for index, g in enumerate(groupings):
            grouping_lib.save_grouping(os.path.join(folder, f"grouping_{index}.txt"), g)
    return groupings


# === Model ===================================================================================
def build_model(run, dataset, groupings, normalization):
    """The model of ``run`` (a ``ResolvedRun``): the backbone alone (baseline) or with SSAL
    branches, one per grouping."""
    backbone = run.backbone.build(num_classes=dataset.num_classes,
                                  input_shape=dataset.image_shape, normalization=normalization)
    if not groupings:
        return backbone
    settings = run.branches
    branches = [Branch(tap=t, grouping=g, head=h, loss_weight=w, head_style=settings.head_style)
                for t, g, h, w in zip(settings.taps, groupings, settings.heads,
                                      settings.loss_weights)]
    return SSALModel(backbone, branches, alpha=settings.alpha, objective=settings.objective,
                     name=f"ssal_{run.backbone.name}")


def model_and_optimizer(run, strategy, dataset, groupings, normalization, *,
                        sync_batch_norm=True, log=print):
    """The model and its built optimizer in ``strategy``'s scope, as the trainer takes them."""
    with strategy.scope():
        model = build_model(run, dataset, groupings, normalization)
        if strategy.num_replicas_in_sync > 1 and sync_batch_norm:
            distribute.synchronize_batch_norm(model)
        optimizer = run.schedule.optimizer(trainer.steps_per_epoch(
            strategy, dataset.num_train, run.data.batch_size))
        optimizer.build(model.trainable_variables)
    log(f"model {model.name}: {model.count_params():,} parameters"
        + (f", {len(groupings)} SSAL branch(es) of "
           f"{', '.join(str(int(g.max()) + 1) for g in groupings)} groups" if groupings else ""))
    return model, optimizer


# === Loop and outputs ========================================================================
def _fit_and_write(loop, model_dir, previous, started, chief, held_out):
    """Runs the remaining epochs, writing ``metrics.json`` after each; then the final
    figures, ``model.keras`` and (with held-out images) their confusion matrix."""
    history = list(previous.get("history", []))
    metrics_path = os.path.join(model_dir, runs.METRICS_FILE)

    def write_metrics(final_eval, images_per_sec, completed):
        record = {
            **{k: final_eval.get(k) for k in ("base_top1", "base_top5", "joint_top1",
                                              "joint_top5", "aux_top1",
                                              "mistakes_within_group")},
            "params": int(loop.model.count_params()),
            "epochs": len(history),
            "num_replicas": loop.strategy.num_replicas_in_sync,
            # What --jit_compile and --mixed_precision resolved to on this machine.
            "compute": {"xla": loop.jit_compile,
                        "dtype_policy": keras.mixed_precision.global_policy().name},
            "train_images_per_sec": images_per_sec,
            "wall_seconds": previous.get("wall_seconds", 0.0) + (time.time() - started),
            "completed": completed,
            "history": history,
        }
        if chief:
            runs.write_json(metrics_path, record)
        return record

    def on_epoch_end(epoch_record):
        history[:] = [r for r in history if r["epoch"] < epoch_record["epoch"]] + [epoch_record]
        write_metrics(epoch_record["eval"], previous.get("train_images_per_sec"),
                      completed=False)

    try:
        result = loop.fit(on_epoch_end=on_epoch_end)
    except trainer.NonFiniteLoss as error:
        raise ValueError(str(error)) from None
    # The last epoch's record is the evaluation of the final weights (the trainer records an
    # epoch before it checkpoints it). The model and the held-out confusion are written
    # before "completed", so a kill between these writes leaves a run that resumes.
    final = loop.evaluate() if not history else history[-1]["eval"]
    if chief:
        runs.save_model(loop.model, os.path.join(model_dir, runs.MODEL_FILE))
        if held_out is not None:
            runs.write_npy(os.path.join(model_dir, runs.HELD_OUT_CONFUSION_FILE),
                           loop.confusion(held_out))
    return write_metrics(final, result["train_images_per_sec"]
                         or previous.get("train_images_per_sec"), completed=True)


# === Settings, without training ==============================================================
def resolve_settings(config):
    """Every setting of the run, resolved, without reading data: what ``--dry_run`` prints
    and what the tests pin for each recipe. The config's fields, the backbone's builder
    options (the authors' BatchNorm, initialisers, dropout, downsampling), each parameter
    class's weight decay, and the branches (taps, head layouts and style, loss weights,
    alpha)."""
    run = config.resolve()
    return {
        "config": config.to_dict(),
        "backbone": run.backbone.name,
        "backbone_options": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                             for k, v in run.backbone.builder_options.items()},
        "weight_decay": run.decay.by_class(),
        "augment_options": run.data.augment_options(),
        "branches": run.branches.describe() if run.branches else None,
    }


def dry_run(config, model_dir, *, log=print):
    """Checks the run's settings and files, writes ``run.json`` to ``model_dir`` and returns
    ``resolve_settings``; reads no data and trains nothing."""
    _check_config(config)
    _check_grouping_files(config)
    settings = resolve_settings(config)
    with lock.held(model_dir, log=log):
        _previous_metrics(config, model_dir)
        runs.write_text(os.path.join(model_dir, runs.CONFIG_FILE), config.to_json())
    log(json.dumps(settings, indent=2, sort_keys=True, default=list))
    log(f"dry run: settings checked and written to {os.path.join(model_dir, runs.CONFIG_FILE)}; "
        "nothing trained")
    return settings
