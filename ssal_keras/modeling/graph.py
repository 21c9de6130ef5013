"""A model's layers and the layer behind a tensor, through Keras's public API where it has
one: the modules that walk a model (BatchNorm synchronisation, CAMs, the SSAL model's checks,
FLOP counts) ask here instead of reading Keras's private attributes."""

import keras


def is_functional(model):
    """Whether ``model`` is a functional ``keras.Model`` (built from ``keras.Input``): a layer
    graph that can be tapped, which a subclassed model or a ``Sequential`` is not."""
    # ``keras.Function`` (public) is the graph every functional model is built on.
    return isinstance(model, keras.Model) and isinstance(model, keras.Function)


def all_layers(model):
    """Every layer of ``model``, nested models' and custom layers' sublayers included, in
    order (``model`` itself left out)."""
    # Keras 3 has no public walk into the sublayers a custom layer holds (``Model.layers``
    # lists direct layers only); ``_flatten_layers`` is the walk Keras itself uses for its
    # variables, kept here as the package's one use of it.
    return list(model._flatten_layers(include_self=False))


def producing_layer(model, tensor):
    """The layer of ``model`` whose output is the symbolic ``tensor``.

    Raises:
        ValueError: when no layer of ``model`` outputs ``tensor``.
    """
    for layer in all_layers(model):
        try:
            output = layer.output
        except (AttributeError, ValueError, RuntimeError):  # unbuilt, or called several times
            continue
        if output is tensor:
            return layer
    raise ValueError(f"no layer of {model.name} outputs {tensor.name}; give a tensor of the "
                     "model's own graph.")
