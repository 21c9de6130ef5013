"""A quiet start for the command lines: TensorFlow's native start-up lines hidden.

TensorFlow's C++ side writes lines to the process's stderr as it loads (the oneDNN notice,
CUDA probing on machines without a GPU, the CPU-feature notice), before and regardless of
``TF_CPP_MIN_LOG_LEVEL``: eight lines ahead of every command's own, ``--help`` included. The
command lines (``python -m ssal_keras.X``, ``ssal-X``) therefore load TensorFlow with file
descriptor 2 pointed at a temporary file (replayed if loading fails) and set
``TF_CPP_MIN_LOG_LEVEL=2`` for what follows. A user who set ``TF_CPP_MIN_LOG_LEVEL`` sees
everything, and ``import ssal_keras`` from Python (a notebook, a test) is left alone.
"""

import contextlib
import os
import sys
import tempfile


def started_as_command():
    """Whether this process is one of the package's command lines: ``python -m`` sets
    ``sys.argv[0]`` to ``-m`` while it imports the package, console scripts are ``ssal-*``."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name == "-m" or name.startswith("ssal-")


@contextlib.contextmanager
def native_stderr_hidden():
    """Points file descriptor 2 at a temporary file for the block; replays it on failure."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow_start():
    """Loads TensorFlow (and probes its devices) quietly, for the command lines only."""
    if not started_as_command() or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with native_stderr_hidden():
        import tensorflow as tf

        tf.config.list_physical_devices()
