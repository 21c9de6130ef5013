"""SSALModel: construction, fit on derived targets, metrics per head, saving, any backbone."""

import keras
import numpy as np
import pytest

import ssal_keras
from ssal_keras.modeling import backbones

NUM_CLASSES = 6
# Two groupings whose ids differ from the fine labels, so a metric fed the wrong targets
# gives a different number.
GROUPINGS = [np.array([1, 1, 0, 0, 2, 2]), np.array([0, 1, 0, 1, 0, 1])]


def tiny_backbone(num_classes=NUM_CLASSES, input_shape=(12, 12, 3)):
    return backbones.preact_resnet(
        block="basic", stage_blocks=(1, 1), stage_widths=(8, 16), stage_strides=(1, 2),
        stem_filters=8, stem_kernel=3, stem_strides=1, stem_pool=False,
        num_classes=num_classes, input_shape=input_shape, name="tiny",
    )


def tiny_ssal(objective="multitask", alpha=0.5):
    return ssal_keras.SSALModel(
        tiny_backbone(),
        branches=[
            ssal_keras.Branch(tap="stage1", grouping=GROUPINGS[0], head=["cbr(8,3)", "gap"],
                              loss_weight=0.5),
            ssal_keras.Branch(tap="stage2", grouping=GROUPINGS[1], head=["gap", "dense(8)"]),
        ],
        alpha=alpha,
        objective=objective,
    )


def synthetic_images(num_images=192, seed=0):
    """Images whose class is a colour pattern plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=num_images)
    prototypes = rng.normal(size=(NUM_CLASSES, 1, 1, 3)).astype("float32") * 2
    images = prototypes[labels] + rng.normal(size=(num_images, 12, 12, 3)).astype("float32")
    return images, labels


def test_outputs_are_named_dict_of_probabilities():
    model = tiny_ssal()
    assert sorted(model.output_names) == ["aux_0", "aux_1", "base", "joint"]
    images, _ = synthetic_images(5)
    out = model.predict(images, verbose=0)
    assert out["base"].shape == (5, NUM_CLASSES) and out["joint"].shape == (5, NUM_CLASSES)
    assert out["aux_0"].shape == (5, 3) and out["aux_1"].shape == (5, 2)
    for probs in out.values():
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)


def test_targets_are_derived_from_the_groupings():
    model = tiny_ssal()
    targets = model.targets(np.array([0, 3, 5, 2]))
    np.testing.assert_array_equal(targets["aux_0"], GROUPINGS[0][[0, 3, 5, 2]])
    np.testing.assert_array_equal(targets["aux_1"], GROUPINGS[1][[0, 3, 5, 2]])
    np.testing.assert_array_equal(targets["base"], [0, 3, 5, 2])


def test_fit_lowers_the_loss_and_metrics_see_the_right_targets():
    model = tiny_ssal()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    images, labels = synthetic_images()
    history = model.fit(images, labels, batch_size=32, epochs=4, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    for key in ("base_accuracy", "joint_accuracy", "aux_0_accuracy", "aux_1_accuracy",
                "base_top5", "joint_top5", "base_loss", "aux_0_loss", "aux_1_loss"):
        assert key in history.history, sorted(history.history)

    results = model.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)
    out = model.predict(images, batch_size=64, verbose=0)

    def accuracy(probs, targets):
        return float(np.mean(np.argmax(probs, axis=-1) == targets))

    expected = {
        "base_accuracy": accuracy(out["base"], labels),
        "joint_accuracy": accuracy(out["joint"], labels),
        "aux_0_accuracy": accuracy(out["aux_0"], GROUPINGS[0][labels]),
        "aux_1_accuracy": accuracy(out["aux_1"], GROUPINGS[1][labels]),
    }
    for key, value in expected.items():
        assert results[key] == pytest.approx(value, abs=1e-6), key
    # Fed the fine labels, the group accuracy would be another number: the test can fail.
    assert accuracy(out["aux_0"], labels) != pytest.approx(expected["aux_0_accuracy"])

    # The loss is CE(base) + sum_b w_b CE(aux_b) with the branches' weights (0.5, 1.0).
    ce = lambda p, t: float(np.mean(-np.log(np.clip(p[np.arange(len(t)), t], 1e-7, 1))))  # noqa: E731
    want = (ce(out["base"], labels) + 0.5 * ce(out["aux_0"], GROUPINGS[0][labels])
            + 1.0 * ce(out["aux_1"], GROUPINGS[1][labels]))
    assert results["loss"] == pytest.approx(want, rel=1e-3)


def test_joint_objective_trains_the_branches_through_the_product():
    model = tiny_ssal(objective="joint")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    head_kernel = model.get_layer("aux_1").kernel
    before = keras.ops.convert_to_numpy(head_kernel).copy()
    images, labels = synthetic_images(64)
    history = model.fit(images, labels, batch_size=32, epochs=1, verbose=0)
    assert "aux_0_loss" not in history.history and "joint_accuracy" in history.history
    assert not np.allclose(before, keras.ops.convert_to_numpy(head_kernel))
    out = model.predict(images, verbose=0)
    results = model.evaluate(images, labels, verbose=0, return_dict=True)
    ce = float(np.mean(-np.log(out["joint"][np.arange(len(labels)), labels])))
    assert results["loss"] == pytest.approx(ce, rel=1e-3)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = tiny_ssal(alpha=0.7)
    model.compile(optimizer="adam")
    images, labels = synthetic_images(32)
    model.fit(images, labels, epochs=1, verbose=0)  # moves the BatchNorm statistics
    path = tmp_path / "ssal.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, ssal_keras.SSALModel)
    assert loaded.alpha == 0.7 and [b.tap for b in loaded.branches] == ["stage1", "stage2"]
    want, got = model.predict(images, verbose=0), loaded.predict(images, verbose=0)
    for name in want:
        np.testing.assert_array_equal(want[name], got[name])
    assert loaded.count_params() == model.count_params()
    # It comes back compiled, with the SSAL losses and metrics.
    results = loaded.evaluate(images, labels, verbose=0, return_dict=True)
    assert results == pytest.approx(model.evaluate(images, labels, verbose=0, return_dict=True))


def test_mixed_precision_model_loads_computing_as_trained(tmp_path):
    """A model built under mixed_bfloat16 and loaded in a float32 process computes exactly as
    before: the heads' policy is in its config (they are rebuilt from layouts), and the base
    output stays float32 (a bfloat16 Identity would round the probabilities)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = backbones.build("resnet_fashion_mnist", num_classes=4,
                                   input_shape=(16, 16, 1))
        model = ssal_keras.SSALModel(backbone, [ssal_keras.Branch(
            tap="stage2", grouping=[0, 0, 1, 1], head=["cbr(8,3)", "gap"])])
    finally:
        keras.mixed_precision.set_global_policy(previous)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 1)).astype("float32")
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(images).items()}
    assert all(v.dtype == np.float32 for v in expected.values())
    path = str(tmp_path / "mixed.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.get_layer("aux_0_1_cbr_conv").dtype_policy.name == "mixed_bfloat16"
    for name, value in loaded(images).items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(value), expected[name], name)


def test_branches_on_a_keras_applications_model():
    backbone = keras.applications.ResNet50V2(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation="softmax"
    )
    grouping = np.arange(10) % 4
    model = ssal_keras.SSALModel(backbone, branches=[
        ssal_keras.Branch(tap="conv3_block4_out", grouping=grouping),
        ssal_keras.Branch(tap="stage3", grouping=np.arange(10) % 2, head=["cbr(32,3)", "gap"]),
    ])
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)), verbose=0)
    assert out["aux_0"].shape == (2, 4) and out["joint"].shape == (2, 10)
    # The SSAL model shares the backbone's layers: its base output is the backbone's.
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        model.predict(images, verbose=0)["base"], backbone.predict(images, verbose=0), atol=1e-6
    )


def test_grouping_from_a_file(tmp_path):
    path = tmp_path / "g.txt"
    ssal_keras.grouping.save_grouping(path, GROUPINGS[0])
    branch = ssal_keras.Branch(tap="stage1", grouping=str(path))
    np.testing.assert_array_equal(branch.grouping, GROUPINGS[0])


def test_a_grouping_file_is_saved_inline_and_a_path_in_a_config_is_refused(tmp_path):
    """User code may name a grouping file; the config holds the ids, never the path, and a
    config holding a path (an untrusted .keras file) is refused without reading it."""
    path = tmp_path / "g.txt"
    ssal_keras.grouping.save_grouping(path, GROUPINGS[1])
    model = ssal_keras.SSALModel(tiny_backbone(), [
        ssal_keras.Branch(tap="stage2", grouping=str(path), head=["gap"])])
    config = model.get_config()
    assert config["branches"][0]["grouping"] == GROUPINGS[1].tolist()
    rebuilt = ssal_keras.SSALModel.from_config(config)
    np.testing.assert_array_equal(rebuilt.branches[0].grouping, GROUPINGS[1])
    config["branches"][0]["grouping"] = str(path)
    with pytest.raises(ValueError, match=r"branches\[0\]\.grouping in the model config must be "
                                         "a list of group ids; a path is refused"):
        ssal_keras.SSALModel.from_config(config)


@pytest.mark.parametrize(
    "branch_kwargs, model_kwargs, match",
    [
        (dict(tap="stage9"), {}, "tap.*stem, stage1_block1, stage1.*stage9"),
        (dict(tap="predictions"), {}, "4-D"),
        (dict(grouping=[0, 1, 0, 1]), {}, "has 4 labels but the backbone has 6 classes"),
        (dict(grouping=[0, 2, 0, 2, 0, 2]), {}, "grouping"),
        (dict(head="nope"), {}, "not a head preset"),
        (dict(loss_weight=-1), {}, "loss_weight"),
        ({}, dict(alpha=-0.5), "alpha must be a finite number >= 0"),
        ({}, dict(objective="mtl"), "objective must be one of"),
    ],
)
def test_bad_arguments(branch_kwargs, model_kwargs, match):
    kwargs = {"tap": "stage1", "grouping": GROUPINGS[0], **branch_kwargs}
    with pytest.raises(ValueError, match=match):
        ssal_keras.SSALModel(tiny_backbone(), [ssal_keras.Branch(**kwargs)], **model_kwargs)


def test_bad_backbones():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inputs)
    logits = keras.layers.Dense(6, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="softmax class probabilities"):
        ssal_keras.SSALModel(keras.Model(inputs, logits), [dict(tap="c", grouping=GROUPINGS[0])])
    with pytest.raises(ValueError, match="functional keras.Model"):
        ssal_keras.SSALModel(keras.layers.Dense(3), [dict(tap="c", grouping=GROUPINGS[0])])
    with pytest.raises(ValueError, match="branches is empty"):
        ssal_keras.SSALModel(tiny_backbone(), [])
