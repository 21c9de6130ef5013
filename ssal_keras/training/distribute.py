"""tf.distribute set-up for the trainer: strategies, logical CPU devices, chief-only writes.

PITFALLS.md (XLA with tf.distribute): the optimizer is created and built inside the scope,
BatchNorm statistics are synchronised across replicas, and only the chief writes the run.
"""

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(num_devices):
    """Splits the host CPU into ``num_devices`` logical devices (mirrored training without GPUs).

    Must run before TensorFlow initialises its devices, i.e. before any op runs.
    """
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot split the CPU into {num_devices} devices after TensorFlow has started "
            f"({error}); set it before building anything."
        ) from None


def create_strategy(name):
    """The ``tf.distribute`` strategy for ``--strategy``.

    ``mirrored`` mirrors over every GPU, or over the logical CPU devices when there is no GPU;
    ``multi_worker`` reads the cluster from ``TF_CONFIG`` (MultiWorkerMirroredStrategy).
    """
    if name not in STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(STRATEGIES)}; received {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy=multi_worker needs the cluster in the TF_CONFIG environment "
                "variable (see the TensorFlow multi-worker guide)."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(
        devices=devices,
        # NCCL is GPU-only; on CPU devices the sum goes through one device.
        cross_device_ops=None if gpus else tf.distribute.ReductionToOneDevice(),
    )


def is_chief(strategy):
    """Whether this process writes the run folder (always true outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    has_chief = "chief" in config.get("cluster", {})
    if has_chief:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def num_workers(strategy):
    """Processes taking part in training (1 outside multi-worker); each reads its own shard."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return 1
    spec = resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs)


def task_id(strategy):
    """``(type, index)`` of this process, ``("chief", 0)`` outside multi-worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "chief", 0
    return resolver.task_type, int(resolver.task_id)


def synchronize_batch_norm(model):
    """Computes BatchNorm batch statistics over the global batch, not each replica's part.

    With them, training on N replicas computes what one device would on the same global batch.
    """
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
