"""The joint prediction: base and auxiliary softmaxes fused into one (docs/method.md, section 1)."""

import keras
import numpy as np
from keras import ops

from ssal_keras import grouping as grouping_lib
from ssal_keras.modeling import loaded_configs, names

# Probabilities are clamped here before the logarithm: the smallest normal float32. Softmax
# outputs below it only occur for logit gaps over ~87, where float32 has no digits left anyway.
_SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


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
        loaded_configs.check_groupings(config.get("groupings"), "groupings[{}]",
                                       "JointPrediction")
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(groupings=[g.tolist() for g in self.groupings], alpha=self.alpha)
        return config
