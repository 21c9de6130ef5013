"""The head vocabulary and the paper's head presets (SPEC section 4)."""

import keras
import numpy as np
import pytest

from ssal_keras import heads


def head_model(input_shape, layout, num_groups=7):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, heads.build_head(inputs, layout=layout, num_groups=num_groups,
                                                name="aux_0"))


def feature_shape(input_shape, layout):
    """Output shape of the blocks alone (no classifier)."""
    inputs = keras.Input(input_shape)
    x = inputs
    for index, block in enumerate(layout):
        kind, args = heads.parse_block(block)
        fn = {"inception_e": heads.inception_e, "inception_c": heads.inception_c,
              "inception_d": heads.inception_d}[kind]
        x = fn(x, factor=args[0] if args else 1, name=f"b{index}")
    return tuple(x.shape[1:])


@pytest.mark.parametrize(
    "layout, input_shape, expected",
    [
        (["inception_e"], (8, 8, 16), (8, 8, 748)),
        (["inception_e(2)"], (8, 8, 16), (8, 8, 1496)),
        (["inception_c(0.5)"], (8, 8, 16), (8, 8, 384)),
        (["inception_d(0.5)"], (8, 8, 16), (4, 4, 160 + 96 + 16)),
        (["inception_d(0.5)"], (7, 7, 16), (4, 4, 160 + 96 + 16)),
    ],
)
def test_inception_blocks_shapes(layout, input_shape, expected):
    assert feature_shape(input_shape, layout) == expected


def test_every_block_kind_builds_and_predicts_probabilities():
    layout = ["cbr(8,3,2)", "se(4)", "inception_c(0.1)", "inception_d(0.1)",
              "inception_e(0.1)", "gap", "dense(12)"]
    model = head_model((16, 16, 8), layout)
    probs = model.predict(np.random.default_rng(0).normal(size=(3, 16, 16, 8)), verbose=0)
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    names = {layer.name for layer in model.layers}
    assert {"aux_0_1_cbr_conv", "aux_0_2_se_scale", "aux_0_6_gap", "aux_0_7_dense",
            "aux_0"} <= names


def test_cbr_stride_and_se_shapes():
    inputs = keras.Input((16, 16, 8))
    model = keras.Model(inputs, heads.build_head(
        inputs, layout=["cbr(32,5,2)", "se", "gap"], num_groups=3, name="h"))
    assert tuple(model.get_layer("h_1_cbr_relu").output.shape) == (None, 8, 8, 32)
    assert tuple(model.get_layer("h_2_se_scale").output.shape) == (None, 8, 8, 32)
    assert model.get_layer("h_2_se_reduce").units == 2  # 32 channels / reduction 16


# Pinned parameter counts of the paper's CIFAR heads at the taps they are attached to
# (channels, size): ResNet50 CIFAR adds 5.109M to 23.8M = SPEC's 28.9M; the DenseNet 190-40
# heads add 12.20M to 26.1M = SPEC's 38.3M.
@pytest.mark.parametrize(
    "preset, tap_shape, num_groups, expected",
    [
        ("cifar_resnet50_aux1", (32, 32, 256), 20, 1_299_124),
        ("cifar_resnet50_aux2", (16, 16, 512), 33, 2_128_061),
        ("cifar_resnet50_aux3", (8, 8, 1024), 50, 1_682_042),
        ("cifar_wrn_densenet_aux1", (32, 32, 1320), 20, 6_460_692),
        ("cifar_wrn_densenet_aux2", (16, 16, 660), 33, 3_370_017),
        ("cifar_wrn_densenet_aux3", (8, 8, 950), 50, 2_372_058),
    ],
)
def test_paper_head_parameter_counts(preset, tap_shape, num_groups, expected):
    assert head_model(tap_shape, preset, num_groups).count_params() == expected


def test_every_preset_is_valid():
    for name, layout in heads.HEAD_PRESETS.items():
        assert heads.resolve_layout(name) == layout


def test_default_head():
    assert heads.resolve_layout(None) == heads.DEFAULT_HEAD


@pytest.mark.parametrize(
    "head, match",
    [
        ("no_such_preset", "not a head preset; valid presets: cifar_resnet50_aux1"),
        (["conv(3)", "gap"], "not in the head vocabulary; valid: cbr"),
        (["cbr(128)", "gap"], "write it as cbr\\(filters,kernel\\[,stride\\]\\)"),
        (["cbr(128,x)", "gap"], "non-numeric argument 'x'"),
        (["cbr(128,3.5)", "gap"], "whole numbers"),
        (["cbr(-4,3)", "gap"], "must be > 0"),
        (["gap", "cbr(8,3)"], "after 'gap'"),
        (["cbr(8,3)"], "has no 'gap'"),
        ([3, "gap"], "not in the head vocabulary"),
    ],
)
def test_bad_layouts(head, match):
    with pytest.raises(ValueError, match=match):
        heads.resolve_layout(head)
