"""Test set-up (quiet TensorFlow, deterministic seeds, absl flags marked parsed) and the helpers
the test modules share: a small Fashion-MNIST, the small training config, and running the
command-line entry points as a user does."""

import gzip
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# absl must never parse pytest's argv (docs/stack_notes.md, section 7).
flags.FLAGS.mark_as_parsed()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    # Keras's TF backend calls np.array on TF tensors and variables; NumPy 2 warns about it
    # (upstream, not ours).
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    )


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from a cleared Keras session and a fixed seed."""
    import keras

    # Without its full garbage collection (free_memory), which cost ~0.3 s a test: a fifth
    # of the suite's time. Python's collector still frees the dropped models in its own time.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield


# --- data ----------------------------------------------------------------------------------
def write_idx(path, array):
    """Writes ``array`` (uint8) as a gzipped IDX file, the Fashion-MNIST distribution format."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


#: Set to 1 to give the tests the fake Fashion-MNIST even where the real one is installed
#: (to see which tests skip on it, and that the others pass on it).
FAKE_DATA_ENV = "SSAL_TESTS_FAKE_FASHION_MNIST"


def real_fashion_mnist():
    """Whether ``fashion_dir`` holds real Fashion-MNIST images (Debian's, installed) rather
    than the learnable fake that stands in for them."""
    from ssal_keras import data

    return os.path.isdir(data.FASHION_MNIST_DIR) and os.environ.get(FAKE_DATA_ENV) != "1"


def only_on_real_fashion_mnist(what):
    """A mark that skips its test on the fake data (before any fixture is built): ``what``
    (a figure measured on real Fashion-MNIST: an accuracy, an attack's effect) says nothing
    about the fake, which a tiny run learns from mean brightness alone."""
    return pytest.mark.skipif(
        not real_fashion_mnist(),
        reason=f"{what} holds on real Fashion-MNIST only; the tests run on the fake stand-in "
               f"(Fashion-MNIST is not installed, or {FAKE_DATA_ENV}=1)")


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    """A small Fashion-MNIST in IDX files: real images where installed, else a learnable fake
    (``real_fashion_mnist`` says which): the class sets the mean brightness."""
    from ssal_keras import data

    folder = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for split, count in (("train", 1200), ("test", 300)):
        if real_fashion_mnist():
            images, labels = data.load_fashion_mnist(split)
            images, labels = images[:count, ..., 0], labels[:count]
        else:
            labels = rng.integers(0, 10, count)
            images = (rng.uniform(0, 60, (count, 28, 28)) + labels[:, None, None] * 19)
        image_file, label_file = {"train": ("train-images-idx3-ubyte.gz",
                                            "train-labels-idx1-ubyte.gz"),
                                  "test": ("t10k-images-idx3-ubyte.gz",
                                           "t10k-labels-idx1-ubyte.gz")}[split]
        write_idx(folder / image_file, np.asarray(images))
        write_idx(folder / label_file, np.asarray(labels))
    return str(folder)


# --- training ------------------------------------------------------------------------------
#: The small run of the trainer's tests: a few hundred images, two epochs, the quick-start
#: network (``RunConfig`` fields; the same as flags in ``train_args``).
SMALL_RUN = dict(dataset="fashion_mnist", train_examples=256, eval_examples=128, batch_size=32,
                 epochs=2, warmup_epochs=0.5, learning_rate=0.05, log_every_steps=2,
                 augment="shift")


def small_config(fashion_dir, **overrides):
    """The ``RunConfig`` of the small run on ``fashion_dir``, with ``overrides``."""
    from ssal_keras.training import RunConfig

    return RunConfig(**{**SMALL_RUN, "data_dir": fashion_dir, **overrides})


def train_args(model_dir, fashion_dir, *extra):
    """The small run as ``python -m ssal_keras.train`` flags."""
    return [f"--model_dir={model_dir}", f"--data_dir={fashion_dir}",
            *(f"--{k}={v}" for k, v in SMALL_RUN.items()), *extra]


def metrics(model_dir):
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


# --- command lines -------------------------------------------------------------------------
def cli_env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)


def run_cli(module, *args, env=None, cwd=ROOT, timeout=600):
    """``python -m MODULE ARGS`` as a user runs it; the finished process."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd,
                          env=cli_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout)


def run_train(*args, env=None, module="ssal_keras.train", cwd=ROOT):
    return run_cli(module, *args, env=env, cwd=cwd)


def run_clis_at_once(commands, cwd=ROOT):
    """``{name: (returncode, stdout, stderr)}`` of several ``(module, *args)`` commands run
    side by side: each start-up spends seconds importing TensorFlow."""
    processes = {
        name: subprocess.Popen([sys.executable, "-m", *command], cwd=cwd, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    results = {}
    for name, process in processes.items():
        out, err = process.communicate(timeout=600)
        results[name] = (process.returncode, out, err)
    return results


def one_error_line(result, prog="train"):
    """The single ``PROG: error:`` line of a failed command (no traceback anywhere)."""
    returncode, stderr = ((result.returncode, result.stderr) if hasattr(result, "stderr")
                          else (result[0], result[2]))
    assert returncode != 0
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]
