"""A run's checkpoints: the folder's layout, saving, restoring with fallback and the clean-up of
what a killed save leaves. The only module that knows TensorFlow's checkpoint file names.

Layout: ``MODEL_DIR/checkpoints/ckpt-N.{index,data-*}`` (``N`` the global step) and
TensorFlow's ``checkpoint`` index file. Only the chief writes there; every other worker must
take part in each save (a collective), so it saves into a scratch folder of its own,
``MODEL_DIR/.scratch_<task>_<index>/checkpoints``, removed when it ends (TensorFlow's
multi-worker tutorial). Every worker restores from the chief's folder.
"""

import os
import shutil

import tensorflow as tf

from ssal_keras import runs

CHECKPOINTS_DIR = "checkpoints"
# tf.train.CheckpointManager's names: ckpt-N.index beside its data shards, and the folder
# ckpt-N_temp a save writes into before it renames its files.
_PREFIX = "ckpt-"
_INDEX_SUFFIX = ".index"
_TEMP_SUFFIX = "_temp"
# How many checkpoints the manager keeps: the fallback needs more than one.
KEEP = 3


def files(folder):
    """The checkpoint prefixes in ``folder`` (``.../ckpt-N``), newest first, found by their
    ``.index`` files rather than by TensorFlow's ``checkpoint`` index file (which a kill can
    leave naming a checkpoint that is not there)."""
    numbered = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        number = name[len(_PREFIX):-len(_INDEX_SUFFIX)]
        if name.startswith(_PREFIX) and name.endswith(_INDEX_SUFFIX) and number.isdigit():
            numbered.append((int(number), os.path.join(folder, name[:-len(_INDEX_SUFFIX)])))
    return [path for _, path in sorted(numbered, reverse=True)]


def clean_leftovers(model_dir, log=print):
    """Removes the ``ckpt-N_temp`` folders killed saves left in the run's checkpoints folder.
    Call it while holding the run's lock. Returns the removed paths."""
    folder = os.path.join(model_dir, CHECKPOINTS_DIR)
    removed = [os.path.join(folder, name) for name in
               (os.listdir(folder) if os.path.isdir(folder) else [])
               if name.endswith(_TEMP_SUFFIX) and os.path.isdir(os.path.join(folder, name))]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    if removed:
        log(f"removed {len(removed)} leftover(s) of an interrupted checkpoint: "
            + ", ".join(os.path.relpath(p, model_dir) for p in removed))
    return removed


class RunCheckpoints:
    """The checkpoints of one worker of a run.

    Args:
        model_dir: str. The run folder.
        objects: dict. What a checkpoint holds (``tf.train.Checkpoint``'s keyword arguments:
            model, optimizer, data position).
        chief: bool. Whether this worker writes the run's checkpoints.
        task: ``(task_type, task_index)`` of this worker (names its scratch folder).
        log: callable. Prints one line.
    """

    def __init__(self, model_dir, objects, *, chief, task, log=print):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.chief = chief
        self.log = log
        # Also where a non-chief worker writes its other files (TensorBoard): all is removed.
        self.worker_dir = model_dir if chief else os.path.join(
            model_dir, f"{runs.SCRATCH_PREFIX}{task[0]}_{task[1]}")
        if not chief:  # what a killed earlier start of this worker left
            shutil.rmtree(self.worker_dir, ignore_errors=True)
        self.restore_dir = os.path.join(model_dir, CHECKPOINTS_DIR)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(self.worker_dir, CHECKPOINTS_DIR), max_to_keep=KEEP)

    @property
    def latest(self):
        """The newest checkpoint this worker saved or found, or None."""
        return self.manager.latest_checkpoint

    def restore(self):
        """Restores the newest readable checkpoint of the run; returns its path, or None when
        the run has none. An unreadable newest one (a kill in the middle of its write, a
        damaged disk) falls back to the one before, saying so.

        Raises:
            ValueError: when checkpoints exist and none of them can be read (never a silent
                restart from epoch 1).
        """
        candidates = files(self.restore_dir)
        if candidates and self.chief and self.latest != candidates[0]:
            self.log(f"{os.path.join(self.restore_dir, 'checkpoint')} does not name "
                     f"{candidates[0]}: the checkpoints are read from their files")
        for index, path in enumerate(candidates):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                return path
            except Exception as error:  # noqa: BLE001  (damage shows as many error types)
                problem = f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"
                if index + 1 == len(candidates):
                    raise ValueError(
                        f"no readable checkpoint in {self.restore_dir}: the oldest, {path}, "
                        f"fails too ({problem}); move the checkpoints away to restart the run "
                        "from epoch 1.") from None
                self.log(f"checkpoint {path} is unreadable ({problem}); falling back to "
                         f"{candidates[index + 1]}")
        return None

    def save(self, number):
        """Saves a checkpoint numbered ``number`` (the global step)."""
        self.manager.save(checkpoint_number=number)

    def close(self):
        """A non-chief worker removes its scratch folder."""
        if not self.chief:
            shutil.rmtree(self.worker_dir, ignore_errors=True)
