"""The learning-rate schedules and the (label-smoothed) cross-entropy."""

import keras
import numpy as np
import pytest

from ssal_keras.modeling.losses import SparseCrossentropy, sparse_crossentropy
from ssal_keras.training.schedules import (
    EpochTriangularSchedule,
    PiecewiseLinearSchedule,
    WarmupSchedule,
)


def rates(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_slanted_triangular():
    schedule = WarmupSchedule(0.1, warmup_steps=10, total_steps=100, decay="linear")
    got = rates(schedule, [0, 4, 9, 10, 55, 99, 100])
    np.testing.assert_allclose(got, [0.01, 0.05, 0.1, 0.1, 0.05, 0.1 / 90, 0.0], atol=1e-7)


def test_warmup_then_steps_and_cosine():
    step = WarmupSchedule(0.4, warmup_steps=5, total_steps=90, decay="step",
                          step_boundaries=[30, 60, 80])
    np.testing.assert_allclose(rates(step, [4, 29, 30, 60, 85]),
                               [0.4, 0.4, 0.04, 0.004, 0.0004], rtol=1e-5)
    cosine = WarmupSchedule(1.0, warmup_steps=0, total_steps=100, decay="cosine")
    np.testing.assert_allclose(rates(cosine, [0, 50, 100]), [1.0, 0.5, 0.0], atol=1e-6)


def test_schedule_round_trip_and_errors():
    schedule = WarmupSchedule(0.1, warmup_steps=3, total_steps=9, decay="step",
                              step_boundaries=[6])
    clone = WarmupSchedule.from_config(schedule.get_config())
    np.testing.assert_allclose(rates(clone, range(9)), rates(schedule, range(9)))
    with pytest.raises(ValueError, match="decay must be one of"):
        WarmupSchedule(0.1, warmup_steps=0, total_steps=9, decay="exponential")
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        WarmupSchedule(0.1, warmup_steps=10, total_steps=9)



# --- The authors' two schedules, exactly (docs/authors_settings.md, sections 2.1 and 2.2). ----


def authors_cifar_rates(peak, steps_per_epoch, epochs, warmup_epochs):
    """docs/authors_settings.md, section 2.1 (keras/helper.py:356-369): one rate per 0-based epoch,
    repeated per step."""
    per_epoch = [peak * (e + 1) / warmup_epochs if e < warmup_epochs
                 else peak * (1 - (e + 1 - warmup_epochs) / (epochs + 1 - warmup_epochs))
                 for e in range(epochs)]
    return np.repeat(per_epoch, steps_per_epoch)


def authors_imagenet_rate(peak, steps_per_epoch, epochs, warmup_epochs, steps):
    """docs/authors_settings.md, section 2.2: np.interp at x = iteration / n,
    iteration = epoch * n + i, epoch 1-based."""
    steps = np.asarray(steps, dtype=np.int64)
    n = steps_per_epoch
    epoch, i = steps // n + 1, steps % n
    x = (epoch * n + i) / n
    return peak * np.interp(x, [0, warmup_epochs - 1, epochs], [1 / warmup_epochs, 1, 0])


def vector_rates(schedule, steps):
    return keras.ops.convert_to_numpy(schedule(np.asarray(steps, dtype=np.int64))).astype(float)


@pytest.mark.parametrize("peak, steps_per_epoch, epochs, warmup_epochs", [
    (0.1, 3, 20, 10), (0.05, 1, 12, 4), (1.0, 5, 7, 7), (0.2, 2, 6, 0), (0.3, 4, 1, 1),
])
def test_epoch_triangular_every_step(peak, steps_per_epoch, epochs, warmup_epochs):
    schedule = EpochTriangularSchedule(peak, steps_per_epoch, epochs, warmup_epochs)
    want = authors_cifar_rates(peak, steps_per_epoch, epochs, warmup_epochs)
    steps = np.arange(epochs * steps_per_epoch)
    np.testing.assert_allclose(vector_rates(schedule, steps), want, rtol=1e-6)
    np.testing.assert_allclose(rates(schedule, steps), want, rtol=1e-6)
    assert want.min() > 0  # never 0
    # Past the last epoch the last epoch's rate holds.
    np.testing.assert_allclose(rates(schedule, [epochs * steps_per_epoch, 10**7]),
                               [want[-1]] * 2, rtol=1e-6)


@pytest.mark.parametrize("epochs, last_divisor", [(80, 71), (100, 91)])
def test_epoch_triangular_at_the_papers_sizes(epochs, last_divisor):
    peak, n = 0.1, 781
    schedule = EpochTriangularSchedule(peak, steps_per_epoch=n, epochs=epochs, warmup_epochs=10)
    steps = [0, n - 1, n, 9 * n - 1, 9 * n, 10 * n - 1, 10 * n,
             (epochs - 1) * n, epochs * n - 1]
    want = [0.1 * peak, 0.1 * peak, 0.2 * peak, 0.9 * peak, peak, peak,
            peak * (1 - 1 / last_divisor), peak / last_divisor, peak / last_divisor]
    np.testing.assert_allclose(rates(schedule, steps), want, rtol=1e-6)
    every = np.arange(epochs * n)
    np.testing.assert_allclose(vector_rates(schedule, every),
                               authors_cifar_rates(peak, n, epochs, 10), rtol=1e-6)


@pytest.mark.parametrize("peak, steps_per_epoch, epochs, warmup_epochs", [
    (0.4, 4, 12, 5), (0.1, 3, 6, 1), (1.0, 7, 5, 5), (0.3, 1, 10, 2), (0.2, 6, 1, 1),
])
def test_piecewise_linear_every_step(peak, steps_per_epoch, epochs, warmup_epochs):
    schedule = PiecewiseLinearSchedule(peak, steps_per_epoch, epochs, warmup_epochs)
    steps = np.arange((epochs + 1) * steps_per_epoch)  # one epoch past the end: clamped at 0
    want = authors_imagenet_rate(peak, steps_per_epoch, epochs, warmup_epochs, steps)
    np.testing.assert_allclose(vector_rates(schedule, steps), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(rates(schedule, steps), want, rtol=1e-6, atol=1e-9)
    last_epoch = rates(schedule, steps[(epochs - 1) * steps_per_epoch:])
    assert (last_epoch == 0).all()


def test_piecewise_linear_at_the_imagenet_size():
    peak, n, epochs = 0.1 * 100 / 256, 12812, 90
    schedule = PiecewiseLinearSchedule(peak, steps_per_epoch=n, epochs=epochs, warmup_epochs=5)
    # x = 1 (first step), x = 4 (start of epoch 4: the peak), x = 47 (factor 43/86 = 0.5).
    np.testing.assert_allclose(rates(schedule, [0, 3 * n, 46 * n]),
                               [0.4 * peak, peak, 0.5 * peak], rtol=1e-6)
    # The whole last epoch (epoch 90, x >= 90) runs at exactly 0; the step before it does not.
    last = vector_rates(schedule, np.arange(89 * n, 90 * n))
    assert (last == 0).all()
    assert rates(schedule, [89 * n - 1])[0] > 0
    # Every 997th step of the run, and the last few steps before epoch 90 (tiny rates), match
    # np.interp to float32 rounding.
    steps = np.concatenate([np.arange(0, epochs * n, 997), np.arange(89 * n - 50, 89 * n)])
    np.testing.assert_allclose(vector_rates(schedule, steps),
                               authors_imagenet_rate(peak, n, epochs, 5, steps), rtol=2e-7)
    # Through a real optimizer, whose step is an int64 variable.
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.iterations.assign(60 * n + 1234)
    np.testing.assert_allclose(
        float(optimizer.learning_rate),
        authors_imagenet_rate(peak, n, epochs, 5, [60 * n + 1234])[0], rtol=2e-7)


@pytest.mark.parametrize("cls", [EpochTriangularSchedule, PiecewiseLinearSchedule])
def test_authors_schedules_round_trip(cls):
    schedule = cls(0.05, steps_per_epoch=7, epochs=12, warmup_epochs=3)
    config = keras.saving.serialize_keras_object(schedule)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is cls
    assert clone.get_config() == schedule.get_config() == {
        "peak": 0.05, "steps_per_epoch": 7, "epochs": 12, "warmup_epochs": 3}
    steps = np.arange(12 * 7)
    np.testing.assert_array_equal(vector_rates(clone, steps), vector_rates(schedule, steps))
    assert cls.from_config(schedule.get_config()).get_config() == schedule.get_config()


@pytest.mark.parametrize("cls", [EpochTriangularSchedule, PiecewiseLinearSchedule])
@pytest.mark.parametrize("kwargs, match", [
    ({"warmup_epochs": 11}, r"warmup_epochs must be an integer in \[\d, epochs=10\]; "
                            r"received warmup_epochs=11\."),
    ({"steps_per_epoch": 0}, r"steps_per_epoch must be an integer >= 1; received "
                             r"steps_per_epoch=0\."),
    ({"steps_per_epoch": 2.5}, r"steps_per_epoch must be an integer >= 1"),
    ({"epochs": 0}, r"epochs must be an integer >= 1; received epochs=0\."),
    ({"warmup_epochs": -1}, r"warmup_epochs must be an integer in"),
    ({"peak": 0.0}, r"peak must be a finite number > 0; received peak=0\.0\."),
    ({"peak": float("nan")}, r"peak must be a finite number > 0"),
])
def test_authors_schedules_reject_bad_arguments(cls, kwargs, match):
    args = {"peak": 0.1, "steps_per_epoch": 5, "epochs": 10, "warmup_epochs": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        cls(**args)


def test_warmup_epochs_zero_only_for_the_triangular_schedule():
    # The CIFAR formula is defined without a rise (max_epoch=0); np.interp's knots [0, -1, E]
    # are not increasing, so the ImageNet schedule needs warmup_epochs >= 1.
    schedule = EpochTriangularSchedule(1.0, steps_per_epoch=1, epochs=4, warmup_epochs=0)
    np.testing.assert_allclose(rates(schedule, range(4)), [0.8, 0.6, 0.4, 0.2], rtol=1e-6)
    with pytest.raises(ValueError, match=r"warmup_epochs must be an integer in \[1, epochs=4\]; "
                                         r"received warmup_epochs=0\."):
        PiecewiseLinearSchedule(1.0, steps_per_epoch=1, epochs=4, warmup_epochs=0)


def test_label_smoothing_matches_the_formula():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    labels = np.array([0, 2])
    plain = keras.ops.convert_to_numpy(sparse_crossentropy(labels, probs))
    np.testing.assert_allclose(plain, -np.log([0.7, 0.8]), rtol=1e-5)
    smoothed = keras.ops.convert_to_numpy(sparse_crossentropy(labels, probs, label_smoothing=0.3))
    targets = np.full((2, 3), 0.1)
    targets[[0, 1], labels] = 0.8
    np.testing.assert_allclose(smoothed, -(targets * np.log(probs)).sum(-1), rtol=1e-5)
    loss = SparseCrossentropy(0.3)
    assert SparseCrossentropy.from_config(loss.get_config()).label_smoothing == 0.3
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        SparseCrossentropy(1.0)


def test_label_smoothing_the_authors_way():
    """``"others"``: 1 - s on the label, s/(K-1) on each other class (to_categorical_smooth,
    docs/authors_settings.md, section 7.1), e.g. 0.9 and 0.1/99 for CIFAR100's fine labels."""
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    labels = np.array([0, 2])
    smoothed = keras.ops.convert_to_numpy(sparse_crossentropy(
        labels, probs, label_smoothing=0.1, label_smoothing_mode="others"))
    targets = np.full((2, 3), 0.1 / 2)
    targets[[0, 1], labels] = 0.9
    np.testing.assert_allclose(smoothed, -(targets * np.log(probs)).sum(-1), rtol=1e-5)
    uniform = keras.ops.convert_to_numpy(sparse_crossentropy(labels, probs, label_smoothing=0.1))
    assert not np.allclose(smoothed, uniform)
    loss = SparseCrossentropy(0.1, "others")
    assert SparseCrossentropy.from_config(loss.get_config()).label_smoothing_mode == "others"
    with pytest.raises(ValueError, match="label_smoothing_mode must be one of"):
        SparseCrossentropy(0.1, "textbook")
