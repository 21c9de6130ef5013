"""Test set-up: quiet TensorFlow, deterministic seeds, absl flags marked parsed."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
from absl import flags  # noqa: E402

# absl must never parse pytest's argv (PITFALLS.md, absl flags).
flags.FLAGS.mark_as_parsed()


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

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
