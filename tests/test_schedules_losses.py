"""The learning-rate schedules and the (label-smoothed) cross-entropy."""

import keras
import numpy as np
import pytest

from ssal_keras.losses import SparseCrossentropy, sparse_crossentropy
from ssal_keras.schedules import WarmupSchedule


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
