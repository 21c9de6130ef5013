"""The files of a run folder, each written atomically (a kill never leaves half a file).

A run folder ``DIR`` holds: ``run.json`` (the run's ``RunConfig``: every setting, typed),
``class_names.json``, ``groupings/`` (``grouping_<b>.txt``, and ``confusion.npy`` when they were
derived), ``checkpoints/``, ``tensorboard/``, ``held_out_confusion.npy`` (a baseline's
confusion on held-out training images, for ``--groupings=auto``), ``metrics.json``,
``model.keras`` and ``analysis/`` (the files of ``python -m ssal_keras.analyze``).
"""

import json
import os
import tempfile

import numpy as np

CONFIG_FILE = "run.json"
#: The record of runs written before ``run.json`` (flagfile lines), still read.
LEGACY_FLAGS_FILE = "flags.txt"
CLASS_NAMES_FILE = "class_names.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
HELD_OUT_CONFUSION_FILE = "held_out_confusion.npy"
GROUPINGS_DIR = "groupings"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
ANALYSIS_DIR = "analysis"


def umask():
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_from_temp(path, write, suffix=""):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=suffix)
    os.close(handle)
    try:
        write(temp)
        # mkstemp makes the file private; the finished file gets the usual permissions.
        os.chmod(temp, 0o666 & ~umask())
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_bytes(path, content):
    """Writes ``content`` to ``path`` through a temporary file in the same folder (atomic)."""
    def write(temp):
        with open(temp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    _replace_from_temp(path, write)


def write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, value):
    """Writes ``value`` as indented JSON (no NaN), atomically."""
    write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_npy(path, array):
    """Saves a NumPy array, atomically."""
    _replace_from_temp(path, lambda temp: np.save(temp, array), suffix=".npy")


def save_model(model, path):
    """``model.save(path)`` through a temporary ``.keras`` file (PITFALLS: save is not atomic)."""
    _replace_from_temp(path, model.save, suffix=".keras")
