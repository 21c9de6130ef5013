"""The one evaluation of a model (``scoring``): top-1/top-5 of every output, group accuracy of
every branch and the mistakes that stay in a group. It sits below training because the
trainer's per-epoch evaluation and ``python -m ssal_keras.evaluate`` must be the same code;
and whether its probabilities can be trusted (``calibration``: ECE, NLL, Brier, temperature
scaling)."""
