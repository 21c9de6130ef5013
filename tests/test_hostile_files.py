"""Untrusted files and bad environments: a hostile ``.keras`` file is refused without opening
other files or allocating what its numbers ask for; a broken ``TF_CONFIG`` and a CPU split that
would go unused are refused or reported instead of silently training otherwise."""

import json
import os
import threading
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssal_keras
from ssal_keras.modeling import joint, loaded_configs
from ssal_keras.training import distribute
from ssal_keras.training.config import RunConfig

PATH_REFUSED = ("branches[0].grouping in the model config must be a list of group ids; a path "
                "is refused when loading a model (a .keras file never reads other files)")


# --- hostile .keras files ------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny SSALModel saved as a .keras file (a conv tap, one branch of 2 groups)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    probs = keras.layers.Dense(4, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D()(x))
    model = ssal_keras.SSALModel(keras.Model(inputs, probs), [
        ssal_keras.Branch(tap="c", grouping=[0, 0, 1, 1], head=["gap"])])
    path = tmp_path_factory.mktemp("saved") / "tiny.keras"
    model.save(path)
    return path


def rewrite(source, target, edit):
    """Copies the .keras zip ``source`` to ``target``, ``edit(config)`` applied to the
    SSALModel's config (the ``"config"`` of config.json) on the way."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                document = json.loads(data)
                edit(document["config"])
                data = json.dumps(document)
            zout.writestr(item, data)
    return target


def load_error(path, safe_mode=True, timeout=30):
    """The error of ``keras.saving.load_model(path)``, run in a thread so a loader blocked on
    a FIFO fails the test in ``timeout`` seconds instead of hanging it."""
    errors = []

    def load():
        try:
            keras.saving.load_model(path, safe_mode=safe_mode)
        except Exception as error:  # noqa: BLE001 - the test inspects whatever came back
            errors.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"load_model({path}) still running after {timeout} s"
    assert errors, f"load_model({path}) accepted a hostile file"
    return errors[0]


def test_saved_groupings_are_inline_and_a_clean_rewrite_loads(saved_model, tmp_path):
    with zipfile.ZipFile(saved_model) as archive:
        branch = json.loads(archive.read("config.json"))["config"]["branches"][0]
    assert branch["grouping"] == [0, 0, 1, 1]
    loaded = keras.saving.load_model(rewrite(saved_model, tmp_path / "same.keras", lambda c: c),
                                     safe_mode=True)
    assert isinstance(loaded, ssal_keras.SSALModel)


@pytest.mark.parametrize("safe_mode", [True, False])
@pytest.mark.parametrize("kind", ["fifo", "file"])
def test_a_path_grouping_is_refused_and_never_opened(saved_model, tmp_path, kind, safe_mode):
    target = tmp_path / "secret"
    if kind == "fifo":
        os.mkfifo(target)  # opening it for reading blocks: a loader that opens it hangs
    else:
        target.write_text("TOP-SECRET-LINE\n")

    def point_at_target(config):
        config["branches"][0]["grouping"] = str(target)

    hostile = rewrite(saved_model, tmp_path / "hostile.keras", point_at_target)
    try:
        error = load_error(hostile, safe_mode=safe_mode, timeout=30)
    finally:
        if kind == "fifo":
            _release_fifo_reader(target)
    assert isinstance(error, ValueError) and PATH_REFUSED in str(error), repr(error)
    assert "TOP-SECRET" not in str(error)


def _release_fifo_reader(path):
    """Unblocks a reader stuck opening the FIFO ``path``, and fails if there was one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only if a reader waits
    except OSError:
        return
    os.close(fd)
    pytest.fail(f"the loader opened {path}")


def _set(*keys, value):
    """An edit of the model config setting the entry at ``keys`` to ``value``."""
    def edit(config):
        for key in keys[:-1]:
            config = config[key]
        config[keys[-1]] = value
    return edit


def _classifier_units(units):
    def edit(config):
        layer = config["backbone"]["config"]["layers"][-1]
        assert layer["class_name"] == "Dense"
        layer["config"]["units"] = units
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set("branches", 0, "grouping", value=[0] * (loaded_configs.MAX_CLASSES + 1)),
     "branches[0].grouping in the model config must be a list of group ids of at most "
     "1,000,000 classes"),
    (_set("branches", 0, "grouping", value=[0, 0, 1, 10**12]),
     "branches[0].grouping in the model config has group id 1000000000000 but 4 classes"),
    (_set("branches", 0, "grouping", value=[0, 0, 1.5, 1]), "whole numbers; received an entry 1.5"),
    (_set("branches", 0, "grouping", value={"path": "/etc/passwd"}), "received dict"),
    (_set("branches", value=[{"tap": "c", "grouping": [0, 0, 1, 1]}] * 257),
     "at most 256 groupings"),
    (_set("branches", 0, "head", value=["cbr(100000000,3)", "gap"]),
     "asks for 100000000; a loaded model allows at most 65536"),
    (_set("branches", 0, "head", value=["gap", "dense(1000000000)"]), "at most 65536"),
    (_set("branches", 0, "evil", value=1), "branches[0] in the model config has no field 'evil'"),
    (_classifier_units(10**9), "units=1000000000 in the model config is over 1,000,000"),
    (_set("backbone_taps", value=[["c", "c"]] * (loaded_configs.MAX_TAPS + 1)),
     "backbone_taps in the model config must be a list of at most 4096"),
    (_set("backbone_taps", value=[["x", "nope"]]),
     "names layer 'nope', which is not a 4-D feature map"),
], ids=["long_grouping", "huge_group_id", "float_id", "dict_grouping", "many_branches",
        "huge_conv", "huge_dense", "unknown_field", "huge_num_classes", "many_taps",
        "missing_tap_layer"])
def test_absurd_configs_are_refused_before_allocating(saved_model, tmp_path, edit, message):
    error = load_error(rewrite(saved_model, tmp_path / "absurd.keras", edit))
    assert isinstance(error, ValueError) and message in str(error), repr(error)


def test_joint_prediction_config_is_bounded():
    layer = joint.JointPrediction([[0, 0, 1]], alpha=0.5)
    assert joint.JointPrediction.from_config(layer.get_config()).groupings[0].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"groupings\[0\] in the JointPrediction config must be "
                                         "a list of group ids; a path is refused"):
        joint.JointPrediction.from_config({**layer.get_config(), "groupings": ["/etc/hostname"]})
    many = [np.zeros(loaded_configs.MAX_CLASSES, "int64")] * 11  # 11 million ids, each legal
    with pytest.raises(ValueError, match="over 10,000,000 group ids in all"):
        joint.JointPrediction.from_config({**layer.get_config(), "groupings": many})


# --- TF_CONFIG -----------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("{cluster: 1", "TF_CONFIG is not JSON"),
    ("[]", "TF_CONFIG has no cluster"),
    ("{}", "TF_CONFIG has no cluster"),
    ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no cluster"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG has no task"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "ps", "index": 0}}',
     "TF_CONFIG has no task of a job in its cluster (worker)"),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG task index 2 is outside the cluster: job 'worker' has 2 task(s)"),
])
def test_a_broken_tf_config_is_refused_before_tensorflow_reads_it(monkeypatch, text, message):
    def created(*args, **kwargs):
        raise AssertionError("the strategy was created before TF_CONFIG was checked")

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", created)
    monkeypatch.setenv("TF_CONFIG", text)
    with pytest.raises(ValueError) as raised:
        distribute.create_strategy("multi_worker")
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_well_formed_tf_config_passes_the_check():
    text = '{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", ' \
           '"index": 0}}'
    assert distribute.check_tf_config(text)["task"] == {"type": "worker", "index": 0}
    with pytest.raises(ValueError, match="needs the cluster in the TF_CONFIG"):
        distribute.check_tf_config(None)


# --- logical CPU devices -------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["default", "multi_worker"])
def test_a_cpu_split_outside_mirrored_is_refused(strategy):
    with pytest.raises(ValueError) as raised:
        RunConfig(logical_cpu_devices=2, strategy=strategy)
    assert str(raised.value) == (
        f"logical_cpu_devices=2: splits the CPU for strategy=mirrored; with "
        f"strategy={strategy!r} it would be ignored.")
    assert RunConfig(logical_cpu_devices=2, strategy="mirrored").logical_cpu_devices == 2


def test_a_cpu_split_beside_gpus_warns(monkeypatch):
    splits = []
    real_list = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: (
        ["/physical_device:GPU:0"] if kind == "GPU" else real_list(kind)))
    monkeypatch.setattr(tf.config, "set_logical_device_configuration",
                        lambda device, configs: splits.append(len(configs)))
    with pytest.warns(UserWarning, match=r"logical_cpu_devices=2 is ignored on this machine: "
                                         r"strategy=mirrored mirrors over its 1 GPU\(s\)"):
        distribute.split_cpu(2)
    assert splits == [2]
