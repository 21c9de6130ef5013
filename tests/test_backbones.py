"""Tests of ssal_keras.backbones: the seven paper backbones (docs/method.md, section 3), their taps
(docs/method.md, section 4), tiny variants of each family, save/load, and argument errors.

The big models are built once per module (``_big``) and never trained; everything that
runs data uses tiny variants or a single image.
"""

import functools
import json
import os
import sys
import zipfile

import keras
import numpy as np
import pytest

import ssal_keras
from ssal_keras.modeling import backbones
from ssal_keras.modeling.backbones import Tap

# The module (the package's name ``taps`` is its function that lists a model's taps).
taps_module = sys.modules["ssal_keras.modeling.backbones.taps"]

_NUM_CLASSES = {
    "resnet18_tiny_imagenet": 200,
    "resnet50_cifar": 100,
    "se_wrn_16_8": 100,
    "wrn_28_10": 100,
    "densenet_bc_100_12": 100,
    "densenet_bc_190_40": 100,
    "resnet50_imagenet": 1000,
    "resnet50_keras_applications": 1000,
    "resnet_fashion_mnist": 10,
}

# Keras count_params() (BatchNorm moving statistics included): ours, pinned exactly, and the
# paper's figure (docs/method.md, section 3). Ours are within 0.12% of every figure.
_PARAMS = {
    "resnet18_tiny_imagenet": (11_289_928, 11.29e6),  # docs/method.md, section 3: "about 11.29M"
    "resnet50_cifar": (23_772_644, 23.8e6),
    "se_wrn_16_8": (11_107_156, 11.1e6),
    "wrn_28_10": (36_564_932, 36.6e6),
    # No figure in the paper (docs/method.md, section 3); the DenseNet paper gives 0.8M for
    # DenseNet-BC 100-12 (CIFAR): our trainable weights number 800,032 (plus 23,988 BN moving
    # statistics).
    "densenet_bc_100_12": (824_020, None),
    "densenet_bc_190_40": (26_078_580, 26.1e6),
    # torchvision's ResNet50: 25,557,032 trainable, exactly torchvision's (+53,120 BN stats).
    "resnet50_imagenet": (25_610_152, 25.6e6),
    "resnet50_keras_applications": (25_636_712, 25_636_712),  # keras.applications', exactly
    "resnet_fashion_mnist": (78_042, None),  # the quick-start network, not the paper's
}

# (layer_name, channels, stride) of the stem and stage-end taps.
_STAGE_TAPS = {
    "resnet18_tiny_imagenet": {
        "stem": ("stem_out", 64, 4),
        "stage1": ("stage1_block2_out", 64, 4),
        "stage2": ("stage2_block2_out", 128, 8),
        "stage3": ("stage3_block2_out", 256, 16),
        "stage4": ("stage4_block2_out", 512, 32),
    },
    "resnet50_cifar": {
        "stem": ("stem_out", 64, 1),
        "stage1": ("stage1_block3_out", 256, 1),
        "stage2": ("stage2_block4_out", 512, 2),
        "stage3": ("stage3_block6_out", 1024, 4),
        "stage4": ("stage4_block3_out", 2048, 4),  # Conv5 stays 8x8
    },
    "se_wrn_16_8": {
        "stem": ("stem_out", 16, 1),
        "stage1": ("stage1_block2_out", 128, 1),
        "stage2": ("stage2_block2_out", 256, 2),
        "stage3": ("stage3_block2_out", 512, 4),
    },
    "wrn_28_10": {
        "stem": ("stem_out", 16, 1),
        "stage1": ("stage1_block4_out", 160, 1),
        "stage2": ("stage2_block4_out", 320, 2),
        "stage3": ("stage3_block4_out", 640, 4),
    },
    "densenet_bc_100_12": {
        "stem": ("stem_out", 24, 1),
        "stage1": ("stage1_block16_out", 216, 1),
        "transition1": ("transition1_out", 108, 2),
        "stage2": ("stage2_block16_out", 300, 2),
        "transition2": ("transition2_out", 150, 4),
        "stage3": ("stage3_block16_out", 342, 4),
    },
    "densenet_bc_190_40": {
        "stem": ("stem_out", 80, 1),
        "stage1": ("stage1_block31_out", 1320, 1),
        "transition1": ("transition1_out", 660, 2),
        "stage2": ("stage2_block31_out", 1900, 2),
        "transition2": ("transition2_out", 950, 4),
        "stage3": ("stage3_block31_out", 2190, 4),
    },
    "resnet50_imagenet": {
        "stem": ("stem_out", 64, 4),
        "stage1": ("stage1_block3_out", 256, 4),
        "stage2": ("stage2_block4_out", 512, 8),
        "stage3": ("stage3_block6_out", 1024, 16),
        "stage4": ("stage4_block3_out", 2048, 32),
    },
    "resnet50_keras_applications": {
        "stem": ("pool1_pool", 64, 4),
        "stage1": ("conv2_block3_out", 256, 4),
        "stage2": ("conv3_block4_out", 512, 8),
        "stage3": ("conv4_block6_out", 1024, 16),
        "stage4": ("conv5_block3_out", 2048, 32),
    },
    "resnet_fashion_mnist": {
        "stem": ("stem_out", 16, 1),
        "stage1": ("stage1_block1_out", 16, 1),
        "stage2": ("stage2_block1_out", 32, 2),
        "stage3": ("stage3_block1_out", 64, 4),
    },
}

# The positions of docs/method.md, section 4 (as ssal_keras.PAPER_MODELS uses them):
# (tap, layer_name, channels, stride).
_PAPER_POSITIONS = {
    "resnet18_tiny_imagenet": [("stage1", "stage1_block2_out", 64, 4)],
    "resnet50_cifar": [
        ("stage1", "stage1_block3_out", 256, 1),
        ("stage2", "stage2_block4_out", 512, 2),
        ("stage3", "stage3_block6_out", 1024, 4),
    ],
    "se_wrn_16_8": [
        ("stage1", "stage1_block2_out", 128, 1),
        ("stage2", "stage2_block2_out", 256, 2),
        ("stage3_block1", "stage3_block1_out", 512, 4),
    ],
    "wrn_28_10": [
        ("stage1_block2", "stage1_block2_out", 160, 1),
        ("stage2_block2", "stage2_block2_out", 320, 2),
        ("stage2", "stage2_block4_out", 320, 2),
    ],
    "densenet_bc_100_12": [
        ("stage1", "stage1_block16_out", 216, 1),
        ("transition1", "transition1_out", 108, 2),
        ("transition2", "transition2_out", 150, 4),
    ],
    "densenet_bc_190_40": [
        ("stage1", "stage1_block31_out", 1320, 1),
        ("transition1", "transition1_out", 660, 2),
        ("transition2", "transition2_out", 950, 4),
    ],
    "resnet50_imagenet": [
        ("stage1", "stage1_block3_out", 256, 4),
        ("stage2", "stage2_block4_out", 512, 8),
        ("stage3", "stage3_block6_out", 1024, 16),
    ],
    "resnet50_keras_applications": [
        ("stage1", "conv2_block3_out", 256, 4),
        ("stage2", "conv3_block4_out", 512, 8),
        ("stage3", "conv4_block6_out", 1024, 16),
    ],
    "resnet_fashion_mnist": [
        ("stage1", "stage1_block1_out", 16, 1),
        ("stage2", "stage2_block1_out", 32, 2),
    ],
}

# Number of friendly taps: stem + blocks + stage ends (+ DenseNet transitions).
_NUM_TAPS = {
    "resnet18_tiny_imagenet": 1 + 8 + 4,
    "resnet50_cifar": 1 + 16 + 4,
    "se_wrn_16_8": 1 + 6 + 3,
    "wrn_28_10": 1 + 12 + 3,
    "densenet_bc_100_12": 1 + 48 + 3 + 2,
    "densenet_bc_190_40": 1 + 93 + 3 + 2,
    "resnet50_imagenet": 1 + 16 + 4,
    "resnet50_keras_applications": 1 + 16 + 4,
    "resnet_fashion_mnist": 1 + 3 + 3,
}

NAMES = list(backbones.BACKBONE_NAMES)


@functools.lru_cache(maxsize=None)
def _big(name):
    """Each paper backbone, built once per test module (never trained)."""
    return backbones.build(name, num_classes=_NUM_CLASSES[name])


def test_registry_names():
    assert NAMES == list(_NUM_CLASSES)
    assert set(backbones.DEFAULT_INPUT_SHAPES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    ours, paper = _PARAMS[name]
    count = _big(name).count_params()
    assert count == ours
    if paper is not None:
        assert abs(count - paper) / paper < 0.005


@pytest.mark.parametrize("name", NAMES)
def test_output_is_softmax_over_classes(name):
    model = _big(name)
    num_classes = _NUM_CLASSES[name]
    assert isinstance(model, keras.Model)
    assert model.name == name
    assert tuple(model.input.shape) == (None, *backbones.DEFAULT_INPUT_SHAPES[name])
    assert tuple(model.output.shape) == (None, num_classes)
    assert model.get_layer("avg_pool") is not None
    assert model.get_layer("predictions").activation is keras.activations.softmax
    image = np.random.default_rng(0).random((1, *backbones.DEFAULT_INPUT_SHAPES[name]))
    probs = keras.ops.convert_to_numpy(model(image.astype("float32"), training=False))
    assert probs.shape == (1, num_classes)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_paper_tap_positions(name):
    model = _big(name)
    named = backbones.taps(model)
    for config in ssal_keras.PAPER_MODELS.values():
        if config.backbone == name:
            assert config.taps == tuple(t for t, *_ in _PAPER_POSITIONS[name])
    for tap, layer_name, channels, stride in _PAPER_POSITIONS[name]:
        assert named[tap] == Tap(tap, layer_name, channels, stride)
        assert backbones.resolve_tap(model, tap) == named[tap]


@pytest.mark.parametrize("name", NAMES)
def test_stage_taps_and_order(name):
    model = _big(name)
    named = backbones.taps(model)
    assert len(named) == _NUM_TAPS[name]
    for tap, (layer_name, channels, stride) in _STAGE_TAPS[name].items():
        assert named[tap] == Tap(tap, layer_name, channels, stride)
    # Ordered by depth: layer positions never decrease along the dict.
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    order = [position[t.layer_name] for t in named.values()]
    assert order == sorted(order)
    assert next(iter(named)) == "stem"
    # Every tap's channels and stride agree with its layer's output.
    height = model.input.shape[1]
    for tap in named.values():
        shape = model.get_layer(tap.layer_name).output.shape
        assert (tap.channels, tap.stride) == (shape[-1], height // shape[1])


@pytest.mark.parametrize("name", ["resnet50_cifar", "wrn_28_10", "densenet_bc_190_40"])
def test_fixed_layer_names(name):
    model = _big(name)
    layer_names = {layer.name for layer in model.layers}
    assert {"input", "stem_out", "stage1_block1_out", "avg_pool", "predictions"} <= layer_names
    expected = {
        "resnet50_cifar": ["stem_conv", "stage2_block1_0_conv", "stage2_block3_2_conv",
                           "stage2_block3_preact_bn", "post_relu"],
        "wrn_28_10": ["stem_conv", "stage2_block1_0_conv", "stage2_block3_2_bn",
                      "stage3_block4_2_relu"],
        "densenet_bc_190_40": ["stem_conv", "stage2_block3_1_conv", "transition1_conv",
                               "post_bn"],
    }[name]
    assert set(expected) <= layer_names


def test_resolve_tap_accepts_any_4d_layer():
    model = _big("resnet50_cifar")
    tap = backbones.resolve_tap(model, "stage2_block3_2_conv")
    assert tap == Tap("stage2_block3_2_conv", "stage2_block3_2_conv", 128, 2)
    imagenet = _big("resnet50_keras_applications")
    assert backbones.resolve_tap(imagenet, "conv1_relu") == Tap(
        "conv1_relu", "conv1_relu", 64, 2
    )


# Tiny variants of each family (the docstring examples of the builders).
TINY = {
    "preact_basic": lambda: backbones.preact_resnet(
        block="basic", stage_blocks=(1, 1), stage_widths=(8, 16), stage_strides=(1, 2),
        stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False, num_classes=10,
        input_shape=(16, 16, 3)),
    "preact_bottleneck_pool": lambda: backbones.preact_resnet(
        block="bottleneck", stage_blocks=(2, 1), stage_widths=(4, 8), stage_strides=(1, 2),
        stem_filters=8, stem_kernel=7, stem_strides=2, stem_pool=True,
        style=backbones.AUTHORS_RESNET_STYLE, num_classes=5, input_shape=(16, 16, 3)),
    "wrn": lambda: backbones.wide_resnet(
        depth=10, width=1, num_classes=10, input_shape=(16, 16, 3)),
    "se_wrn_max_pool": lambda: backbones.wide_resnet(
        depth=10, width=2, se_reduction=4, style=backbones.AUTHORS_WRN_STYLE,
        downsample="max_pool", num_classes=7, input_shape=(16, 16, 3)),
    "densenet_bc": lambda: backbones.densenet_bc(
        depth=10, growth_rate=4, dropout_rate=0.2, style=backbones.AUTHORS_DENSENET_STYLE,
        num_classes=10, input_shape=(16, 16, 3)),
    "torchvision_resnet": lambda: backbones.torchvision_resnet(
        stage_blocks=(1, 1), zero_init_residual=True, num_classes=10, input_shape=(32, 32, 3)),
}


@pytest.mark.parametrize("variant", list(TINY))
def test_tiny_variant_forward(variant):
    model = TINY[variant]()
    images = np.random.default_rng(1).normal(size=(2, *model.input.shape[1:])).astype("float32")
    probs = keras.ops.convert_to_numpy(model(images, training=False))
    assert probs.shape == (2, model.output.shape[-1])
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    named = backbones.taps(model)
    assert "stem" in named and "stage1" in named and "stage1_block1" in named


@pytest.mark.parametrize("variant", list(TINY))
def test_tiny_variant_save_load(variant, tmp_path):
    model = TINY[variant]()
    images = np.random.default_rng(2).normal(size=(2, *model.input.shape[1:])).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    path = os.path.join(tmp_path, f"{variant}.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.name == model.name
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(images, training=False)), expected
    )
    assert backbones.taps(restored) == backbones.taps(model)


def test_other_models_taps():
    # A keras.applications-style model: every 4-D layer named ``*_out``.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a_out")(inputs)
    x = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="b_out")(x)
    y = keras.layers.GlobalAveragePooling2D(name="gap_out")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(y))
    assert backbones.taps(model) == {
        "a_out": Tap("a_out", "a_out", 4, 1),
        "b_out": Tap("b_out", "b_out", 6, 2),
    }
    # No ``_out`` layers: no named taps, but any 4-D layer still resolves.
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="gap")(x))
    assert backbones.taps(model) == {}
    assert backbones.resolve_tap(model, "conv") == Tap("conv", "conv", 4, None)
    with pytest.raises(ValueError, match=r"Valid 4-D layer names: \[.*conv\]"):
        backbones.resolve_tap(model, "nope")


def test_resnet50_keras_applications_save_load_is_plain_functional(tmp_path):
    model = backbones.build("resnet50_keras_applications", num_classes=3,
                            input_shape=(32, 32, 3))
    images = np.random.default_rng(3).random((1, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    path = os.path.join(tmp_path, "r50.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert type(restored).__name__ == "Functional"
    assert restored.name == "resnet50_keras_applications"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(images, training=False)), expected
    )
    assert backbones.taps(restored)["stage3"] == Tap("stage3", "conv4_block6_out", 1024, 16)


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        backbones.build("resnet34", num_classes=10)
    message = _one_line(excinfo)
    assert "`name`" in message and "name='resnet34'" in message
    assert all(name in message for name in NAMES)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True, None])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="`num_classes`.*Received: num_classes=") as excinfo:
        backbones.build("wrn_28_10", num_classes=num_classes)
    _one_line(excinfo)


@pytest.mark.parametrize(
    "input_shape", [(32, 32), (32, 32, 3, 1), "32x32", (32, 32, 0), (32, 32.0, 3), (2, 2, 3)]
)
def test_bad_input_shape(input_shape):
    with pytest.raises(ValueError, match="`input_shape`.*Received: input_shape=") as excinfo:
        backbones.build("densenet_bc_100_12", num_classes=10, input_shape=input_shape)
    _one_line(excinfo)


def test_bad_family_arguments():
    with pytest.raises(ValueError, match="`depth`.*Received: depth=27"):
        backbones.wide_resnet(depth=27, width=1, num_classes=10, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`depth`.*Received: depth=4"):
        backbones.densenet_bc(depth=4, growth_rate=4, num_classes=10, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`compression`"):
        backbones.densenet_bc(
            depth=10, growth_rate=4, compression=0.0, num_classes=10, input_shape=(16, 16, 3)
        )
    with pytest.raises(ValueError, match="`block`.*Received: block='wide'"):
        backbones.preact_resnet(
            block="wide", stage_blocks=(1,), stage_widths=(8,), stage_strides=(1,),
            stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False, num_classes=10,
            input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`stage_widths`"):
        backbones.preact_resnet(
            block="basic", stage_blocks=(1, 1), stage_widths=(8,), stage_strides=(1, 2),
            stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False, num_classes=10,
            input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`downsample`.*Received: downsample='pool'"):
        backbones.wide_resnet(depth=10, width=1, downsample="pool", num_classes=10,
                              input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`dropout_rate`.*Received: dropout_rate=1.0"):
        backbones.densenet_bc(depth=10, growth_rate=4, dropout_rate=1.0, num_classes=10,
                              input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="`bn_momentum`"):
        backbones.build("wrn_28_10", num_classes=10,
                        style=ssal_keras.blocks.LayerStyle(bn_momentum=1.5))
    with pytest.raises(ValueError, match="`conv_initializer` must be one of"):
        ssal_keras.blocks.LayerStyle(conv_initializer="lecun")
    with pytest.raises(ValueError, match="wrn_28_10 takes no option 'dropout_rate'; its options"):
        backbones.build("wrn_28_10", num_classes=10, dropout_rate=0.2)


def test_unknown_tap_lists_valid_names():
    model = _big("resnet50_cifar")
    with pytest.raises(ValueError) as excinfo:
        backbones.resolve_tap(model, "stage9")
    message = _one_line(excinfo)
    assert "`tap`" in message and "tap='stage9'" in message
    assert all(tap in message for tap in backbones.taps(model))
    assert "4-D" in message and "more" not in message


def test_unknown_tap_long_list_is_cut():
    model = _big("densenet_bc_190_40")
    with pytest.raises(ValueError) as excinfo:
        backbones.resolve_tap(model, "stage4")
    message = _one_line(excinfo)
    assert "... and 59 more" in message  # 99 taps, the first 40 listed
    assert "stage1_block1," in message and "transition2" not in message


@pytest.mark.parametrize("tap", ["predictions", "avg_pool"])
def test_non_4d_layer_is_not_a_tap(tap):
    with pytest.raises(ValueError, match="is not a 4-D feature map") as excinfo:
        backbones.resolve_tap(_big("wrn_28_10"), tap)
    message = _one_line(excinfo)
    assert f"tap={tap!r}" in message


@pytest.mark.parametrize("name", ["resnet_fashion_mnist", "wrn_28_10", "resnet50_imagenet"])
def test_normalization_inside_the_model(name):
    channels = backbones.DEFAULT_INPUT_SHAPES[name][-1]
    mean, std = [100.0 + 10 * c for c in range(channels)], [50.0 + c for c in range(channels)]
    shape = (32, 32, channels)
    model = backbones.build(name, num_classes=10, input_shape=shape, normalization=(mean, std))
    assert model.layers[1].name == "preprocess"
    pixels = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype("float32")
    probe = keras.Model(model.input, model.get_layer("preprocess").output)
    np.testing.assert_allclose(
        probe.predict(pixels, verbose=0), (pixels - mean) / np.asarray(std), rtol=1e-5, atol=1e-5
    )
    scaled = backbones.build(name, num_classes=10, input_shape=shape, normalization="scale")
    probe = keras.Model(scaled.input, scaled.get_layer("preprocess").output)
    np.testing.assert_allclose(probe.predict(pixels, verbose=0), pixels / 255.0, rtol=1e-6)


@pytest.mark.parametrize("normalization", ["standardize", ([1.0], [1.0]), ([0, 0, 0], [1, 0, 1])])
def test_bad_normalization(normalization):
    with pytest.raises(ValueError, match="`normalization` must be None, 'scale' or \\(mean, std\\)"):
        backbones.build("resnet50_cifar", num_classes=10, normalization=normalization)


# --- The authors' versions (docs/authors_settings.md, sections 4-6 and 9) -----------------------
def _layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.mark.parametrize(
    "name, momentum, epsilon, conv_init, dense_init, conv_bias",
    [
        # ResNet_aux_tf.py:75, 85, 311: BN 0.65, he_normal convs and classifier, biases.
        ("resnet50_cifar", 0.65, 1e-3, "HeNormal", "HeNormal", True),
        ("resnet18_tiny_imagenet", 0.65, 1e-3, "HeNormal", "HeNormal", True),
        # WideResNet_aux_tf.py:59, 140: Keras BN defaults, glorot_uniform, biases.
        ("wrn_28_10", 0.99, 1e-3, "GlorotUniform", "GlorotUniform", True),
        ("se_wrn_16_8", 0.99, 1e-3, "GlorotUniform", "GlorotUniform", True),
        # DenseNet_aux_tf.py:245, 581; train.py:237: epsilon 1.1e-5, orthogonal, no biases.
        ("densenet_bc_190_40", 0.99, 1.1e-5, "Orthogonal", "GlorotUniform", False),
        # torchvision with the authors' momentum override (train.py:57-61).
        ("resnet50_imagenet", 0.9 ** (100 / 32), 1e-5, "VarianceScaling", "VarianceScaling",
         False),
    ],
)
def test_layer_settings_are_the_authors(name, momentum, epsilon, conv_init, dense_init,
                                        conv_bias):
    model = _big(name)
    norms = _layers_of(model, keras.layers.BatchNormalization)
    assert norms and all((bn.momentum, bn.epsilon) == (momentum, epsilon) for bn in norms)
    convs = _layers_of(model, keras.layers.Conv2D)
    assert {type(c.kernel_initializer).__name__ for c in convs} == {conv_init}
    assert {c.use_bias for c in convs} == {conv_bias}
    classifier = model.get_layer("predictions")
    assert type(classifier.kernel_initializer).__name__ == dense_init


def test_resnet50_cifar_has_bn_momentum_065_everywhere():
    norms = _layers_of(_big("resnet50_cifar"), keras.layers.BatchNormalization)
    assert len(norms) == 1 + 16 * 3 + 1 - 1  # stem, 3 per block but the first's preact, post
    assert {bn.momentum for bn in norms} == {0.65}


def test_densenet_190_40_has_93_dropouts_after_the_3x3_convs():
    model = _big("densenet_bc_190_40")
    dropouts = _layers_of(model, keras.layers.Dropout)
    assert len(dropouts) == 93 and {d.rate for d in dropouts} == {0.2}
    for d in dropouts:  # right after each dense layer's 3x3 conv
        assert d._inbound_nodes[0].parent_nodes[0].operation.name == d.name.replace(
            "_2_dropout", "_2_conv")


def test_wrn_28_10_downsamples_with_two_max_pools():
    model = _big("wrn_28_10")
    pools = _layers_of(model, keras.layers.MaxPooling2D)
    assert [p.name for p in pools] == ["stage2_pool", "stage3_pool"]
    assert all(p.pool_size == (2, 2) and p.strides == (2, 2) for p in pools)
    assert all(c.strides == (1, 1) for c in _layers_of(model, keras.layers.Conv2D))
    # The SE gates of the authors' WRN builder are orthogonal (WideResNet_aux_tf.py:50-51).
    gate = _big("se_wrn_16_8").get_layer("stage1_block1_se_reduce")
    assert type(gate.kernel_initializer).__name__ == "Orthogonal"
    strided = backbones.build("wrn_28_10", num_classes=10, downsample="stride")
    assert strided.count_params() == backbones.build("wrn_28_10", num_classes=10).count_params()
    assert not _layers_of(strided, keras.layers.MaxPooling2D)


def test_resnet50_imagenet_is_torchvisions():
    """Stride on the 3x3 conv of each stage's first block, no conv biases, projection
    shortcuts with BN, PyTorch's symmetric paddings, 25,557,032 trainable (docs/authors_settings.md,
    section 9.5)."""
    model = _big("resnet50_imagenet")
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable == 25_557_032
    for stage in (2, 3, 4):
        assert model.get_layer(f"stage{stage}_block1_1_conv").strides == (1, 1)
        assert model.get_layer(f"stage{stage}_block1_2_conv").strides == (2, 2)
        assert model.get_layer(f"stage{stage}_block1_0_bn") is not None
    assert model.get_layer("stem_conv_pad").padding == ((3, 3), (3, 3))
    assert tuple(model.get_layer("stem_out").output.shape) == (None, 56, 56, 64)
    # zero_init_residual: the last BN of every block starts at gamma 0 (the SSAL run's).
    assert all(float(np.max(model.get_layer(f"stage1_block{b}_3_bn").gamma)) == 1.0
               for b in (1, 2, 3))
    zeroed = backbones.build("resnet50_imagenet", num_classes=10, input_shape=(32, 32, 3),
                             zero_init_residual=True)
    gammas = [layer.gamma for layer in _layers_of(zeroed, keras.layers.BatchNormalization)
              if layer.name.endswith("_3_bn")]
    assert len(gammas) == 16 and all(float(np.max(np.abs(g))) == 0.0 for g in gammas)


def test_resolved_options_are_what_build_uses():
    options = backbones.registry.resolved_options("densenet_bc_190_40")
    assert options["dropout_rate"] == 0.2 and options["style"].bn_epsilon == 1.1e-5
    options = backbones.registry.resolved_options("wrn_28_10", downsample="stride")
    assert options["downsample"] == "stride"


# --- declared taps (issue 21) ----------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_builder_declares_its_taps_in_depth_order(name):
    model = _big(name)
    declared = getattr(model, taps_module.DECLARED)
    assert declared and backbones.taps(model) == {t.name: t for t in declared}
    # The declaration says what the layer names have always said.
    assert backbones.taps(model) == taps_module.inferred_taps(model)
    strides = [t.stride for t in declared]
    assert strides == sorted(strides)


@pytest.mark.parametrize("variant", list(TINY))
def test_every_family_variant_declares_what_inference_gives(variant):
    model = TINY[variant]()
    assert getattr(model, taps_module.DECLARED)
    assert backbones.taps(model) == taps_module.inferred_taps(model)


@pytest.mark.parametrize("name", ["resnet50_cifar", "densenet_bc_100_12",
                                  "resnet50_keras_applications"])
def test_a_users_model_declares_nothing_and_gets_inferred_taps(name):
    """The graph of one of ours rebuilt as a user would (a keras.applications ResNet among
    them): nothing is declared, and inference still names the same taps."""
    ours = _big(name)
    users = keras.Model(ours.inputs, ours.outputs)
    assert getattr(users, taps_module.DECLARED, None) is None
    assert backbones.taps(users) == backbones.taps(ours)


def _two_maps():
    inputs = keras.Input((8, 8, 3))
    fine = keras.layers.Conv2D(4, 3, padding="same", name="fine")(inputs)
    coarse = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="coarse")(fine)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(coarse)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(pooled))


def test_declare_refuses_a_missing_layer_and_a_shrinking_stride():
    model = _two_maps()
    backbones.declare_taps(model, [("early", "fine"), ("late", "coarse")])
    assert backbones.taps(model) == {"early": Tap("early", "fine", 4, 1),
                                     "late": Tap("late", "coarse", 6, 2)}
    with pytest.raises(ValueError, match="tap 'x' of .* names layer 'nope', which is not a "
                                         "4-D feature map"):
        backbones.declare_taps(_two_maps(), [("x", "nope")])
    with pytest.raises(ValueError, match="tap 'x' of .* names layer 'gap'"):
        backbones.declare_taps(_two_maps(), [("x", "gap")])
    with pytest.raises(ValueError, match="tap 'early' of .* has stride 1, below the 2 of a tap "
                                         "before it; declare taps in depth order"):
        backbones.declare_taps(_two_maps(), [("late", "coarse"), ("early", "fine")])


def test_an_ssal_model_carries_its_backbones_declared_taps(tmp_path):
    """A declared name no layer name gives ("early") resolves again in the loaded model, and
    a hostile backbone_taps entry is one error."""
    backbone = backbones.declare_taps(_two_maps(), [("early", "fine"), ("late", "coarse")])
    model = ssal_keras.SSALModel(backbone, [ssal_keras.Branch(tap="early", grouping=[0, 0, 1])])
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert backbones.declared_layout(restored.backbone) == [("early", "fine"), ("late", "coarse")]
    images = np.random.default_rng(4).random((2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(images)["joint"]),
                                  keras.ops.convert_to_numpy(model(images)["joint"]))
    with pytest.raises(ValueError, match="backbone_taps in the model config must be a list"):
        ssal_keras.SSALModel.from_config({**model.get_config(), "backbone_taps": "early"})


def test_a_model_file_saved_before_declared_taps_still_loads(tmp_path):
    """A .keras file without ``backbone_taps`` (saved before issue 21) loads, its backbone's
    taps inferred from the layer names as they were then."""
    backbone = TINY["wrn"]()
    model = ssal_keras.SSALModel(backbone, [ssal_keras.Branch(tap="stage2", grouping=[0, 1] * 5)])
    path, old = os.path.join(tmp_path, "m.keras"), os.path.join(tmp_path, "old.keras")
    model.save(path)
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(old, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                document = json.loads(data)
                del document["config"]["backbone_taps"]
                data = json.dumps(document)
            zout.writestr(item, data)
    restored = keras.saving.load_model(old, safe_mode=True)
    assert backbones.declared_layout(restored.backbone) == []
    assert backbones.taps(restored.backbone) == backbones.taps(backbone)
    images = np.random.default_rng(5).random((2, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(images)["joint"]),
                                  keras.ops.convert_to_numpy(model(images)["joint"]))
