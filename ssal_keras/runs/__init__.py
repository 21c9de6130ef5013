"""A run folder: its file names and atomic, durable writers (``writer``, re-exported here) and
the lock that keeps one trainer per folder (``lock``), at the bottom of the package: they import
nothing of it, so any module may write files. A finished run read back with its typed config is
``runs.reader``, which sits above training (README, "Layout")."""

from ssal_keras.runs.writer import (
    ANALYSIS_DIR,
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
    "ANALYSIS_DIR", "CLASS_NAMES_FILE", "CONFIG_FILE", "GROUPINGS_DIR",
    "HELD_OUT_CONFUSION_FILE", "LEGACY_FLAGS_FILE", "METRICS_FILE", "MODEL_FILE",
    "PARTIAL_PREFIX", "SCRATCH_PREFIX", "TENSORBOARD_DIR", "clean_leftovers", "read_json",
    "save_model", "write_bytes", "write_json", "write_npy", "write_text",
]
