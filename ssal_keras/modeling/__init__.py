"""The model: backbones with taps, SSAL heads, the joint prediction and the SSAL model.

Backend-neutral Keras 3 code (``keras.ops`` and ``keras.layers`` only), bottom to top:
``names`` (the output names), ``graph`` (a model's layers through public Keras API),
``loaded_configs`` (the guards on a loaded ``.keras`` file's config) -> ``blocks`` (layer
styles and residual blocks) -> ``backbones`` (the paper's networks, which declare their taps)
-> ``heads`` (auxiliary networks) -> ``joint`` (the fused prediction) -> ``losses`` ->
``model`` (``SSALModel``, ``Branch``) -> ``outputs`` (what a model holds, for the floors
above) -> ``paper`` (the paper's configurations) -> ``weight_decay`` (which parameters
decay).
"""
