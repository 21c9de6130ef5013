"""Learning-rate schedules of the paper's runs (docs/authors_settings.md, section 2).

- ``WarmupSchedule``: per-step linear warm-up, then a linear, step, cosine or constant decay.
- ``EpochTriangularSchedule``: the authors' CIFAR schedule, exactly (docs/authors_settings.md,
  section 2.1).
- ``PiecewiseLinearSchedule``: the authors' ImageNet schedule, exactly (docs/authors_settings.md,
  section 2.2).
"""

import math
import numbers

import keras
from keras import ops

__all__ = ["DECAYS", "WarmupSchedule", "EpochTriangularSchedule", "PiecewiseLinearSchedule"]

DECAYS = ("linear", "step", "cosine", "constant")


def _check_peak(peak):
    """``peak`` as a float; a one-line ValueError unless it is a finite number > 0."""
    if isinstance(peak, bool) or not isinstance(peak, numbers.Real) or not (
            math.isfinite(peak) and peak > 0):
        raise ValueError(f"peak must be a finite number > 0; received peak={peak!r}.")
    return float(peak)


def _check_int(name, value, low, high=None, high_text=None):
    """``value`` as an int; a one-line ValueError unless it is an integer in [low, high]."""
    valid = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high_text}]"
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or int(value) != value
            or value < low or (high is not None and value > high)):
        raise ValueError(f"{name} must be {valid}; received {name}={value!r}.")
    return int(value)


def _global_step(step):
    """The optimizer's 0-based step as an int64 tensor (negative steps read as 0)."""
    return ops.maximum(ops.cast(step, "int64"), 0)


@keras.saving.register_keras_serializable(package="ssal_keras")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to a peak, then a decay to the last step.

    - ``decay="linear"`` is the CIFAR runs' "slanted triangular" schedule: a linear rise over
      the first 10 epochs, then a linear fall to ``final_fraction * peak`` at the last step.
    - ``decay="step"`` multiplies by ``step_factor`` at each of ``step_boundaries`` (the usual
      ImageNet ResNet50 recipe: 5 warm-up epochs, x0.1 at epochs 30, 60, 80).
    - ``decay="cosine"`` follows half a cosine to ``final_fraction * peak``; ``"constant"``
      stays at the peak.

    Args:
        peak: float. The learning rate at the end of the warm-up.
        warmup_steps: int. Steps of the linear rise (0: start at the peak).
        total_steps: int. Steps of the whole run.
        decay: str. One of ``DECAYS``.
        final_fraction: float. Learning rate at the last step, as a fraction of the peak.
        step_boundaries: list of int. Steps at which ``decay="step"`` drops the rate.
        step_factor: float. The factor of each drop.
    """

    def __init__(self, peak, warmup_steps, total_steps, decay="linear", final_fraction=0.0,
                 step_boundaries=(), step_factor=0.1):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}; received decay={decay!r}.")
        if not total_steps >= 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"need 0 <= warmup_steps <= total_steps and total_steps >= 1; received "
                f"warmup_steps={warmup_steps}, total_steps={total_steps}."
            )
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.decay = decay
        self.final_fraction = float(final_fraction)
        self.step_boundaries = [int(b) for b in step_boundaries]
        self.step_factor = float(step_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        # The first step already trains at 1/warmup of the peak, not at zero.
        warmup = self.peak * ops.minimum((step + 1.0) / max(self.warmup_steps, 1), 1.0)
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        final = self.peak * self.final_fraction
        if self.decay == "linear":
            after = self.peak + (final - self.peak) * progress
        elif self.decay == "cosine":
            after = final + 0.5 * (self.peak - final) * (1.0 + ops.cos(3.141592653589793 * progress))
        elif self.decay == "step":
            drops = sum(ops.cast(step >= b, "float32") for b in self.step_boundaries)
            after = self.peak * ops.power(self.step_factor, drops)
        else:
            after = ops.convert_to_tensor(self.peak)
        return ops.where(step < self.warmup_steps, warmup, after)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
            "final_fraction": self.final_fraction,
            "step_boundaries": list(self.step_boundaries),
            "step_factor": self.step_factor,
        }


class _EpochBasedSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The constructor and config shared by the authors' two schedules."""

    min_warmup_epochs = 0

    def __init__(self, peak, steps_per_epoch, epochs, warmup_epochs):
        self.peak = _check_peak(peak)
        self.steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
        self.epochs = _check_int("epochs", epochs, 1)
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, self.min_warmup_epochs,
                                        self.epochs, f"epochs={self.epochs}")

    def get_config(self):
        return {
            "peak": self.peak,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
        }


@keras.saving.register_keras_serializable(package="ssal_keras")
class EpochTriangularSchedule(_EpochBasedSchedule):
    """The authors' CIFAR schedule: per epoch, a linear rise then a linear fall (never to 0).

    docs/authors_settings.md, section 2.1; the authors' ``lr_scheduler`` (keras/helper.py:356-369),
    applied once per epoch through Keras's ``LearningRateScheduler`` (keras/train.py:260). The rate
    is constant within an epoch. With the 0-based epoch ``e = step // steps_per_epoch``,
    ``E = epochs`` and ``W = warmup_epochs`` (the authors' ``max_epoch``, 10):

    - ``e < W``: ``peak * (e + 1) / W``, i.e. 0.1, 0.2, ..., 1.0 x peak for W = 10; the peak is
      reached in epoch index ``W - 1``.
    - ``e >= W``: ``peak * (1 - (e + 1 - W) / (E + 1 - W))``. The last epoch (e = E - 1) runs at
      ``peak / (E + 1 - W)``: peak/71 for E = 80, peak/91 for E = 100.

    Steps past the last epoch keep the last epoch's rate (the authors never reach them).

    Args:
        peak: float > 0. The learning rate of epoch index ``warmup_epochs - 1``.
        steps_per_epoch: int >= 1. Optimizer steps per epoch.
        epochs: int >= 1. Epochs of the whole run.
        warmup_epochs: int in [0, epochs]. Epochs of the rise (0: start on the fall).
    """

    def __init__(self, peak, steps_per_epoch, epochs, warmup_epochs=10):
        super().__init__(peak, steps_per_epoch, epochs, warmup_epochs)

    def __call__(self, step):
        # The 0-based epoch, by integer division (exact at any step count).
        epoch = ops.floor_divide(_global_step(step), self.steps_per_epoch)
        epoch = ops.cast(ops.minimum(epoch, self.epochs - 1), "float32")
        rise = (epoch + 1.0) / float(max(self.warmup_epochs, 1))
        # 1 - (e+1-W)/(E+1-W), written as one quotient of small integers.
        fall = (float(self.epochs) - epoch) / float(self.epochs + 1 - self.warmup_epochs)
        return self.peak * ops.where(epoch < self.warmup_epochs, rise, fall)


@keras.saving.register_keras_serializable(package="ssal_keras")
class PiecewiseLinearSchedule(_EpochBasedSchedule):
    """The authors' ImageNet schedule: per step, piecewise linear in the fractional epoch.

    docs/authors_settings.md, section 2.2; the authors' ``PiecewiseLinear`` with knots
    ``[0, W - 1, E]`` and factors ``[1/W, 1, 0]`` (pytorch/train.py:88,
    pytorch/helpers.py:123-132), evaluated with ``np.interp`` (clamped at both ends) before every
    optimizer step at ``x = epoch + i / n``, where ``epoch`` is 1-based (1..E), ``i`` the step
    within the epoch and ``n`` the steps per epoch (pytorch/trainer.py:247, 314, 335). From the
    optimizer's 0-based global step: ``epoch = step // n + 1``, ``i = step % n``.

    With W = 5, E = 90 the first step runs at 0.4 x peak (x = 1), the factor reaches 1 at x = 4
    (the start of the 4th epoch), falls linearly to 0 at x = 90, and all of epoch 90 runs at 0.

    Between the knots the factor is ``(1 + x) / W`` (rise) and ``(E - x) / (E + 1 - W)`` (fall);
    the shape is concave, so it is the smaller of the two, clamped at 0 from ``x = E`` on.
    Since ``x = epoch + i / n = (step + n) / n``, both are computed as an integer numerator
    over an integer denominator, ``(step + 2n) / (n W)`` and ``(E n - n - step) / (n (E + 1 - W))``:
    accurate to float32 rounding at any step count (90 x 12,812 = 1.15M steps), including the
    tiny rates just before epoch E, and exactly 0 throughout epoch E.

    Args:
        peak: float > 0. The learning rate at ``x = warmup_epochs - 1``.
        steps_per_epoch: int >= 1. Optimizer steps per epoch (the authors' ``n``).
        epochs: int >= 1. Epochs of the whole run (the last knot).
        warmup_epochs: int in [1, epochs]. The authors' ``warmup`` (5): the first factor is
            ``1 / warmup_epochs`` and the peak knot is ``warmup_epochs - 1``.
    """

    min_warmup_epochs = 1  # knots [0, W - 1, E] must increase

    def __init__(self, peak, steps_per_epoch, epochs, warmup_epochs=5):
        super().__init__(peak, steps_per_epoch, epochs, warmup_epochs)

    def __call__(self, step):
        n = self.steps_per_epoch
        step = _global_step(step)
        # x = (step // n + 1) + (step % n) / n = (step + n) / n; integers until the last division.
        rise = ops.cast(step + 2 * n, "float32") / float(n * self.warmup_epochs)
        fall = ops.cast((self.epochs - 1) * n - step, "float32") / float(
            n * (self.epochs + 1 - self.warmup_epochs))
        return self.peak * ops.maximum(ops.minimum(rise, fall), 0.0)
