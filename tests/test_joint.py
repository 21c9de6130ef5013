"""JointPrediction against a NumPy log-space reference (docs/method.md, section 1)."""

import keras
import numpy as np
import pytest

import ssal_keras


def reference_joint(base, aux, groupings, alpha):
    """float64 log-space fusion: log p_base(i) + alpha * sum_b log p_aux_b(g_b(i)), renormalised."""
    log_joint = np.log(base.astype(np.float64))
    for probs, g in zip(aux, groupings):
        log_joint = log_joint + alpha * np.log(probs.astype(np.float64))[:, g]
    log_joint -= log_joint.max(axis=-1, keepdims=True)
    p = np.exp(log_joint)
    return p / p.sum(axis=-1, keepdims=True)


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run(layer, base, aux):
    return keras.ops.convert_to_numpy(layer([base, *aux]))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.5])
def test_matches_reference_on_random_probabilities(alpha):
    rng = np.random.default_rng(1)
    groupings = [rng.permutation(np.arange(12) % k) for k in (3, 4, 6)]
    base = softmax(rng.normal(size=(5, 12)) * 3).astype("float32")
    aux = [softmax(rng.normal(size=(5, k)) * 3).astype("float32") for k in (3, 4, 6)]
    layer = ssal_keras.JointPrediction(groupings, alpha=alpha)
    got = run(layer, base, aux)
    np.testing.assert_allclose(got, reference_joint(base, aux, groupings, alpha), atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=-1), 1.0, atol=1e-6)
    if alpha == 0.0:
        np.testing.assert_allclose(got, base, atol=1e-6)


def test_exact_where_the_plain_product_underflows():
    # 1000 classes; the base is sure of class 0, three branches are each sure of a different
    # group of other classes. Every class then collects at least three factors of 1e-30.
    num_classes, tiny = 1000, 1e-30
    groupings = [np.arange(num_classes) % k for k in (200, 334, 500)]
    base = np.full((1, num_classes), tiny)
    base[0, 0] = 1.0 - tiny * (num_classes - 1)
    aux = []
    for g, favourite in zip(groupings, (1, 2, 3)):
        probs = np.full((1, g.max() + 1), tiny)
        probs[0, favourite] = 1.0 - tiny * g.max()
        aux.append(probs)
    base, aux = base.astype("float32"), [a.astype("float32") for a in aux]

    plain = base * np.prod([a[:, g] for a, g in zip(aux, groupings)], axis=0)
    assert np.all(plain == 0.0), "the case must underflow in float32 to test anything"

    got = run(ssal_keras.JointPrediction(groupings, alpha=1.0), base, aux)
    want = reference_joint(base, aux, groupings, 1.0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert got.argmax() == want.argmax()


def test_config_round_trip():
    layer = ssal_keras.JointPrediction([[0, 1, 1, 0], [0, 1, 2, 0]], alpha=0.4, name="joint")
    clone = ssal_keras.JointPrediction.from_config(layer.get_config())
    assert clone.alpha == 0.4
    assert [g.tolist() for g in clone.groupings] == [[0, 1, 1, 0], [0, 1, 2, 0]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(groupings=[[0, 1]], alpha=-0.1), "alpha"),
        (dict(groupings=[[0, 1]], alpha=float("nan")), "alpha"),
        (dict(groupings=[], alpha=1.0), "groupings is empty"),
        (dict(groupings=np.array([0, 1]), alpha=1.0), "one grouping per branch"),
        (dict(groupings=[[0, 1], [0, 1, 1]], alpha=1.0), "different lengths"),
        (dict(groupings=[[0, 2]], alpha=1.0), "groupings\\[0\\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssal_keras.JointPrediction(**kwargs)


def test_input_mismatches_are_named():
    layer = ssal_keras.JointPrediction([[0, 0, 1]], alpha=1.0)
    with pytest.raises(ValueError, match="base output has 4 classes"):
        layer([np.ones((1, 4), "float32") / 4, np.ones((1, 2), "float32") / 2])
    layer = ssal_keras.JointPrediction([[0, 0, 1]], alpha=1.0)
    with pytest.raises(ValueError, match="aux_0 has 3 outputs"):
        layer([np.ones((1, 3), "float32") / 3, np.ones((1, 3), "float32") / 3])
    layer = ssal_keras.JointPrediction([[0, 0, 1]], alpha=1.0)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        layer([np.ones((1, 3), "float32") / 3])
