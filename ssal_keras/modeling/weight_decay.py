"""Which parameters carry weight decay, and how much (docs/authors_settings.md, section 3).

The trainer adds ``rate * w`` to each parameter's gradient (PyTorch SGD's ``weight_decay``; a
Keras ``l2(c)`` regulariser is the rate ``2c``). Which parameters decay differs from run to
run in the authors' code, so it is a setting: every trainable parameter falls into one
*class*, named by the part of the model and the kind of weight,

=====================================  ================================================
class                                  parameters
=====================================  ================================================
``conv_kernel`` / ``conv_bias``        backbone convolutions
``dense_kernel`` / ``dense_bias``      backbone dense layers (the classifier, SE gates)
``norm``                               backbone BatchNorm scale and offset
``aux_conv_kernel`` ... ``aux_norm``   the same kinds in the SSAL heads (layers ``aux_*``)
=====================================  ================================================

and the run lists the classes that take ``--weight_decay`` and those that take
``--aux_weight_decay``. A class in neither list does not decay; a class in both is refused.
"""

import keras

from ssal_keras.modeling import names

BACKBONE_CLASSES = ("conv_kernel", "conv_bias", "dense_kernel", "dense_bias", "norm")
# A head class is its backbone kind under the branch output prefix, as the heads' layers are named.
HEAD_CLASSES = tuple(names.AUX_PREFIX + c for c in BACKBONE_CLASSES)
PARAMETER_CLASSES = BACKBONE_CLASSES + HEAD_CLASSES

#: Kernels only, each part at its own rate: the classic choice and the trainer's default.
DEFAULT_DECAYED = ("conv_kernel", "dense_kernel")
DEFAULT_AUX_DECAYED = ("aux_conv_kernel", "aux_dense_kernel")

# Weight attribute -> kind, per layer type.
_KINDS = (
    (keras.layers.BatchNormalization, {"gamma": "norm", "beta": "norm"}),
    (keras.layers.Conv2D, {"kernel": "conv_kernel", "bias": "conv_bias"}),
    (keras.layers.Dense, {"kernel": "dense_kernel", "bias": "dense_bias"}),
)


def check_classes(decayed, aux_decayed):
    """Validates the two lists of decayed classes; returns them as tuples.

    Raises:
        ValueError: naming an unknown class (and the valid ones), or a class in both lists.
    """
    decayed, aux_decayed = tuple(decayed), tuple(aux_decayed)
    for arg, values in (("weight_decay_params", decayed),
                        ("aux_weight_decay_params", aux_decayed)):
        for value in values:
            if value not in PARAMETER_CLASSES:
                raise ValueError(
                    f"{arg} names {value!r}, which is not a parameter class; valid: "
                    f"{', '.join(PARAMETER_CLASSES)}.")
    both = sorted(set(decayed) & set(aux_decayed))
    if both:
        raise ValueError(
            f"parameter class {both[0]!r} is in both weight_decay_params and "
            "aux_weight_decay_params; a class takes one rate, list it once.")
    return decayed, aux_decayed


def _layers(model):
    """Every layer of the model, nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def parameter_classes(model):
    """The class of each trainable variable, keyed by ``id(variable)`` (``None``: other)."""
    classes = {}
    for layer in _layers(model):
        kinds = next((k for t, k in _KINDS if isinstance(layer, t)), {})
        # SSALModel names each head's layers after its branch output (aux_<b>...).
        prefix = names.AUX_PREFIX if layer.name.startswith(names.AUX_PREFIX) else ""
        for attribute, kind in kinds.items():
            variable = getattr(layer, attribute, None)
            if variable is not None and variable.trainable:
                classes[id(variable)] = prefix + kind
    return classes


def decay_rates(model, *, weight_decay, aux_weight_decay, decayed=DEFAULT_DECAYED,
                aux_decayed=DEFAULT_AUX_DECAYED):
    """The decay rate of each of ``model.trainable_variables``, in that order.

    Example:

    >>> import ssal_keras
    >>> model = ssal_keras.backbones.build("resnet_fashion_mnist", num_classes=10)
    >>> rates = decay_rates(model, weight_decay=5e-4, aux_weight_decay=0.0,
    ...                     decayed=("conv_kernel",))
    >>> sorted({v.path.split("/")[-1] for v, r in zip(model.trainable_variables, rates) if r})
    ['kernel']

    Args:
        model: keras.Model. Heads are the layers named ``aux_*`` (``SSALModel``'s).
        weight_decay: float. Rate of the classes in ``decayed``.
        aux_weight_decay: float. Rate of the classes in ``aux_decayed``.
        decayed: sequence of str. Classes at ``weight_decay`` (any of ``PARAMETER_CLASSES``:
            the authors' WRN run puts the heads' dense layers here).
        aux_decayed: sequence of str. Classes at ``aux_weight_decay``.

    Returns:
        list of float.
    """
    rate_of = rates_by_class(weight_decay=weight_decay, aux_weight_decay=aux_weight_decay,
                             decayed=decayed, aux_decayed=aux_decayed)
    classes = parameter_classes(model)
    return [rate_of.get(classes.get(id(v)), 0.0) for v in model.trainable_variables]


def rates_by_class(*, weight_decay, aux_weight_decay, decayed=DEFAULT_DECAYED,
                   aux_decayed=DEFAULT_AUX_DECAYED):
    """The decay rate of every one of ``PARAMETER_CLASSES`` (0 for a class in neither list).

    Raises:
        ValueError: as ``check_classes``.
    """
    decayed, aux_decayed = check_classes(decayed, aux_decayed)
    rates = {c: 0.0 for c in PARAMETER_CLASSES}
    rates.update({c: float(weight_decay) for c in decayed})
    rates.update({c: float(aux_weight_decay) for c in aux_decayed})
    return rates
