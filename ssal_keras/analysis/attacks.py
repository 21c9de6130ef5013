"""Adversarial examples crafted against the base classifier only (supplement E.3).

The attacker sees the base output alone, not the SSAL branches: the gradient is that of the
base output's cross-entropy. FGSM (Goodfellow et al., 2015) takes one step of ``epsilon`` along
the gradient's sign; BIM (Kurakin et al., 2016) takes steps of one pixel level and clips to the
``epsilon`` ball after each, for ``min(epsilon*255 + 4, 1.25*epsilon*255)`` steps (rounded up),
Kurakin et al.'s rule.

``epsilon`` is a fraction of the pixel range: the models take raw pixels in 0..255, so an
``epsilon`` of 0.01 changes a pixel by at most 2.55 levels. Adversarial images are clipped to
0..255. Gradients come from ``tf.GradientTape``: this module is TensorFlow's.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from ssal_keras.evaluation import scoring
from ssal_keras.modeling import outputs

ATTACKS = ("fgsm", "bim")
PIXEL_RANGE = 255.0


def validate_epsilons(epsilons):
    """Epsilons as a sorted list of floats in [0, 1]; raises ValueError naming a bad one."""
    values = []
    for raw in epsilons:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"epsilon {raw!r} is not a number; give fractions of the pixel "
                             "range such as --epsilons=0,0.01,0.03.") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon {raw!r} is outside [0, 1]; epsilons are fractions of the "
                             "pixel range, e.g. 0.01 for 2.55 of 255 levels.")
        values.append(value)
    if not values:
        raise ValueError("no epsilons given; e.g. --epsilons=0,0.01,0.03.")
    return sorted(set(values))


def bim_iterations(epsilon):
    """Kurakin et al.'s number of BIM steps for ``epsilon`` (a fraction of the pixel range)."""
    levels = epsilon * PIXEL_RANGE
    # Rounded first, so that 16/255 of the range gives 20 steps, not 21 from 20.000000000000004.
    return int(math.ceil(round(min(levels + 4.0, 1.25 * levels), 9)))


class BaseAttack:
    """FGSM and BIM against a model's base output.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier taking raw pixels.
        jit_compile: bool. Compile the gradient step with XLA.
    """

    def __init__(self, model, *, jit_compile=True):
        base = outputs.outputs_by_name(model.output)[outputs.BASE]
        self.base_model = keras.Model(model.inputs[0], base, name="attacked_base")
        self._sign_of_gradient = tf.function(self._gradient_sign, jit_compile=jit_compile)

    def _gradient_sign(self, images, labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            probabilities = self.base_model(images, training=False)
            loss = keras.losses.sparse_categorical_crossentropy(labels, probabilities)
        return tf.sign(tape.gradient(loss, images))

    def __call__(self, attack, images, labels, epsilon):
        """Adversarial versions of a batch of images.

        Args:
            attack: str. ``"fgsm"`` or ``"bim"``.
            images: float array ``(N, H, W, C)``. Raw pixels 0..255.
            labels: int array ``(N,)``. True classes.
            epsilon: float. Largest change per pixel, as a fraction of the pixel range.

        Returns:
            A float32 ``tf.Tensor`` of the adversarial images.
        """
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; use one of {', '.join(ATTACKS)}.")
        images = tf.convert_to_tensor(images, tf.float32)
        labels = tf.convert_to_tensor(labels, tf.int32)
        budget = float(epsilon) * PIXEL_RANGE
        if budget == 0.0:
            return images
        if attack == "fgsm":
            step = self._sign_of_gradient(images, labels)
            return tf.clip_by_value(images + budget * step, 0.0, PIXEL_RANGE)
        adversarial = images
        for _ in range(bim_iterations(epsilon)):
            step = self._sign_of_gradient(adversarial, labels)
            adversarial = tf.clip_by_value(adversarial + step, images - budget, images + budget)
            adversarial = tf.clip_by_value(adversarial, 0.0, PIXEL_RANGE)
        return adversarial


def robustness(model, batches, *, attack, epsilons, jit_compile=True):
    """Error of every output of ``model`` on examples crafted against its base output.

    Args:
        model: keras.Model. An ``SSALModel`` or a plain classifier.
        batches: iterable of ``(images, labels)``, re-iterable (one pass per epsilon).
        attack: str. ``"fgsm"`` or ``"bim"``.
        epsilons: sequence of float. Fractions of the pixel range (``validate_epsilons``).
        jit_compile: bool. Compile the gradient step with XLA.

    Returns:
        A list with one dict per epsilon: ``epsilon``, ``base_error``, ``joint_error`` (None
        for a plain classifier), ``aux_error`` (group error of each branch), ``examples``,
        and ``bim_iterations`` for BIM.
    """
    epsilons = validate_epsilons(epsilons)
    attacker = BaseAttack(model, jit_compile=jit_compile)
    groupings = outputs.model_groupings(model)
    num_classes = scoring.base_classes(model)
    results = []
    for epsilon in epsilons:
        accuracy = scoring.Accuracy(groupings, num_classes)
        for images, labels in batches:
            adversarial = attacker(attack, images, labels, epsilon)
            accuracy.update(model(adversarial, training=False), np.asarray(labels))
        scores = accuracy.result()
        error = lambda rate: None if rate is None else 1.0 - rate  # noqa: E731
        result = {
            "epsilon": epsilon,
            "base_error": error(scores["base_top1"]),
            "joint_error": error(scores["joint_top1"]),
            "aux_error": [error(rate) for rate in scores["aux_top1"]],
            "examples": scores["examples"],
        }
        if attack == "bim":
            result["bim_iterations"] = bim_iterations(epsilon)
        results.append(result)
    return results
