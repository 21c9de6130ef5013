"""The files of a run folder, each written atomically (a kill never leaves half a file).

A run folder ``DIR`` holds: ``run.json`` (the run's ``RunConfig``: every setting, typed),
``class_names.json``, ``groupings/`` (``grouping_<b>.txt``, and ``confusion.npy`` when they were
derived), ``checkpoints/``, ``tensorboard/``, ``held_out_confusion.npy`` (a baseline's
confusion on held-out training images, for ``--groupings=auto``), ``metrics.json``,
``model.keras`` and ``analysis/`` (the files of ``python -m ssal_keras.analyze``).
"""

import json
import os
import secrets

import numpy as np

CONFIG_FILE = "run.json"
#: The record of runs written before ``run.json`` (flagfile lines), still read.
LEGACY_FLAGS_FILE = "flags.txt"
CLASS_NAMES_FILE = "class_names.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
HELD_OUT_CONFUSION_FILE = "held_out_confusion.npy"
GROUPINGS_DIR = "groupings"
TENSORBOARD_DIR = "tensorboard"
ANALYSIS_DIR = "analysis"


#: Prefix of the temporary files of the atomic writes; ``clean_leftovers`` removes those a
#: killed process left behind.
PARTIAL_PREFIX = ".partial-"
#: Prefix of the scratch folders of non-chief workers (``training.checkpoints``).
SCRATCH_PREFIX = ".scratch_"


def _fsync_folder(folder):
    """Makes a rename in ``folder`` durable: the folder's entry is on disk, not only the
    file's bytes (POSIX; a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _new_partial(folder, suffix):
    """A new empty file for a write in progress. Created with mode 0o666, so the kernel
    applies the process umask itself: no process-wide umask change, which TensorFlow's
    threads could observe."""
    while True:
        path = os.path.join(folder, f"{PARTIAL_PREFIX}{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return path
        except FileExistsError:
            continue


def _replace_from_temp(path, write, suffix=""):
    """Writes ``path`` through ``write(temp)`` on a temporary file beside it, then publishes it
    with one rename and makes the rename durable."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = _new_partial(folder, suffix)
    try:
        write(temp)
        handle = os.open(temp, os.O_RDONLY)  # the bytes on disk before the name points at them
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temp, path)
        _fsync_folder(folder)
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def clean_leftovers(model_dir, log=print):
    """Removes the ``.partial-*`` files killed atomic writes left in a run folder and its
    sub-folders. Call it while holding the run's lock. (Killed checkpoint saves leave their own
    leftovers: ``training.checkpoints.clean_leftovers``; a non-chief worker's scratch folder is
    its own to clear.)"""
    removed = []
    for folder, names, files in os.walk(model_dir):
        names[:] = [n for n in names if not n.startswith(SCRATCH_PREFIX)]
        removed += [os.path.join(folder, n) for n in files if n.startswith(PARTIAL_PREFIX)]
    for path in removed:
        os.remove(path)
    if removed:
        log(f"removed {len(removed)} leftover(s) of an interrupted write: "
            f"{', '.join(os.path.relpath(p, model_dir) for p in removed[:3])}"
            + (" ..." if len(removed) > 3 else ""))
    return removed


def write_bytes(path, content):
    """Writes ``content`` to ``path`` through a temporary file in the same folder (atomic and
    durable: the bytes and the rename are on disk when it returns)."""
    def write(temp):
        with open(temp, "wb") as f:
            f.write(content)
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
    """``model.save(path)`` through a temporary ``.keras`` file: save is not atomic
    (docs/stack_notes.md, section 3)."""
    _replace_from_temp(path, model.save, suffix=".keras")
