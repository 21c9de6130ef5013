"""Calibration scores and temperature scaling (``ssal_keras.evaluation.calibration``)."""

import numpy as np
import pytest

from ssal_keras.evaluation import calibration


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)


def _calibrated_set(examples=20000, classes=10, seed=0):
    """Logits and labels drawn from their own softmax: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(examples, classes))
    probabilities = _softmax(logits)
    labels = (rng.random((examples, 1)) > probabilities.cumsum(axis=-1)).sum(axis=-1)
    return logits, np.minimum(labels, classes - 1)


def test_ece_is_near_zero_when_calibrated_and_the_gap_when_overconfident():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, size=40000)
    probabilities = np.stack([confidence, 1 - confidence], axis=-1)
    right = rng.random(40000) < confidence
    labels = np.where(right, 0, 1)
    assert calibration.expected_calibration_error(probabilities, labels) < 0.01
    worse = rng.random(40000) < confidence - 0.2  # 20 points less often right than it says
    labels = np.where(worse, 0, 1)
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(
        0.2, abs=0.01)


def test_bins_hold_equal_mass_from_the_least_confident_up():
    probabilities = _softmax(np.random.default_rng(2).normal(size=(31, 4)))
    table = calibration.reliability_bins(probabilities, np.zeros(31, int), bins=15)
    counts = [count for _, _, count in table]
    assert len(table) == 15 and sum(counts) == 31 and max(counts) - min(counts) <= 1
    confidences = [c for c, _, _ in table]
    assert confidences == sorted(confidences)


def test_nll_and_brier_of_a_small_case():
    probabilities = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    labels = np.array([0, 2])
    assert calibration.negative_log_likelihood(probabilities, labels) == pytest.approx(
        -(np.log(0.5) + np.log(0.1)) / 2)
    assert calibration.brier_score(probabilities, labels) == pytest.approx(
        ((0.25 + 0.0625 + 0.0625) + (0.01 + 0.64 + 0.81)) / 2)


def test_fit_temperature_recovers_the_overconfidence_and_lowers_ece_and_nll():
    logits, labels = _calibrated_set()
    overconfident = _softmax(2.5 * logits)
    temperature = calibration.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    report = calibration.calibration_report(overconfident, labels, temperature)
    assert report["temperature"] == temperature
    assert report["calibrated"]["ece"] < report["ece"] / 3
    assert report["calibrated"]["nll"] < report["nll"]
    assert report["calibrated"]["brier"] < report["brier"]
    # Temperature 1 changes nothing.
    np.testing.assert_allclose(calibration.apply_temperature(overconfident, 1.0), overconfident,
                               atol=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: calibration.fit_temperature(np.array([[0.9, 0.1]] * 50), np.ones(50, int)),
     "the temperature fit did not converge"),
    (lambda: calibration.brier_score(np.array([[0.5, 0.5]]), np.array([0, 1])),
     "labels must be 1 integer class ids"),
    (lambda: calibration.negative_log_likelihood(np.array([[0.5, 0.5]]), np.array([2])),
     r"labels must be class ids in 0\.\.1"),
    (lambda: calibration.apply_temperature(np.array([[0.5, 0.5]]), 0.0),
     "temperature must be a finite number > 0"),
    (lambda: calibration.expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0]),
                                                     bins=0),
     "bins must be an integer >= 1"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)
