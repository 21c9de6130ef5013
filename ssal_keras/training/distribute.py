"""tf.distribute set-up for the trainer: strategies, logical CPU devices, chief-only writes.

docs/stack_notes.md, section 1 (XLA with tf.distribute): the optimizer is created and built inside
the scope, BatchNorm statistics are synchronised across replicas, and only the chief writes the run.
"""

import json
import os
import warnings

import keras
import tensorflow as tf

from ssal_keras.modeling import graph

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(num_devices):
    """Splits the host CPU into ``num_devices`` logical devices (mirrored training without GPUs).

    Must run before TensorFlow initialises its devices, i.e. before any op runs. On a machine
    with GPUs, ``strategy=mirrored`` mirrors over the GPUs and the split goes unused: a
    ``UserWarning`` says so (one line; this module has no log, and a warning reaches the
    caller's console, or a test's ``pytest.warns``) and the CPU is split all the same.
    """
    if num_devices <= 1:
        return
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        warnings.warn(
            f"logical_cpu_devices={num_devices} is ignored on this machine: strategy=mirrored "
            f"mirrors over its {len(gpus)} GPU(s), not over CPU devices.", stacklevel=2)
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
        # Checked here, before TensorFlow reads it: TF takes a TF_CONFIG without a cluster
        # or task for a single worker and trains alone, silently.
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(
        devices=devices,
        # NCCL is GPU-only; on CPU devices the sum goes through one device.
        cross_device_ops=None if gpus else tf.distribute.ReductionToOneDevice(),
    )


def check_tf_config(text):
    """Checks the ``TF_CONFIG`` environment variable (``text``; None when unset) describes a
    multi-worker cluster and this process's place in it; one ValueError naming TF_CONFIG.

    Returns:
        dict. The parsed ``TF_CONFIG``: ``{"cluster": {job: [address, ...]}, "task":
        {"type": job, "index": i}}``.
    """
    if text is None:
        raise ValueError("--strategy=multi_worker needs the cluster in the TF_CONFIG environment "
                         "variable (see the TensorFlow multi-worker guide).")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error}); --strategy=multi_worker needs "
                         '{"cluster": {...}, "task": {"type": ..., "index": ...}}.') from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not all(
            isinstance(v, list) and v for v in cluster.values()):
        raise ValueError("TF_CONFIG has no cluster: --strategy=multi_worker needs "
                         '"cluster": {job: [address, ...]} (otherwise TensorFlow would train '
                         f"on this one worker); received {text!r:.120}.")
    if not isinstance(task, dict) or not isinstance(task.get("type"), str) or (
            task["type"] not in cluster):
        raise ValueError(f"TF_CONFIG has no task of a job in its cluster ({', '.join(cluster)}): "
                         '--strategy=multi_worker needs "task": {"type": job, "index": i}; '
                         f"received task={task!r:.80}.")
    index, size = task.get("index"), len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
        raise ValueError(f"TF_CONFIG task index {index!r} is outside the cluster: job "
                         f"{task['type']!r} has {size} task(s), indices 0 to {size - 1}.")
    return config


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
    for layer in graph.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
