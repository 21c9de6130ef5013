"""A run folder: its file names and atomic, durable writers (``writer``), a finished run read
back with its typed config (``reader``), and the lock that keeps one trainer per folder
(``lock``). Every tool that writes or reads a run folder goes through here."""

from ssal_keras.runs.reader import TrainedRun, load, read_config
from ssal_keras.runs.writer import (
    ANALYSIS_DIR,
    CHECKPOINTS_DIR,
    CLASS_NAMES_FILE,
    CONFIG_FILE,
    GROUPINGS_DIR,
    HELD_OUT_CONFUSION_FILE,
    LEGACY_FLAGS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PARTIAL_PREFIX,
    SCRATCH_PREFIX,
    TENSORBOARD_DIR,
    clean_leftovers,
    read_json,
    save_model,
    write_bytes,
    write_json,
    write_npy,
    write_text,
)

__all__ = [
    "ANALYSIS_DIR", "CHECKPOINTS_DIR", "CLASS_NAMES_FILE", "CONFIG_FILE", "GROUPINGS_DIR",
    "HELD_OUT_CONFUSION_FILE", "LEGACY_FLAGS_FILE", "METRICS_FILE", "MODEL_FILE",
    "PARTIAL_PREFIX", "SCRATCH_PREFIX", "TENSORBOARD_DIR", "TrainedRun", "clean_leftovers",
    "load", "read_config", "read_json", "save_model",
    "write_bytes", "write_json", "write_npy", "write_text",
]
