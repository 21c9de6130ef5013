"""Whether a classifier's probabilities can be trusted, and temperature scaling to make them
so (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).

* ``expected_calibration_error``: ECE over equal-mass bins of the top-1 confidence (15 bins by
  default, each holding the same number of examples, so no bin is nearly empty: Nixon et al.,
  "Measuring Calibration in Deep Learning", 2019).
* ``negative_log_likelihood`` and ``brier_score``: proper scores of the whole distribution.
* ``fit_temperature``: the one temperature ``T`` that minimises the NLL of
  ``softmax(log p / T)`` on held-out examples (never the test split), found by SciPy's bounded
  scalar minimiser over ``log T``; ``apply_temperature`` applies it. For SSAL it applies to
  the base output and to the joint output alike: the joint is itself a softmax of summed log
  probabilities (docs/method.md, section 1), so dividing its logs by ``T`` is the same
  scaling.

NumPy and SciPy only (and the shared input check of ``grouping.checks``): it scores
predictions already made.
"""

import numpy as np
from scipy import optimize

from ssal_keras.grouping.checks import check_predictions

ECE_BINS = 15
# log T is searched in [-LOG_T_BOUND, LOG_T_BOUND]: T from 1/20 to 20, far beyond the
# 0.5..3 trained networks need; an optimum on the bound means the fit did not converge.
LOG_T_BOUND = 3.0
_SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


def apply_temperature(probabilities, temperature):
    """``softmax(log p / temperature)``: the probabilities at another temperature."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0; received {temperature!r}.")
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), _SMALLEST_PROBABILITY))
    scaled = logits / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exponentials = np.exp(scaled)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def negative_log_likelihood(probabilities, labels):
    """Mean ``-log p(label)`` (natural log)."""
    probabilities, labels = check_predictions(probabilities, labels)
    chosen = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(chosen, _SMALLEST_PROBABILITY))))


def brier_score(probabilities, labels):
    """Mean over examples of ``sum_c (p_c - [c == label])^2`` (0 is perfect, 2 the worst)."""
    probabilities, labels = check_predictions(probabilities, labels)
    one_hot = np.zeros_like(probabilities)
    one_hot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=-1)))


def reliability_bins(probabilities, labels, bins=ECE_BINS):
    """The top-1 confidence sorted into ``bins`` equal-mass bins (sizes differ by at most one):
    ``(mean confidence, accuracy, examples)`` of each, from the least confident up."""
    probabilities, labels = check_predictions(probabilities, labels)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1; received {bins!r}.")
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    order = np.argsort(confidence, kind="stable")
    return [(float(confidence[part].mean()), float(correct[part].mean()), int(len(part)))
            for part in np.array_split(order, min(bins, len(order)))]


def expected_calibration_error(probabilities, labels, bins=ECE_BINS):
    """ECE: the examples-weighted mean gap between each equal-mass bin's accuracy and its mean
    top-1 confidence."""
    table = reliability_bins(probabilities, labels, bins)
    total = sum(count for _, _, count in table)
    return float(sum(count * abs(accuracy - confidence)
                     for confidence, accuracy, count in table) / total)


def fit_temperature(probabilities, labels):
    """The temperature ``T`` minimising the NLL of ``softmax(log p / T)`` on these (held-out)
    examples: SciPy's bounded Brent minimiser over ``log T`` (the NLL is convex in ``1 / T``).

    Raises:
        ValueError: bad input, or an optimum on the search bound (``T`` below 1/20 or above
            20): the probabilities carry no usable confidence to rescale.
    """
    probabilities, labels = check_predictions(probabilities, labels)
    logits = np.log(np.maximum(probabilities, _SMALLEST_PROBABILITY))
    rows = np.arange(len(labels))

    def nll(log_t):
        scaled = logits / np.exp(log_t)
        scaled -= scaled.max(axis=-1, keepdims=True)
        log_normaliser = np.log(np.exp(scaled).sum(axis=-1))
        return float(np.mean(log_normaliser - scaled[rows, labels]))

    result = optimize.minimize_scalar(nll, bounds=(-LOG_T_BOUND, LOG_T_BOUND),
                                      method="bounded", options={"xatol": 1e-6})
    if not result.success or abs(result.x) > LOG_T_BOUND - 1e-3:
        raise ValueError(f"the temperature fit did not converge (optimum at T = "
                         f"{np.exp(result.x):.3g}, the search bound); the held-out "
                         "probabilities carry no usable confidence: check the model and labels.")
    return float(np.exp(result.x))


def calibration_report(probabilities, labels, temperature=None, bins=ECE_BINS):
    """ECE, NLL and Brier score of ``probabilities``, and at ``temperature`` when given:
    ``{"ece", "nll", "brier"[, "temperature", "calibrated": {...}]}``."""
    def scores(p):
        return {"ece": expected_calibration_error(p, labels, bins),
                "nll": negative_log_likelihood(p, labels), "brier": brier_score(p, labels)}

    report = scores(probabilities)
    if temperature is not None:
        report["temperature"] = float(temperature)
        report["calibrated"] = scores(apply_temperature(probabilities, temperature))
    return report
