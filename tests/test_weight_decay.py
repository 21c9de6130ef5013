"""Which parameters decay and at which rate (ssal_keras.weight_decay, docs/authors_settings.md,
section 3)."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import ssal_keras
from ssal_keras.modeling import weight_decay
from ssal_keras.training.resolved import LossSettings


def tiny_ssal_model():
    """A tiny WRN with the authors' layers (conv biases) and a head with a hidden dense."""
    backbone = ssal_keras.backbones.wide_resnet(
        depth=10, width=1, style=ssal_keras.backbones.AUTHORS_WRN_STYLE, num_classes=4,
        input_shape=(16, 16, 3))
    return ssal_keras.SSALModel(backbone, [ssal_keras.Branch(
        tap="stage2", grouping=[0, 0, 1, 1], head=["cbr(8,3)", "gap", "dense(6)"])])


def classes_by_path(model):
    classes = weight_decay.parameter_classes(model)
    return {v.path: classes.get(id(v)) for v in model.trainable_variables}


def test_every_trainable_parameter_has_a_class():
    classes = classes_by_path(tiny_ssal_model())
    assert None not in classes.values()
    assert classes["stem_conv/kernel"] == "conv_kernel"
    assert classes["stem_conv/bias"] == "conv_bias"
    assert classes["stem_bn/gamma"] == classes["stem_bn/beta"] == "norm"
    assert classes["predictions/kernel"] == "dense_kernel"
    assert classes["predictions/bias"] == "dense_bias"
    assert classes["aux_0_1_cbr_conv/bias"] == "aux_conv_bias"
    assert classes["aux_0_1_cbr_bn/gamma"] == "aux_norm"
    assert classes["aux_0_3_dense/kernel"] == classes["aux_0/kernel"] == "aux_dense_kernel"
    assert set(classes.values()) == set(weight_decay.PARAMETER_CLASSES)


def test_the_authors_wrn_decay():
    """keras/train.py:213-220: l2(7e-4) (1.4e-3 w) on backbone conv and dense kernels and
    biases and on the heads' dense layers; l2(3e-4) (6e-4 w) on head conv kernels only."""
    model = tiny_ssal_model()
    rates = weight_decay.decay_rates(
        model, weight_decay=1.4e-3, aux_weight_decay=6e-4,
        decayed=["conv_kernel", "conv_bias", "dense_kernel", "dense_bias", "aux_dense_kernel",
                 "aux_dense_bias"],
        aux_decayed=["aux_conv_kernel"])
    by_path = {v.path: r for v, r in zip(model.trainable_variables, rates)}
    assert by_path["stem_conv/bias"] == by_path["predictions/bias"] == 1.4e-3
    assert by_path["aux_0_3_dense/kernel"] == by_path["aux_0/bias"] == 1.4e-3
    assert by_path["aux_0_1_cbr_conv/kernel"] == 6e-4
    assert by_path["aux_0_1_cbr_conv/bias"] == 0.0 and by_path["stem_bn/gamma"] == 0.0


def test_default_is_kernels_only():
    model = tiny_ssal_model()
    rates = weight_decay.decay_rates(model, weight_decay=5e-4, aux_weight_decay=1e-4)
    for variable, rate in zip(model.trainable_variables, rates):
        expected = (1e-4 if variable.path.startswith("aux_") else 5e-4) if (
            variable.path.endswith("kernel")) else 0.0
        assert rate == expected, variable.path


@pytest.mark.parametrize(
    "decayed, aux_decayed, match",
    [
        (["conv_kernels"], [], "names 'conv_kernels', which is not a parameter class; valid"),
        (["norm"], ["norm"], "parameter class 'norm' is in both"),
    ],
)
def test_bad_classes(decayed, aux_decayed, match):
    with pytest.raises(ValueError, match=match):
        weight_decay.check_classes(decayed, aux_decayed)


def test_trainer_adds_rate_times_weight_to_the_gradient():
    """One SGD step at learning rate 1 without momentum: each weight moves by its gradient
    plus rate * w; a class outside both lists (BatchNorm here) moves by its gradient alone."""
    from ssal_keras.training import trainer  # noqa: PLC0415  (TensorFlow's trainer)

    model = tiny_ssal_model()
    rates = weight_decay.decay_rates(model, weight_decay=0.5, aux_weight_decay=0.25,
                                     decayed=["conv_bias"], aux_decayed=["aux_dense_kernel"])
    trainer = trainer.Trainer.__new__(trainer.Trainer)  # only the step's arithmetic is exercised
    trainer.model, trainer.decay_rates = model, rates
    trainer.strategy = tf.distribute.get_strategy()
    trainer.global_batch_size = 2
    trainer.run = types.SimpleNamespace(loss=LossSettings(label_smoothing=0.0,
                                                         label_smoothing_mode="uniform"))
    trainer.loss_terms = model.loss_terms()
    trainer.outputs_scored = ["base", "aux_0", "joint"]
    trainer.optimizer = keras.optimizers.SGD(1.0)
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    labels = np.array([0, 3])
    _, with_decay, _ = trainer._replica_loss_and_gradients(images, labels)
    trainer.decay_rates = [0.0] * len(rates)
    _, plain, _ = trainer._replica_loss_and_gradients(images, labels)
    for v, rate, g, g0 in zip(model.trainable_variables, rates, with_decay, plain):
        np.testing.assert_allclose(g - g0, rate * v.numpy(), rtol=1e-5, atol=1e-7,
                                   err_msg=v.path)
    assert sum(r > 0 for r in rates) >= 3

    # float16's loss scaling: gradients and decay terms both come scaled (the optimizer
    # unscales them); the scale is a power of two, so the products are exact.
    trainer.decay_rates = rates
    trainer.optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(1.0))
    trainer.optimizer.build(model.trainable_variables)
    _, scaled, _ = trainer._replica_loss_and_gradients(images, labels)
    scale = float(trainer.optimizer.dynamic_scale.numpy())
    assert scale == 2.0 ** 15
    for g, gs in zip(with_decay, scaled):
        np.testing.assert_allclose(gs, scale * np.asarray(g), rtol=1e-6, atol=1e-6)
