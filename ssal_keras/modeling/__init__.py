"""The model: backbones with taps, SSAL heads, the joint prediction and the SSAL model.

Backend-neutral Keras 3 code (``keras.ops`` and ``keras.layers`` only), top to bottom:
``outputs`` (the output names and what a model holds) -> ``blocks`` (layer styles and
residual blocks) -> ``backbones`` (the paper's networks and their taps) -> ``heads``
(auxiliary networks) -> ``joint`` (the fused prediction) -> ``model`` (``SSALModel``,
``Branch``) -> ``losses`` -> ``paper`` (the paper's configurations) -> ``weight_decay``
(which parameters decay).
"""
