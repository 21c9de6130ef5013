"""keras-cv backbones as SSAL backbones (``ssal_keras.backbones.from_keras_cv``): pyramid
levels as taps, training, the ``.keras`` round trip in safe mode, ONNX parity and the errors.

Offline and fast: tiny backbones from their constructors with random weights, no presets.
"""

import keras
import keras_cv
import numpy as np
import pytest

import ssal_keras
import ssal_keras.export as export
from ssal_keras.modeling import backbones

NUM_CLASSES = 4
GROUPINGS = ([0, 0, 1, 1], [0, 1, 1, 1])


def tiny_resnet_v2(include_rescaling=False):
    # Two blocks per stack: keras-cv 0.9 names two layers alike when a stack has one block.
    return keras_cv.models.ResNetV2Backbone(
        stackwise_filters=[8, 16], stackwise_blocks=[2, 2], stackwise_strides=[1, 2],
        input_shape=(32, 32, 3), include_rescaling=include_rescaling)


def images(count=16, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, size=(count, 32, 32, 3)).astype("float32")
    return pixels, np.arange(count) % NUM_CLASSES


def test_pyramid_levels_are_taps_of_a_classifier_sharing_the_backbone():
    backbone = tiny_resnet_v2()
    model = backbones.from_keras_cv(backbone, num_classes=NUM_CLASSES, normalization="scale")

    assert backbone.pyramid_level_inputs.keys() == {"P2", "P3"}
    assert backbones.resolve_tap(model, "P2") == backbones.Tap("P2", "P2", 32, 4)
    assert backbones.resolve_tap(model, "P3") == backbones.Tap("P3", "P3", 64, 8)
    listed = backbones.taps(model)
    assert listed["P2"] == backbones.Tap("P2", "P2", 32, 4) and "P3" in listed
    # The project's conventions: raw pixels in, then the classifier layers by their names.
    assert [model.layers[0].name, model.layers[1].name] == ["input", "preprocess"]
    assert [layer.name for layer in model.layers[-2:]] == ["avg_pool", "predictions"]
    assert model.output.shape == (None, NUM_CLASSES)
    # Shared, not copied: a pretrained backbone keeps its weights.
    assert model.get_layer("conv1_conv") is backbone.get_layer("conv1_conv")
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_ssal_model_trains_saves_loads_and_exports(tmp_path):
    classifier = backbones.from_keras_cv(
        tiny_resnet_v2(), num_classes=NUM_CLASSES, normalization="scale")
    model = ssal_keras.SSALModel(classifier, [
        ssal_keras.Branch(tap="P2", grouping=GROUPINGS[0], head=["cbr(8,3)", "gap"]),
        ssal_keras.Branch(tap="P3", grouping=GROUPINGS[1], head=["gap"]),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    pixels, labels = images()
    history = model.fit(pixels, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert {"aux_0_accuracy", "aux_1_accuracy", "joint_accuracy"} <= set(history.history)

    want = model.predict(pixels, verbose=0)
    assert want["aux_0"].shape == (16, 2) and want["joint"].shape == (16, NUM_CLASSES)
    np.testing.assert_allclose(want["joint"].sum(axis=-1), 1.0, atol=1e-5)

    path = tmp_path / "keras_cv.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert [b.tap for b in loaded.branches] == ["P2", "P3"]
    got = loaded.predict(pixels, verbose=0)
    for name in want:
        np.testing.assert_array_equal(want[name], got[name])

    # to_onnx runs the converted graph in ONNX Runtime and raises if it differs from Keras.
    report = export.to_onnx(model, str(tmp_path / "keras_cv.onnx"))
    assert report["max_abs_diff"] <= export.TOLERANCE


def test_a_backbone_that_rescales_takes_raw_pixels_without_normalization():
    backbone = tiny_resnet_v2(include_rescaling=True)
    model = backbones.from_keras_cv(backbone, num_classes=NUM_CLASSES)
    assert "preprocess" not in [layer.name for layer in model.layers]
    with pytest.raises(ValueError, match="include_rescaling=True"):
        backbones.from_keras_cv(backbone, num_classes=NUM_CLASSES, normalization="scale")


def _plain_functional():
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))


def _with_levels(model, levels):
    model.pyramid_level_inputs = levels
    return model


@pytest.mark.parametrize("backbone, received", [
    (lambda: keras.Sequential([keras.layers.Dense(2)]), "received Sequential"),
    (_plain_functional, "received Functional"),
    (lambda: None, "received NoneType"),
    (lambda: _with_levels(_plain_functional(), {}),
     "received Functional with an empty pyramid_level_inputs"),
    (lambda: _with_levels(tiny_resnet_v2(), {"P2": "no_such_layer"}), "no_such_layer"),
    (lambda: keras_cv.models.CSPDarkNetBackbone(
        stackwise_channels=[8, 16], stackwise_depth=[1, 1], include_rescaling=True,
        input_shape=(32, 32, 3)), r"stem_conv/lambda \(a Lambda layer\)"),
    # keras-cv 0.9's squeeze-excite layer does not rebuild from its JSON config.
    (lambda: keras_cv.models.MobileNetV3Backbone(
        stackwise_expansion=[1, 4], stackwise_filters=[8, 16], stackwise_kernel_size=[3, 3],
        stackwise_stride=[2, 2], stackwise_se_ratio=[0.25, None],
        stackwise_activation=["relu", "hard_swish"], include_rescaling=False,
        input_shape=(32, 32, 3)), "squeeze_and_excite2d .SqueezeAndExcite2D does not rebuild"),
])
def test_what_is_not_a_usable_keras_cv_backbone_is_refused_in_one_line(backbone, received):
    with pytest.raises(ValueError, match=received) as error:
        backbones.from_keras_cv(backbone(), num_classes=NUM_CLASSES)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("num_classes", [1, 0, True, 2.0, "3"])
def test_num_classes_must_be_an_int_of_at_least_two(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        backbones.from_keras_cv(tiny_resnet_v2(), num_classes=num_classes)


def test_the_public_name():
    assert ssal_keras.backbones.from_keras_cv is backbones.from_keras_cv
    assert "from_keras_cv" in backbones.__all__
