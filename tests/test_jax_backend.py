"""The model code on Keras 3's JAX backend: building, ``fit`` and ``predict`` of an SSALModel,
and a ``.keras`` file written by the TensorFlow trainer loaded under JAX with the same joint
output.

The test process itself runs on TensorFlow (``conftest`` sets ``KERAS_BACKEND``, and Keras
fixes its backend at import), so every JAX step runs in a subprocess.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, small_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="jax is not installed (pip install -e '.[test]' installs jax[cpu])")

GROUPINGS_DIR = os.path.join(ROOT, "models", "groupings")
# The quick start's branches (models/fashion_mnist_ssal.flags): taps, heads and loss weights.
TAPS = ("stage1", "stage2")
HEADS = ("cbr(32,3,2) cbr(64,3,2) gap", "cbr(64,3,2) cbr(64,3) gap")

# Builds, fits and predicts the quick-start SSAL network on random images under JAX, and
# prints one JSON line of what the test checks.
FIT_SCRIPT = textwrap.dedent("""
    import json, sys
    import ssal_keras  # before anything else imports keras: the backend must stay JAX's
    tf_after_import = "tensorflow" in sys.modules
    import keras
    import numpy as np
    from ssal_keras.modeling import backbones

    groupings = [np.loadtxt(path, dtype=int) for path in sys.argv[1:3]]
    model = ssal_keras.SSALModel(
        backbones.build("resnet_fashion_mnist", num_classes=10, normalization="scale"),
        branches=[ssal_keras.Branch(tap=tap, grouping=g, head=head.split(), loss_weight=w)
                  for tap, g, head, w in zip({taps!r}, groupings, {heads!r}, (0.5, 0.75))],
        alpha=0.1)
    # Label smoothing "others" runs the loss's one-hot path inside the jitted train step.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), label_smoothing=0.1,
                  label_smoothing_mode="others")
    tf_after_build = "tensorflow" in sys.modules
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (48, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, 48)
    history = model.fit(images, labels, batch_size=16, epochs=1, verbose=0).history
    out = model.predict(images[:8], verbose=0)
    targets = model.targets(labels[:8])

    # The joint output against the log-space fusion of the base and branch outputs.
    log_joint = np.log(out["base"].astype(np.float64))
    for index, g in enumerate(groupings):
        log_joint += 0.1 * np.log(out[f"aux_{{index}}"].astype(np.float64))[:, g]
    reference = np.exp(log_joint - log_joint.max(axis=-1, keepdims=True))
    reference /= reference.sum(axis=-1, keepdims=True)
    print(json.dumps({{
        "backend": keras.backend.backend(),
        "tf_after_import": tf_after_import, "tf_after_build": tf_after_build,
        "tf_after_fit_predict": "tensorflow" in sys.modules,
        "losses": {{k: v[-1] for k, v in history.items() if k.endswith("loss")}},
        "shapes": {{k: list(v.shape) for k, v in out.items()}},
        "sums": [float(abs(v.sum(-1) - 1).max()) for v in out.values()],
        "joint_error": float(abs(out["joint"] - reference).max()),
        "targets_ok": all(np.array_equal(np.asarray(targets[f"aux_{{i}}"]), g[labels[:8]])
                          for i, g in enumerate(groupings)),
    }}))
""").format(taps=TAPS, heads=HEADS)

# Loads a .keras file under JAX (safe_mode) and saves its joint output on saved images.
LOAD_SCRIPT = textwrap.dedent("""
    import sys
    import ssal_keras
    import keras
    import numpy as np

    model_path, images_path, joint_path = sys.argv[1:4]
    assert keras.backend.backend() == "jax", keras.backend.backend()
    model = keras.saving.load_model(model_path, safe_mode=True)
    assert isinstance(model, ssal_keras.SSALModel), type(model)
    np.save(joint_path, model.predict(np.load(images_path), verbose=0)["joint"])
""")


def run_on_jax(tmp_path, script, *args):
    """Runs ``script`` with ``args`` in a Python process on Keras's JAX backend (CPU); returns
    its stdout, failing the test with its stderr when it fails."""
    path = tmp_path / "jax_script.py"
    path.write_text(script)
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, str(path), *map(str, args)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def grouping_files():
    return [os.path.join(GROUPINGS_DIR, f"fashion_mnist_{k}.txt") for k in (3, 5)]


def test_ssal_model_builds_fits_and_predicts_on_jax(tmp_path):
    report = json.loads(run_on_jax(tmp_path, FIT_SCRIPT, *grouping_files()).splitlines()[-1])
    assert report["backend"] == "jax"
    # Importing the package and building the model never pull in TensorFlow: the model code
    # is keras.ops and keras.layers only (Keras's own .keras saving does import it).
    assert not report["tf_after_import"] and not report["tf_after_build"]
    assert not report["tf_after_fit_predict"]
    assert set(report["losses"]) == {"loss", "base_loss", "aux_0_loss", "aux_1_loss"}
    assert all(np.isfinite(v) for v in report["losses"].values()), report["losses"]
    assert report["shapes"] == {"base": [8, 10], "aux_0": [8, 3], "aux_1": [8, 5],
                                "joint": [8, 10]}
    assert max(report["sums"]) < 1e-5
    assert report["joint_error"] < 1e-5
    assert report["targets_ok"]


def test_tensorflow_trained_model_gives_the_same_joint_output_on_jax(fashion_dir, tmp_path):
    import keras

    from ssal_keras import data
    from ssal_keras.training import train

    assert keras.backend.backend() == "tensorflow"
    run_dir = tmp_path / "run"
    train(small_config(fashion_dir, groupings=tuple(grouping_files()), taps=TAPS, head=HEADS,
                       epochs=1), str(run_dir), log=lambda line: None)
    model_path = run_dir / "model.keras"
    images = data.load_fashion_mnist("test", data_dir=fashion_dir)[0][:64].astype("float32")
    tf_joint = keras.saving.load_model(model_path, safe_mode=True).predict(
        images, verbose=0)["joint"]
    np.save(tmp_path / "images.npy", images)

    run_on_jax(tmp_path, LOAD_SCRIPT, model_path, tmp_path / "images.npy",
               tmp_path / "joint.npy")
    jax_joint = np.load(tmp_path / "joint.npy")
    assert jax_joint.shape == tf_joint.shape == (64, 10)
    np.testing.assert_allclose(jax_joint, tf_joint, atol=1e-4, rtol=0)
    # Print the difference for the build notes (pytest -s shows it).
    print(f"max |joint_TF - joint_JAX| = {np.abs(jax_joint - tf_joint).max():.3g}")
