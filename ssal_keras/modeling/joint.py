"""The joint prediction: base and auxiliary softmaxes fused into one (docs/method.md, section 1)."""

import numbers
import os

import keras
import numpy as np
from keras import ops

from ssal_keras import grouping as grouping_lib
from ssal_keras.modeling import names

# Probabilities are clamped here before the logarithm: the smallest normal float32. Softmax
# outputs below it only occur for logit gaps over ~87, where float32 has no digits left anyway.
_SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)

# Caps on what a loaded config (a .keras file from anywhere) may ask for, checked before
# anything is allocated: a config of a few bytes must not make the loader allocate gigabytes.
MAX_CLASSES = 1_000_000
"""Most classes (group ids in one grouping) a loaded model or JointPrediction config may have."""
MAX_BRANCHES = 256
"""Most groupings (branches) a loaded config may have."""
MAX_GROUP_IDS = 10_000_000
"""Most group ids a loaded config may hold in all its groupings together."""


def _as_groupings(groupings):
    if isinstance(groupings, np.ndarray) and groupings.ndim == 1:
        raise ValueError(
            "groupings must be a list with one grouping per branch, e.g. [grouping]; "
            "received a single 1-D array."
        )
    checked = []
    for index, g in enumerate(groupings):
        checked.append(grouping_lib.validate_grouping(g, name=f"groupings[{index}]"))
    if not checked:
        raise ValueError("groupings is empty; give one grouping (a group id per class) per branch.")
    num_classes = {len(g) for g in checked}
    if len(num_classes) != 1:
        raise ValueError(
            f"groupings have different lengths {[len(g) for g in checked]}; each needs one "
            "group id per class of the same classifier."
        )
    return checked


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_config_grouping(grouping, name, where="model"):
    """Checks one grouping of a loaded config is an inline list of ids of bounded size.

    A config may come from an untrusted ``.keras`` file, so nothing here opens a file or
    allocates in proportion to a number in it (``validate_grouping`` checks the ids after).

    Args:
        grouping: the config's value: a list (or tuple, or 1-D int array) of group ids.
        name: str. How the grouping is called in the message, e.g. ``"branches[0].grouping"``.
        where: str. Whose config it is, for the message: ``"model"``, ``"JointPrediction"``.

    Returns:
        int. The number of classes of the grouping.

    Raises:
        ValueError: a path or any other non-list, over ``MAX_CLASSES`` entries, entries that
            are not ints, or a group id not below the number of classes.
    """
    head = f"{name} in the {where} config must be a list of group ids"
    if isinstance(grouping, (str, bytes, os.PathLike)):
        raise ValueError(f"{head}; a path is refused when loading a model (a .keras file "
                         "never reads other files).")
    array_ok = isinstance(grouping, np.ndarray) and grouping.ndim == 1 and (
        grouping.dtype.kind in "iu")
    if not (array_ok or isinstance(grouping, (list, tuple))):
        raise ValueError(f"{head}; received {type(grouping).__name__}.")
    if len(grouping) > MAX_CLASSES:
        raise ValueError(f"{head} of at most {MAX_CLASSES:,} classes (joint.MAX_CLASSES); "
                         f"received {len(grouping):,} ids.")
    if not array_ok and not all(_is_int(g) for g in grouping):
        bad = next(g for g in grouping if not _is_int(g))
        raise ValueError(f"{head}, whole numbers; received an entry {bad!r:.40}.")
    top = (grouping.max() if array_ok else max(grouping)) if len(grouping) else -1
    if top >= len(grouping):
        raise ValueError(f"{name} in the {where} config has group id {int(top)} but "
                         f"{len(grouping)} classes; group ids are below the number of classes.")
    return len(grouping)


def check_config_groupings(groupings, name, where="model"):
    """Checks the groupings of a loaded config with ``check_config_grouping``, and their count
    (``MAX_BRANCHES``) and total size (``MAX_GROUP_IDS``); ``name`` has a ``{}`` for the index.
    """
    if not isinstance(groupings, (list, tuple)) or len(groupings) > MAX_BRANCHES:
        received = (f"{len(groupings):,}" if isinstance(groupings, (list, tuple))
                    else type(groupings).__name__)
        raise ValueError(f"the {where} config must hold a list of at most {MAX_BRANCHES} "
                         f"groupings (joint.MAX_BRANCHES); received {received}.")
    total = 0
    for index, grouping in enumerate(groupings):
        total += check_config_grouping(grouping, name.format(index), where)
        if total > MAX_GROUP_IDS:
            raise ValueError(
                f"the groupings in the {where} config hold over {MAX_GROUP_IDS:,} group ids "
                f"in all (joint.MAX_GROUP_IDS); refused before allocating.")


def validate_alpha(alpha):
    """Checks the combination exponent: a finite number >= 0 (docs/method.md, section 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.number)) or not (
        np.isfinite(alpha) and alpha >= 0
    ):
        raise ValueError(
            f"alpha must be a finite number >= 0 (the paper uses 0.3-0.5); received alpha={alpha!r}."
        )
    return float(alpha)


@keras.saving.register_keras_serializable(package="ssal_keras")
class JointPrediction(keras.layers.Layer):
    """Fuses the base softmax with the auxiliary softmaxes of the SSAL branches.

    ``p_joint(i) ∝ p_base(i) * prod_b p_aux_b(g_b(i)) ** alpha`` (docs/method.md, section 1),
    computed in log space and renormalised with a softmax, so it stays exact where the plain product
    of probabilities underflows (many classes, confident branches that disagree with the base).

    Args:
        groupings: list of 1-D int arrays. One per branch, one group id per class.
        alpha: float. Combination exponent >= 0 that weakens the auxiliary votes; 0 returns the
            base prediction.

    Call arguments:
        inputs: list of tensors ``[base, aux_0, ..., aux_{B-1}]``: probabilities of shape
            ``(batch, C)`` and ``(batch, K_b)``.

    Example:

    >>> import numpy as np
    >>> layer = JointPrediction(groupings=[[0, 0, 1]], alpha=1.0)
    >>> joint = layer([np.array([[0.5, 0.3, 0.2]]), np.array([[0.1, 0.9]])])
    >>> np.round(keras.ops.convert_to_numpy(joint).astype(float), 3).tolist()
    [[0.192, 0.115, 0.692]]
    """

    def __init__(self, groupings, alpha=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.groupings = _as_groupings(groupings)
        self.alpha = validate_alpha(alpha)
        self.num_classes = len(self.groupings[0])

    def build(self, input_shape):
        shapes = list(input_shape)
        if len(shapes) != 1 + len(self.groupings):
            raise ValueError(
                f"JointPrediction with {len(self.groupings)} grouping(s) takes "
                f"{1 + len(self.groupings)} inputs [{names.BASE}, {names.aux_name(0)}, ...]; "
                f"received {len(shapes)}."
            )
        if shapes[0][-1] != self.num_classes:
            raise ValueError(
                f"the base output has {shapes[0][-1]} classes but the groupings have "
                f"{self.num_classes} labels; give one group id per class."
            )
        for index, (shape, g) in enumerate(zip(shapes[1:], self.groupings)):
            if shape[-1] != int(g.max()) + 1:
                raise ValueError(
                    f"{names.aux_name(index)} has {shape[-1]} outputs but groupings[{index}] has "
                    f"{int(g.max()) + 1} groups; the head's width must equal the group count."
                )

    def call(self, inputs):
        base, *aux = inputs

        def log_prob(p):
            return ops.log(ops.clip(ops.cast(p, "float32"), _SMALLEST_PROBABILITY, 1.0))

        log_joint = log_prob(base)
        for probs, g in zip(aux, self.groupings):
            # Each class reads the log-probability of its own group: a gather along classes.
            log_joint = log_joint + self.alpha * ops.take(log_prob(probs), g, axis=-1)
        return ops.softmax(log_joint, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    @classmethod
    def from_config(cls, config):
        """The layer of ``get_config``'s dict, its groupings bounded first (a loaded file)."""
        check_config_groupings(config.get("groupings"), "groupings[{}]", "JointPrediction")
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(groupings=[g.tolist() for g in self.groupings], alpha=self.alpha)
        return config
