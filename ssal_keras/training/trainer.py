"""The distributed training loop: an XLA-compiled per-replica step, checkpoints, evaluation.

docs/stack_notes.md, section 1 (XLA with tf.distribute): only the per-replica function that returns
the loss and the gradients is compiled with XLA; ``optimizer.apply_gradients`` runs outside it,
still inside ``strategy.run`` (it all-reduces the gradients). The loss is averaged once, over the
global batch. Weight decay is added to the gradients (``wd * w``, i.e. an L2 penalty ``wd/2 |w|^2``
as in PyTorch's SGD) on the parameter classes the run names (``ssal_keras.weight_decay``),
with a separate rate for the heads (docs/authors_settings.md, section 3).
"""

import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ssal_keras import data, runs
from ssal_keras.evaluation import scoring
from ssal_keras.modeling import outputs
from ssal_keras.modeling.losses import sparse_crossentropy
from ssal_keras.training import checkpoints, distribute


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite."""


def _format_seconds(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s")


def steps_per_epoch(strategy, num_train, global_batch_size):
    """Full global batches in an epoch; each worker reads its own shard of the split."""
    workers = distribute.num_workers(strategy)
    steps = (num_train // workers) // max(global_batch_size // workers, 1)
    if steps < 1:
        raise ValueError(
            f"the training split has {num_train} examples, fewer than one global batch of "
            f"{global_batch_size}; lower --batch_size or raise --train_examples."
        )
    return steps


class _Throughput:
    """Images per second of each progress window, and the run's steady-state mean of them.

    The first window of a ``fit`` call is left out of the mean: it includes tracing and XLA
    compilation, so it is not a throughput figure.
    """

    def __init__(self, global_batch_size):
        self.global_batch_size = global_batch_size
        self.rates = []
        self.images_per_sec = None
        self._first = True
        self._start, self._steps = None, 0

    def start_window(self):
        """Starts a window: at each epoch's start and after each progress line."""
        self._start, self._steps = time.time(), 0

    def step(self):
        """Counts one step of the current window."""
        self._steps += 1

    def end_window(self):
        """Ends the current window and starts the next. Returns its images per second."""
        elapsed = time.time() - self._start
        self.images_per_sec = self._steps * self.global_batch_size / max(elapsed, 1e-9)
        if not self._first:
            self.rates.append(self.images_per_sec)
        self._first = False
        self.start_window()
        return self.images_per_sec

    def eta(self, steps_left):
        """Seconds for ``steps_left`` more steps at the last window's rate."""
        return steps_left * self.global_batch_size / max(self.images_per_sec, 1e-9)

    def mean(self):
        """Mean images per second of the counted windows (None if there were none)."""
        return float(np.mean(self.rates)) if self.rates else None


@dataclasses.dataclass
class _EpochState:
    """The running figures of one epoch, or of its remainder after a resume."""

    epoch: int  # 0-based
    start_step: int  # the first step this call runs (the resume point)
    started: float  # time.time() at its start
    hit_sums: dict = dataclasses.field(default_factory=dict)
    losses: list = dataclasses.field(default_factory=list)  # read back and found finite
    # Step losses still on the device: reading each one at once would make the host wait
    # for every step, so they are read at progress lines and checkpoints only.
    pending: list = dataclasses.field(default_factory=list)
    pending_first: int = dataclasses.field(init=False)  # step in epoch before them

    def __post_init__(self):
        self.pending_first = self.start_step

    def add_step(self, loss, hits):
        """Keeps one step's loss (unread) and adds its hit counts."""
        self.pending.append(loss)
        for name, value in hits.items():
            self.hit_sums[name] = self.hit_sums.get(name, 0.0) + value


class Trainer:
    """Trains a classifier (an SSAL model or a plain baseline) under a ``tf.distribute`` strategy.

    Args:
        strategy: tf.distribute.Strategy. The model and optimizer were built in its scope.
        model: keras.Model. ``SSALModel`` or a plain classifier (single softmax output).
        optimizer: keras.optimizers.Optimizer. Built on ``model.trainable_variables``.
        dataset: data.Dataset. Unbatched train and eval splits.
        model_dir: str. The run folder (checkpoints, TensorBoard).
        run: resolved.ResolvedRun. The run's settings: epochs (``schedule``), batch sizes,
            data order and augmentation (``data``), label smoothing (``loss``), weight decay
            (``decay``), ``checkpoint_steps`` (0: once an epoch) and ``log_every_steps``.
        jit_compile: bool. Compile the per-replica step with XLA.
        log: callable. Prints one progress line.
    """

    def __init__(self, *, strategy, model, optimizer, dataset, model_dir, run, jit_compile,
                 log=print):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.dataset = dataset
        self.model_dir = model_dir
        self.run = run
        self.global_batch_size = run.data.batch_size
        self.epochs = run.schedule.epochs
        self.log_every_steps = max(1, run.log_every_steps)
        self.log = log
        self.chief = distribute.is_chief(strategy)
        self.jit_compile = jit_compile

        self.steps_per_epoch = steps_per_epoch(strategy, dataset.num_train,
                                               self.global_batch_size)
        self.total_steps = self.steps_per_epoch * self.epochs

        self._build_step(jit_compile)
        self._build_checkpoint()
        self._build_writers()

    def _build_step(self, jit_compile):
        """The loss terms, per-variable decay rates and compiled functions of the step."""
        model = self.model
        self.loss_terms = model.loss_terms() if outputs.is_ssal(model) else {outputs.BASE: 1.0}
        self.decay_rates = self.run.decay.rates(model)
        self.outputs_scored = outputs.output_names(model)
        # Without XLA the step is plain graph code inside ``_train_step``: a nested
        # tf.function would only add a boundary that synchronised BatchNorm cannot cross.
        self._loss_and_gradients = (
            tf.function(self._replica_loss_and_gradients, jit_compile=True)
            if jit_compile else self._replica_loss_and_gradients)
        self._predict = scoring.compiled_predict(model, jit_compile=jit_compile)

    def _build_checkpoint(self):
        """The checkpoints (weights, optimizer, data position) of this worker."""
        # The data position: plain host variables (not mirrored), saved with the weights.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.checkpoints = checkpoints.RunCheckpoints(
            self.model_dir, {"model": self.model, "optimizer": self.optimizer,
                             "epoch": self.epoch, "step_in_epoch": self.step_in_epoch},
            chief=self.chief, task=distribute.task_id(self.strategy), log=self.log)

    def _build_writers(self):
        """TensorBoard writers of the train and eval splits (in the scratch folder off-chief)."""
        self.writers = {
            split: tf.summary.create_file_writer(
                os.path.join(self.checkpoints.worker_dir, runs.TENSORBOARD_DIR, split))
            for split in ("train", "eval")
        }

    # --- step ------------------------------------------------------------------------------
    def _targets(self, labels):
        if outputs.is_ssal(self.model):
            return self.model.targets(labels)
        return {outputs.BASE: tf.reshape(tf.cast(labels, tf.int32), [-1])}

    def _replica_loss_and_gradients(self, images, labels):
        """Loss, gradients and hit counts of one replica's batch (XLA-compiled)."""
        variables = self.model.trainable_variables
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            predictions = outputs.outputs_by_name(self.model(images, training=True))
            targets = self._targets(labels)
            per_example = tf.add_n([
                weight * sparse_crossentropy(
                    targets[name], predictions[name],
                    label_smoothing=self.run.loss.label_smoothing,
                    label_smoothing_mode=self.run.loss.label_smoothing_mode)
                for name, weight in self.loss_terms.items()
            ])
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=self.global_batch_size)
            # float16: the gradients are of the scaled loss; the optimizer unscales them.
            differentiated = self.optimizer.scale_loss(loss) if scaled else loss
        gradients = tape.gradient(differentiated, variables)
        # The decay term joins gradients of the scaled loss, so it is scaled alike (the
        # optimizer then unscales the sum): scale_loss(1.0) is the current loss scale.
        scale = self.optimizer.scale_loss(1.0) if scaled else 1.0
        replicas = float(self.strategy.num_replicas_in_sync)
        # The optimizer sums gradients over replicas, so each adds its share of the decay.
        gradients = [
            g + (rate * scale / replicas) * tf.cast(v, g.dtype) if rate else g
            for g, v, rate in zip(gradients, variables, self.decay_rates)
        ]
        hits = {
            name: tf.reduce_sum(tf.cast(
                tf.equal(tf.argmax(predictions[name], axis=-1, output_type=tf.int32),
                         targets[name]), tf.float32))
            for name in self.outputs_scored
        }
        return loss, gradients, hits

    @tf.function
    def _train_step(self, iterator):
        def step_fn(images, labels):
            loss, gradients, hits = self._loss_and_gradients(images, labels)
            self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
            return loss, hits

        images, labels = next(iterator)
        loss, hits = self.strategy.run(step_fn, args=(images, labels))
        reduce = lambda x: self.strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)  # noqa: E731
        return reduce(loss), {name: reduce(value) for name, value in hits.items()}

    def _run_step(self, iterator):
        try:
            return self._train_step(iterator)
        except RuntimeError as error:
            # Synchronised BatchNorm all-reduces inside the forward pass. TensorFlow can put
            # that collective inside an XLA cluster only on all-GPU replicas; elsewhere
            # (CPU replicas) tracing fails before any data is read, and the step is
            # traced again without XLA.
            if ("merge_call" not in str(error)
                    or self._loss_and_gradients == self._replica_loss_and_gradients):
                raise
            self._loss_and_gradients = self._replica_loss_and_gradients
            self.log("XLA cannot hold the cross-replica BatchNorm reduction on these devices: "
                     "the per-replica step runs without XLA (or pass --sync_batch_norm=false)")
            return self._train_step(iterator)

    # --- data ------------------------------------------------------------------------------
    def _epoch_iterator(self, epoch, skip_steps):
        """The distributed batches of ``epoch``, from step ``skip_steps`` on (resume point)."""
        settings = self.run.data
        return iter(data.distributed_train_dataset(
            self.strategy, self.dataset, global_batch_size=self.global_batch_size,
            augment=settings.augment, seed=settings.seed + epoch, shuffle=settings.shuffle,
            repeat=True, skip_steps=skip_steps, **settings.augment_options(),
        ))

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self):
        """Top-1/top-5 of base and joint and each branch's group accuracy on the eval split."""
        return self._evaluate(self.dataset.eval)[0]

    def confusion(self, split):
        """The base output's confusion matrix on an unbatched split (rows: true labels)."""
        return self._evaluate(split)[1]

    def _evaluate(self, split):
        return scoring.score(self.model, split, batch_size=self.run.data.eval_batch_size,
                             image_size=self.dataset.image_size, predict=self._predict)

    # --- loop ------------------------------------------------------------------------------
    def restore(self):
        """Restores the newest readable checkpoint, if any (``checkpoints.RunCheckpoints``:
        every worker reads the chief's, an unreadable one falls back to the one before).
        Returns ``(epoch, step_in_epoch)``."""
        path = self.checkpoints.restore()
        if path is not None:
            self._log_restored(path)
        return int(self.epoch), int(self.step_in_epoch)

    def _log_restored(self, path):
        if int(self.epoch) >= self.epochs:
            self.log(f"the run's training is complete ({path}); writing its outputs")
        else:
            self.log(f"resuming from checkpoint {path}: epoch {int(self.epoch) + 1}, "
                     f"step {int(self.step_in_epoch)} of {self.steps_per_epoch}")

    def _save(self, epoch, step_in_epoch):
        """Checkpoints the weights at data position ``(epoch, step_in_epoch)``, numbered by
        global step."""
        self.epoch.assign(epoch)
        self.step_in_epoch.assign(step_in_epoch)
        self.checkpoints.save(epoch * self.steps_per_epoch + step_in_epoch)

    def _check_pending(self, state, done):
        """Reads back the epoch's pending step losses into ``state.losses``; ``done`` is the
        step in epoch they run up to.

        Raises:
            NonFiniteLoss: naming the first NaN or infinite loss and the last checkpoint. It
                is raised before any progress line or save that would include that step.
        """
        values = [float(v) for v in state.pending]
        first_step = state.epoch * self.steps_per_epoch + state.pending_first
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                kept = self.checkpoints.latest or "none (no checkpoint was written)"
                raise NonFiniteLoss(
                    f"training loss became {value} at step {first_step + offset + 1}; stopped "
                    f"without saving. Last good checkpoint: {kept}. Lower --learning_rate or "
                    "check the data."
                )
        state.losses += values
        state.pending, state.pending_first = [], done

    def _summaries(self, split, step, scalars):
        """Writes ``scalars`` (those not None) to the TensorBoard split at ``step``."""
        with self.writers[split].as_default(step=step):
            for name, value in scalars.items():
                if value is not None:
                    tf.summary.scalar(name, value)

    def fit(self, on_epoch_end=None):
        """Runs the remaining epochs from the newest checkpoint.

        Args:
            on_epoch_end: callable or None. Called with ``(epoch_record)`` after each epoch's
                evaluation and checkpoint.

        Returns:
            dict. ``train_images_per_sec`` (steady-state mean) and ``history`` records of the
            epochs this call ran.
        """
        start_epoch, start_step = self.restore()
        history, throughput = [], _Throughput(self.global_batch_size)
        for epoch in range(start_epoch, self.epochs):
            state = self._run_epoch(epoch, start_step, throughput)
            history.append(self._end_epoch(state, on_epoch_end))
            start_step = 0  # only the first epoch resumes mid-way
        self._close()
        return {"train_images_per_sec": throughput.mean(), "history": history}

    def _run_epoch(self, epoch, start_step, throughput):
        """Runs the steps of ``epoch`` from ``start_step`` on, with their progress lines and
        mid-epoch checkpoints. Returns its ``_EpochState``."""
        iterator = self._epoch_iterator(epoch, start_step)
        throughput.start_window()
        state = _EpochState(epoch=epoch, start_step=start_step, started=time.time())
        for step in range(start_step, self.steps_per_epoch):
            loss, hits = self._run_step(iterator)
            state.add_step(loss, hits)
            throughput.step()
            done = step + 1
            if done % self.log_every_steps == 0 or done == self.steps_per_epoch:
                self._report_progress(state, done, throughput)
            self._maybe_checkpoint(state, done)
        return state

    def _report_progress(self, state, done, throughput):
        """Logs one progress line after step ``done`` of the epoch, and its TensorBoard
        points: loss, running accuracies, throughput, learning rate, ETA."""
        # The losses are read (waiting for the steps) before the window's clock stops.
        self._check_pending(state, done)
        images_per_sec = throughput.end_window()
        global_step = state.epoch * self.steps_per_epoch + done
        seen = (done - state.start_step) * self.global_batch_size
        accuracies = {f"{name}_top1": float(value) / seen
                      for name, value in state.hit_sums.items()}
        eta = throughput.eta(self.total_steps - global_step)
        learning_rate = float(self.optimizer.learning_rate)
        self.log(
            f"epoch {state.epoch + 1}/{self.epochs} step {done}/{self.steps_per_epoch} "
            f"loss {state.losses[-1]:.4f} "
            + " ".join(f"{k} {v:.3f}" for k, v in accuracies.items())
            + f" | {images_per_sec:.0f} img/s | lr {learning_rate:.4g} "
            f"| ETA {_format_seconds(eta)}"
        )
        self._summaries("train", global_step, {
            "loss": state.losses[-1], "learning_rate": learning_rate,
            "images_per_sec": images_per_sec, **accuracies,
        })

    def _maybe_checkpoint(self, state, done):
        """Saves a mid-epoch checkpoint every ``checkpoint_steps`` steps; the epoch's last
        step is left to the end-of-epoch checkpoint."""
        every = self.run.checkpoint_steps
        if (every and done % every == 0
                and done < self.steps_per_epoch):
            # Never save weights a NaN step produced: the pending losses are checked first.
            self._check_pending(state, done)
            self._save(state.epoch, done)

    def _end_epoch(self, state, on_epoch_end):
        """Checkpoints and evaluates the finished epoch, logs and records it, and calls
        ``on_epoch_end``. Returns the epoch's record."""
        epoch = state.epoch + 1
        # Evaluated and recorded before its checkpoint: a kill in between resumes from the
        # previous checkpoint and runs the epoch again, so no epoch goes unrecorded.
        metrics = self.evaluate()
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(state.losses)) if state.losses else None,
            "eval": metrics,
            "learning_rate": float(self.optimizer.learning_rate),
            "seconds": time.time() - state.started,
        }
        self._summaries("eval", epoch * self.steps_per_epoch, {
            k: v for k, v in metrics.items() if isinstance(v, float)})
        self.log(
            f"epoch {epoch}/{self.epochs} eval: base top-1 {metrics['base_top1']:.4f}"
            + (f", joint top-1 {metrics['joint_top1']:.4f}"
               if metrics["joint_top1"] is not None else "")
            + "".join(f", aux_{i} {a:.4f}" for i, a in enumerate(metrics["aux_top1"]))
        )
        if on_epoch_end is not None:
            on_epoch_end(record)
        self._save(epoch, 0)
        return record

    def _close(self):
        """Flushes TensorBoard; a non-chief worker removes its scratch folder."""
        for writer in self.writers.values():
            writer.flush()
        self.checkpoints.close()
