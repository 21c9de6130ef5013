"""Training: ``RunConfig`` (every setting of a run, typed; ``RunConfig.resolve()`` gives the
records of ``resolved``) and ``train(config, model_dir)`` (one run, in-process: what
``python -m ssal_keras.train`` calls), over ``trainer`` (the distributed loop),
``checkpoints`` (the run's checkpoint folder), ``distribute`` (strategies) and ``schedules``
(learning rates).

A notebook trains, evaluates and exports through this API::

    from ssal_keras.training import RunConfig, train
    config = RunConfig.from_flagfile("models/fashion_mnist_ssal.flags", epochs=3)
    metrics = train(config, "runs/notebook")
"""

from ssal_keras.training.config import RunConfig
from ssal_keras.training.run import dry_run, resolve_settings, train

__all__ = ["RunConfig", "dry_run", "resolve_settings", "train"]
