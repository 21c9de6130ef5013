"""What ``--jit_compile=auto`` and ``--mixed_precision=auto`` choose on the machine a run is on.

Each choice comes with its reason, which the trainer logs, and rests on a measurement
(BUILD_NOTES.md, "Training speed on the paper's models", ``benchmarks/paper_train_step.py``;
"Mixed precision", ``models/precision_parity_fashion_mnist.py``). Explicit settings always win.
"""

import functools

import tensorflow as tf

JIT_SETTINGS = ("auto", "true", "false")
PRECISION_SETTINGS = ("auto", "bfloat16", "float16", "float32")
#: The Keras dtype policy of each precision.
KERAS_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16", "float32": "float32"}

#: XLA against no XLA on CPUs: the median training-step images/s of each backbone's SSAL
#: recipe in float32, XLA over no XLA, measured on a 2-core Xeon (AVX-512 BF16, AMX) by
#: ``benchmarks/paper_train_step.py`` (``docs/benchmark_paper_train_step.json``,
#: ``cpu_xla_speedup``; tests/test_device_policy.py holds the two equal). On CPUs a backbone
#: gets XLA only where it measured faster; one not measured gets none (XLA slowed every
#: network measured so far, and compiling a large one costs minutes).
CPU_XLA_SPEEDUP = {
    "resnet_fashion_mnist": 0.69,
}
#: bfloat16 against float32 on the quick start where ``auto`` runs it (CPU, XLA as
#: ``--jit_compile=auto`` sets it), paired over seeds: the mean held-out joint top-1
#: difference minus two standard errors (``models/precision_parity_fashion_mnist.py``,
#: ``docs/precision_parity.json``, ``lower_bound``; tested equal). ``auto`` takes bfloat16 on
#: a CPU only when it is at least -MAX_BFLOAT16_DROP; None would mean "not decided". Five
#: seeds (the protocol's second and final stage): -0.03 +- 0.12 points, bound -0.0028.
CPU_BFLOAT16_LOWER_BOUND = -0.0028
MAX_BFLOAT16_DROP = 0.003
# float16 arithmetic on NVIDIA GPUs needs compute capability 5.3; bfloat16 needs 8.0 (Ampere).
FLOAT16_MIN_CAPABILITY = (5, 3)
BFLOAT16_MIN_CAPABILITY = (8, 0)


def gpu_capabilities():
    """The compute capability ``(major, minor)`` of each visible GPU ((0, 0) if unknown)."""
    return [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability")
                  or (0, 0)) for gpu in tf.config.list_physical_devices("GPU")]


@functools.cache
def cpu_flags(path="/proc/cpuinfo"):
    """The host CPU's feature flags (Linux's ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bfloat16():
    """Whether the CPU computes bfloat16 natively (x86 AVX512_BF16 or AMX-BF16)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def jit_compile(setting, backbone, *, gpus=None):
    """``(compile the step with XLA, why)`` for ``--jit_compile=setting`` on a ``backbone``.

    ``auto``: on GPUs, XLA (it fuses the elementwise ops around every convolution); on CPUs,
    only where ``CPU_XLA_SPEEDUP`` measured the backbone faster with it.
    """
    if setting != "auto":
        return setting == "true", f"--jit_compile={setting}"
    if gpus if gpus is not None else gpu_capabilities():
        return True, "auto: GPU"
    speedup = CPU_XLA_SPEEDUP.get(backbone)
    if speedup is None:
        return False, (f"auto: CPU, {backbone} not measured (XLA slowed the large networks "
                       "measured on CPUs)")
    return speedup > 1, (f"auto: CPU, XLA measured x{speedup:.2f} on {backbone} "
                         "(BUILD_NOTES.md, 'Training speed on the paper's models')")


def precision(setting, *, gpus=None):
    """``(precision, why)`` for ``--mixed_precision=setting``: one of ``KERAS_POLICIES``.

    ``auto``: bfloat16 where every device computes it natively (GPUs of compute capability
    8.0 or more; CPUs with AVX512_BF16 or AMX, once the quick start's parity held), else
    float32 (off).

    Raises:
        ValueError: float16 on a GPU without float16 arithmetic (one line: what to use).
    """
    gpus = gpus if gpus is not None else gpu_capabilities()
    if setting == "float16" and gpus and min(gpus) < FLOAT16_MIN_CAPABILITY:
        raise ValueError(
            f"mixed_precision=float16: a GPU here has compute capability "
            f"{'.'.join(map(str, min(gpus)))}, below the 5.3 float16 needs; use "
            "--mixed_precision=float32.")
    if setting == "float16" and not gpus:
        return setting, ("--mixed_precision=float16 on a CPU: correct but emulated, slower "
                         "than float32 (float16 is for GPUs without bfloat16)")
    if setting != "auto":
        return setting, f"--mixed_precision={setting}"
    if gpus:
        if min(gpus) >= BFLOAT16_MIN_CAPABILITY:
            return "bfloat16", "auto: GPUs with bfloat16 (compute capability 8.0 or more)"
        return "float32", "auto: a GPU without bfloat16 (compute capability below 8.0)"
    if not cpu_has_bfloat16():
        return "float32", "auto: CPU without native bfloat16"
    if CPU_BFLOAT16_LOWER_BOUND is None or CPU_BFLOAT16_LOWER_BOUND < -MAX_BFLOAT16_DROP:
        return "float32", ("auto: CPU, bfloat16 not shown within 0.3 points of float32's accuracy "
                       "(docs/precision_parity.json)")
    return "bfloat16", ("auto: CPU with native bfloat16 (AVX512_BF16/AMX), accuracy parity "
                        "measured (docs/precision_parity.json)")
