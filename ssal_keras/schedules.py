"""Learning-rate schedules of the paper's runs (SPEC section 5)."""

import keras
from keras import ops

DECAYS = ("linear", "step", "cosine", "constant")


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
