"""The distributed training loop: an XLA-compiled per-replica step, checkpoints, evaluation.

PITFALLS.md (XLA with tf.distribute): only the per-replica function that returns the loss and
the gradients is compiled with XLA; ``optimizer.apply_gradients`` runs outside it, still inside
``strategy.run`` (it all-reduces the gradients). The loss is averaged once, over the global
batch. Weight decay is added to the gradients (``wd * w``, i.e. an L2 penalty ``wd/2 |w|^2``
as in PyTorch's SGD) on the parameter classes the run names (``ssal_keras.weight_decay``),
with a separate rate for the heads (AUTHORS.md section 3).
"""

import math
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from ssal_keras import data, runs
from ssal_keras.analysis import scoring
from ssal_keras.modeling import outputs
from ssal_keras.modeling import weight_decay as weight_decay_lib
from ssal_keras.modeling.losses import sparse_crossentropy
from ssal_keras.training import distribute


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


class Trainer:
    """Trains a classifier (an SSAL model or a plain baseline) under a ``tf.distribute`` strategy.

    Args:
        strategy: tf.distribute.Strategy. The model and optimizer were built in its scope.
        model: keras.Model. ``SSALModel`` or a plain classifier (single softmax output).
        optimizer: keras.optimizers.Optimizer. Built on ``model.trainable_variables``.
        dataset: data.Dataset. Unbatched train and eval splits.
        run_dir: str. The run folder (checkpoints, TensorBoard).
        global_batch_size: int. Examples per step over all replicas.
        epochs: int. Epochs of the whole run.
        augment: str. Augmentation of ``data.train_pipeline``.
        augment_options: dict or None. Further keyword arguments of the training pipeline
            (``crop_area``, ``color_jitter``).
        seed: int. Seed of the data order and augmentation (epoch ``e`` uses ``seed + e``).
        label_smoothing: float. Label smoothing of every loss term.
        label_smoothing_mode: str. ``losses.SMOOTHING_MODES``: how the smoothing is spread.
        weight_decay: float. Decay rate of the parameter classes in ``decayed``.
        aux_weight_decay: float. Decay rate of the parameter classes in ``aux_decayed``.
        decayed: sequence of str. Parameter classes (``weight_decay.PARAMETER_CLASSES``) at
            ``weight_decay``.
        aux_decayed: sequence of str. Parameter classes at ``aux_weight_decay``.
        jit_compile: bool. Compile the per-replica step with XLA.
        checkpoint_steps: int. Also checkpoint every this many steps (0: once an epoch).
        log_every_steps: int. Steps between progress lines and TensorBoard points.
        eval_batch_size: int. Batch size of evaluation.
        log: callable. Prints one progress line.
    """

    def __init__(self, *, strategy, model, optimizer, dataset, run_dir, global_batch_size,
                 epochs, augment, seed, label_smoothing, weight_decay, aux_weight_decay,
                 jit_compile, checkpoint_steps, log_every_steps, eval_batch_size,
                 augment_options=None, label_smoothing_mode="uniform",
                 decayed=weight_decay_lib.DEFAULT_DECAYED,
                 aux_decayed=weight_decay_lib.DEFAULT_AUX_DECAYED, log=print):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.dataset = dataset
        self.run_dir = run_dir
        self.global_batch_size = global_batch_size
        self.epochs = epochs
        self.augment = augment
        self.augment_options = dict(augment_options or {})
        self.seed = seed
        self.label_smoothing = label_smoothing
        self.label_smoothing_mode = label_smoothing_mode
        self.checkpoint_steps = checkpoint_steps
        self.log_every_steps = max(1, log_every_steps)
        self.eval_batch_size = eval_batch_size
        self.log = log
        self.chief = distribute.is_chief(strategy)

        self.steps_per_epoch = steps_per_epoch(strategy, dataset.num_train, global_batch_size)
        self.total_steps = self.steps_per_epoch * epochs

        self.loss_terms = model.loss_terms() if outputs.is_ssal(model) else {outputs.BASE: 1.0}
        self.decay_rates = weight_decay_lib.decay_rates(
            model, weight_decay=weight_decay, aux_weight_decay=aux_weight_decay,
            decayed=decayed, aux_decayed=aux_decayed)
        self.outputs_scored = outputs.output_names(model)

        # === Update step ===
        # Without XLA the step is plain graph code inside ``_train_step``: a nested
        # tf.function would only add a boundary that synchronised BatchNorm cannot cross.
        self._loss_and_gradients = (
            tf.function(self._replica_loss_and_gradients, jit_compile=True)
            if jit_compile else self._replica_loss_and_gradients)
        self._predict = scoring.compiled_predict(model, jit_compile=jit_compile)

        # === Checkpoint ===
        # The data position: plain host variables (not mirrored), saved with the weights.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              epoch=self.epoch, step_in_epoch=self.step_in_epoch)
        task_type, task_index = distribute.task_id(strategy)
        # Only the chief writes the real folder; the others save (they must take part in the
        # save) into a scratch folder that is removed again (TF multi-worker tutorial).
        self.checkpoint_dir = os.path.join(run_dir, runs.CHECKPOINTS_DIR) if self.chief else (
            os.path.join(run_dir, f".scratch_{task_type}_{task_index}", runs.CHECKPOINTS_DIR))
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.checkpoint_dir,
                                                  max_to_keep=3)
        self.writers = {
            split: tf.summary.create_file_writer(
                os.path.join(run_dir, runs.TENSORBOARD_DIR, split) if self.chief
                else os.path.join(self.checkpoint_dir, "..", runs.TENSORBOARD_DIR, split))
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
        with tf.GradientTape() as tape:
            predictions = outputs.outputs_by_name(self.model(images, training=True))
            targets = self._targets(labels)
            per_example = tf.add_n([
                weight * sparse_crossentropy(targets[name], predictions[name],
                                             label_smoothing=self.label_smoothing,
                                             label_smoothing_mode=self.label_smoothing_mode)
                for name, weight in self.loss_terms.items()
            ])
            loss = tf.nn.compute_average_loss(per_example,
                                              global_batch_size=self.global_batch_size)
        gradients = tape.gradient(loss, variables)
        replicas = float(self.strategy.num_replicas_in_sync)
        # The optimizer sums gradients over replicas, so each adds its share of the decay.
        gradients = [
            g + (rate / replicas) * tf.cast(v, g.dtype) if rate else g
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
        return iter(data.distributed_train_dataset(
            self.strategy, self.dataset.train, global_batch_size=self.global_batch_size,
            augment=self.augment, seed=self.seed + epoch, repeat=True, skip_steps=skip_steps,
            image_size=self.dataset.image_size, **self.augment_options,
        ))

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self):
        """Top-1/top-5 of base and joint and each branch's group accuracy on the eval split."""
        return self._evaluate(self.dataset.eval)[0]

    def confusion(self, split):
        """The base output's confusion matrix on an unbatched split (rows: true labels)."""
        return self._evaluate(split)[1]

    def _evaluate(self, split):
        return scoring.score(self.model, split, batch_size=self.eval_batch_size,
                     image_size=self.dataset.image_size, predict=self._predict)

    # --- loop ------------------------------------------------------------------------------
    def restore(self):
        """Restores the newest checkpoint, if any. Returns ``(epoch, step_in_epoch)``."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            if int(self.epoch) >= self.epochs:
                self.log(f"the run is complete ({latest}); evaluating it again")
            else:
                self.log(f"resuming from checkpoint {latest}: epoch {int(self.epoch) + 1}, "
                         f"step {int(self.step_in_epoch)} of {self.steps_per_epoch}")
        return int(self.epoch), int(self.step_in_epoch)

    def _save(self, epoch, step_in_epoch):
        self.epoch.assign(epoch)
        self.step_in_epoch.assign(step_in_epoch)
        self.manager.save(checkpoint_number=epoch * self.steps_per_epoch + step_in_epoch)

    def _check_finite(self, pending, first_step):
        values = [float(v) for v in pending]
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                kept = self.manager.latest_checkpoint or "none (no checkpoint was written)"
                raise NonFiniteLoss(
                    f"training loss became {value} at step {first_step + offset + 1}; stopped "
                    f"without saving. Last good checkpoint: {kept}. Lower --learning_rate or "
                    "check the data."
                )
        return values

    def _summaries(self, split, step, scalars):
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
        history, throughput = [], []
        first_window = True  # it includes tracing and XLA compilation: not a throughput figure
        for epoch in range(start_epoch, self.epochs):
            iterator = self._epoch_iterator(epoch, start_step)
            sums, pending, pending_first = {}, [], start_step
            losses, window_start, window_steps = [], time.time(), 0
            epoch_start = time.time()
            for step in range(start_step, self.steps_per_epoch):
                loss, hits = self._run_step(iterator)
                pending.append(loss)
                for name, value in hits.items():
                    sums[name] = sums.get(name, 0.0) + value
                window_steps += 1
                done = step + 1
                global_step = epoch * self.steps_per_epoch + done
                if done % self.log_every_steps == 0 or done == self.steps_per_epoch:
                    losses += self._check_finite(pending, epoch * self.steps_per_epoch
                                                 + pending_first)
                    pending, pending_first = [], done
                    elapsed = time.time() - window_start
                    images_per_sec = window_steps * self.global_batch_size / max(elapsed, 1e-9)
                    if not first_window:
                        throughput.append(images_per_sec)
                    first_window = False
                    window_start, window_steps = time.time(), 0
                    seen = (done - start_step) * self.global_batch_size
                    accuracies = {f"{name}_top1": float(value) / seen
                                  for name, value in sums.items()}
                    remaining = (self.total_steps - global_step) * self.global_batch_size
                    eta = remaining / max(images_per_sec, 1e-9)
                    learning_rate = float(self.optimizer.learning_rate)
                    self.log(
                        f"epoch {epoch + 1}/{self.epochs} step {done}/{self.steps_per_epoch} "
                        f"loss {losses[-1]:.4f} "
                        + " ".join(f"{k} {v:.3f}" for k, v in accuracies.items())
                        + f" | {images_per_sec:.0f} img/s | lr {learning_rate:.4g} "
                        f"| ETA {_format_seconds(eta)}"
                    )
                    self._summaries("train", global_step, {
                        "loss": losses[-1], "learning_rate": learning_rate,
                        "images_per_sec": images_per_sec, **accuracies,
                    })
                if (self.checkpoint_steps and done % self.checkpoint_steps == 0
                        and done < self.steps_per_epoch):
                    losses += self._check_finite(pending, epoch * self.steps_per_epoch
                                                 + pending_first)
                    pending, pending_first = [], done
                    self._save(epoch, done)
            self._save(epoch + 1, 0)
            metrics = self.evaluate()
            record = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else None,
                "eval": metrics,
                "learning_rate": float(self.optimizer.learning_rate),
                "seconds": time.time() - epoch_start,
            }
            history.append(record)
            self._summaries("eval", (epoch + 1) * self.steps_per_epoch, {
                k: v for k, v in metrics.items() if isinstance(v, float)})
            self.log(
                f"epoch {epoch + 1}/{self.epochs} eval: base top-1 {metrics['base_top1']:.4f}"
                + (f", joint top-1 {metrics['joint_top1']:.4f}"
                   if metrics["joint_top1"] is not None else "")
                + "".join(f", aux_{i} {a:.4f}" for i, a in enumerate(metrics["aux_top1"]))
            )
            if on_epoch_end is not None:
                on_epoch_end(record)
            start_step = 0
        for writer in self.writers.values():
            writer.flush()
        if not self.chief:
            shutil.rmtree(os.path.dirname(self.checkpoint_dir), ignore_errors=True)
        return {
            "train_images_per_sec": float(np.mean(throughput)) if throughput else None,
            "history": history,
        }

