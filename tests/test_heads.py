"""The head vocabulary and the paper's head presets (docs/method.md, section 4)."""

import keras
import numpy as np
import pytest

from ssal_keras.modeling import heads


def head_model(input_shape, layout, num_groups=7, style=None):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, heads.build_head(inputs, layout=layout, num_groups=num_groups,
                                                style=style, name="aux_0"))


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def feature_shape(input_shape, layout):
    """Output shape of the blocks alone (no classifier)."""
    inputs = keras.Input(input_shape)
    x = inputs
    for index, block in enumerate(layout):
        kind, args = heads.parse_block(block)
        fn = {"inception_e": heads.inception_e, "inception_c_smaller": heads.inception_c_smaller,
              "inception_d_smaller": heads.inception_d_smaller,
              "inception_e_smaller": heads.inception_e_smaller}[kind]
        x = fn(x, factor=args[0] if args else 1, style=heads.resolve_style(None),
               name=f"b{index}")
    return tuple(x.shape[1:])


# docs/authors_settings.md, sections 9.8 and 9.9: widths, and the ImageNet heads' "valid" reductions
# 27 -> 13 -> 6.
@pytest.mark.parametrize(
    "layout, input_shape, expected",
    [
        (["inception_e"], (8, 8, 16), (8, 8, 748)),
        (["inception_e(2)"], (8, 8, 16), (8, 8, 1496)),
        (["inception_c_smaller(0.5)"], (27, 27, 16), (27, 27, 4 * 64)),
        (["inception_d_smaller(0.5)"], (27, 27, 16), (13, 13, 108 + 84 + 64)),
        (["inception_d_smaller(0.5)"], (13, 13, 748), (6, 6, 256)),
        (["inception_e_smaller(1)"], (13, 13, 256), (13, 13, 748)),
        (["inception_e_smaller(2)"], (6, 6, 256), (6, 6, 1496)),
    ],
)
def test_inception_blocks_shapes(layout, input_shape, expected):
    assert feature_shape(input_shape, layout) == expected


def test_pools_count_padding_like_the_authors_frameworks():
    """TF "same" average pooling leaves padded cells out (the Keras heads, docs/authors_settings.md,
    section 9.8); PyTorch's avg_pool2d(padding=1) counts them as zeros (the ImageNet heads, 9.9)."""
    ones = np.ones((1, 6, 6, 4), "float32")
    for block, corner in (("inception_e", 1.0), ("inception_e_smaller(1)", 4 / 9)):
        model = head_model((6, 6, 4), [block, "gap"])
        pool = keras.Model(model.input, model.get_layer("aux_0_1_" + block.split("(")[0]
                                                        + "_d_pool").output)
        out = pool.predict(ones, verbose=0)
        np.testing.assert_allclose(out[0, 0, 0], corner, rtol=1e-6)
        np.testing.assert_allclose(out[0, 2, 2], 1.0, rtol=1e-6)


def test_cbr_with_explicit_padding_is_pytorchs():
    """cbr(f,k,s,p): p zero pixels on every side, as PyTorch's padding=p (0 is "valid")."""
    model = head_model((56, 56, 8), ["cbr(8,3,2,0)", "cbr(8,7,1,3)", "gap"])
    assert tuple(model.get_layer("aux_0_1_cbr_relu").output.shape) == (None, 27, 27, 8)
    assert tuple(model.get_layer("aux_0_2_cbr_relu").output.shape) == (None, 27, 27, 8)


def test_head_styles_are_the_authors():
    """Keras heads: conv bias, BN 0.99 / 1e-3; PyTorch heads: no bias, BN epsilon 1e-3 and
    the 1 - 0.9^(100/32) momentum override (docs/authors_settings.md, sections 5, 9.7 and 9.9)."""
    keras_head = head_model((8, 8, 4), ["cbr(8,3)", "gap"])
    conv = keras_head.get_layer("aux_0_1_cbr_conv")
    bn = keras_head.get_layer("aux_0_1_cbr_bn")
    assert conv.use_bias and (bn.momentum, bn.epsilon) == (0.99, 1e-3)
    torch_head = head_model((8, 8, 4), ["cbr(8,3)", "gap"], style="authors_pytorch")
    bn = torch_head.get_layer("aux_0_1_cbr_bn")
    assert not torch_head.get_layer("aux_0_1_cbr_conv").use_bias
    assert bn.epsilon == 1e-3 and abs((1 - bn.momentum) - 0.28054) < 1e-5
    with pytest.raises(ValueError, match="not a head style; valid: authors_keras"):
        heads.resolve_style("pytorch")
    with pytest.raises(ValueError, match="no field 'bn_mom'"):
        heads.resolve_style({"bn_mom": 0.9})


def test_every_block_kind_builds_and_predicts_probabilities():
    layout = ["cbr(8,3,2)", "se(4)", "inception_c_smaller(0.1)", "inception_d_smaller(0.1)",
              "inception_e_smaller(0.1)", "inception_e(0.1)", "gap", "dense(12)"]
    model = head_model((16, 16, 8), layout)
    probs = model.predict(np.random.default_rng(0).normal(size=(3, 16, 16, 8)), verbose=0)
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    names = {layer.name for layer in model.layers}
    assert {"aux_0_1_cbr_conv", "aux_0_2_se_scale", "aux_0_7_gap", "aux_0_8_dense",
            "aux_0"} <= names


def test_cbr_stride_and_se_shapes():
    inputs = keras.Input((16, 16, 8))
    model = keras.Model(inputs, heads.build_head(
        inputs, layout=["cbr(32,5,2)", "se", "gap"], num_groups=3, name="h"))
    assert tuple(model.get_layer("h_1_cbr_relu").output.shape) == (None, 8, 8, 32)
    assert tuple(model.get_layer("h_2_se_scale").output.shape) == (None, 8, 8, 32)
    assert model.get_layer("h_2_se_reduce").units == 2  # 32 channels / reduction 16


# Pinned parameter counts of the paper's CIFAR heads (the authors' Keras layers, conv biases
# included) at the taps they are attached to (channels, size): ResNet50 CIFAR adds 5.113M to
# 23.77M = 28.89M (docs/authors_settings.md, section 9.1); the DenseNet 190-40 heads add 12.21M to
# 26.08M = 38.29M.
@pytest.mark.parametrize(
    "preset, tap_shape, num_groups, expected",
    [
        ("cifar_resnet50_aux1", (32, 32, 256), 20, 1_300_544),
        ("cifar_resnet50_aux2", (16, 16, 512), 33, 2_129_481),
        ("cifar_resnet50_aux3", (8, 8, 1024), 50, 1_683_462),
        ("cifar_wrn_densenet_aux1", (32, 32, 1320), 20, 6_463_788),
        ("cifar_wrn_densenet_aux2", (16, 16, 660), 33, 3_370_785),
        ("cifar_wrn_densenet_aux3", (8, 8, 950), 50, 2_374_642),
    ],
)
def test_paper_head_parameter_counts(preset, tap_shape, num_groups, expected):
    assert head_model(tap_shape, preset, num_groups).count_params() == expected


# The authors' ImageNet InceptionAux heads, trainable parameters: 4.38M / 4.06M / 3.45M
# (docs/authors_settings.md, section 9.9), at layer1-3 of ResNet50 with 200/334/500 groups.
@pytest.mark.parametrize(
    "preset, tap_shape, num_groups, expected",
    [
        ("imagenet_resnet50_aux1", (56, 56, 256), 200, 4_379_280),
        ("imagenet_resnet50_aux2", (28, 28, 512), 334, 4_063_270),
        ("imagenet_resnet50_aux3", (14, 14, 1024), 500, 3_454_148),
    ],
)
def test_imagenet_head_parameter_counts(preset, tap_shape, num_groups, expected):
    model = head_model(tap_shape, preset, num_groups, style="authors_pytorch")
    assert trainable(model) == expected
    assert round(expected / 1e6, 2) == {200: 4.38, 334: 4.06, 500: 3.45}[num_groups]


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
        (["cbr(128)", "gap"], "write it as cbr\\(filters,kernel\\[,stride\\[,padding\\]\\]\\)"),
        (["cbr(128,x)", "gap"], "non-numeric argument 'x'"),
        (["cbr(128,3.5)", "gap"], "whole numbers"),
        (["cbr(-4,3)", "gap"], "must be > 0"),
        (["cbr(0,3)", "gap"], "must be > 0"),
        (["cbr(8,3,1,-1)", "gap"], "must be >= 0"),
        (["inception_c(0.5)", "gap"], "not in the head vocabulary"),
        (["gap", "cbr(8,3)"], "after 'gap'"),
        (["cbr(8,3)"], "has no 'gap'"),
        ([3, "gap"], "not in the head vocabulary"),
    ],
)
def test_bad_layouts(head, match):
    with pytest.raises(ValueError, match=match):
        heads.resolve_layout(head)
