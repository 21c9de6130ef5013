"""The recipes in models/: each reads as a RunConfig from any directory, resolves to the
authors' settings, and the quick start runs; the CLI's flags behave as users expect."""

import glob
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import ssal_keras
from ssal_keras import data
from ssal_keras.modeling import backbones, heads
from ssal_keras.training import RunConfig, resolve_settings
from ssal_keras.training import run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "models", "*.flags")))


def test_every_paper_run_has_a_baseline_and_an_ssal_recipe():
    names = {os.path.basename(p)[: -len(".flags")] for p in RECIPES}
    for paper in ssal_keras.PAPER_MODELS:
        assert {f"{paper}_baseline", f"{paper}_ssal"} <= names, paper
    assert {"fashion_mnist_baseline", "fashion_mnist_ssal"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_reads_from_any_directory_and_says_what_it_is(path, monkeypatch, tmp_path):
    with open(path) as f:
        header = f.read()
    for field in ("# Command:", "# Time:", "--model_dir="):
        assert field in header, field
    assert "Paper" in header
    monkeypatch.chdir(tmp_path)  # nested flagfiles and grouping files: read beside the recipe
    config = RunConfig.from_flagfile(path)
    backbone = config.resolve().backbone.name
    assert backbone in backbones.BACKBONE_NAMES
    if config.paper_model:
        assert ssal_keras.PAPER_MODELS[config.paper_model].backbone == backbone
    if path.endswith("_ssal.flags"):
        assert config.groupings
    for name in config.groupings:
        if name != "auto":
            assert os.path.isfile(name), name
    assert RunConfig.from_json(config.to_json()) == config


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_quick_start_recipe_runs(tmp_path):
    """The README's main job, on a slice of the data, from another directory."""
    model_dir = str(tmp_path / "quick")
    result = subprocess.run(
        [sys.executable, "-m", "ssal_keras.train",
         f"--flagfile={os.path.join(ROOT, 'models', 'fashion_mnist_ssal.flags')}",
         f"--model_dir={model_dir}", "--train_examples=512", "--eval_examples=256",
         "--held_out_examples=0", "--epochs=1", "--log_every_steps=2"],
        cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # It ends with the baseline's measured figure, its own, and where they are explained.
    last = result.stdout.strip().splitlines()[-3:]
    with open(os.path.join(ROOT, "docs", "quick_start_reference.json")) as f:
        reference = json.load(f)
    assert last[0].startswith(f"reference: test top-1 {reference['top1']:.4f}")
    assert "models/fashion_mnist_baseline.flags" in last[0]
    assert last[1].startswith("this run: +TR (base output) top-1")
    assert "+JP (joint output)" in last[1]
    assert last[2] == f"explained in: {reference['explained_in']}"
    with open(os.path.join(model_dir, "metrics.json")) as f:
        record = json.load(f)
    assert len(record["aux_top1"]) == 2 and record["completed"]


def test_nested_recipes_override_what_they_say(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = RunConfig.from_flagfile(os.path.join(ROOT, "models",
                                                  "fashion_mnist_joint_objective.flags"))
    assert config.objective == "joint"
    assert config.head == ("cbr(64,3,2) cbr(64,3) gap",)
    assert config.taps == ("stage2",) and config.epochs == 12
    config = RunConfig.from_flagfile("models/fashion_mnist_split_similar.flags")
    assert config.groupings == ("models/groupings/fashion_mnist_split_3.txt",
                                "models/groupings/fashion_mnist_split_5.txt")
    assert len(config.head) == 2
    # Overrides win; a list given replaces the recipe's.
    config = RunConfig.from_flagfile("models/fashion_mnist_ssal.flags", epochs=1,
                                     head=("gap", "gap"))
    assert config.epochs == 1 and config.head == ("gap", "gap")


# --- Every paper recipe resolves to the authors' settings (docs/authors_settings.md) ---
def _decay(rate, classes, aux_rate, aux_classes):
    rates = {c: 0.0 for c in ssal_keras.weight_decay.PARAMETER_CLASSES}
    rates.update({c: rate for c in classes})
    rates.update({c: aux_rate for c in aux_classes})
    return rates


_KERAS_HEADS = dict(conv_bias=True, conv_initializer="he_normal",
                    dense_initializer="glorot_uniform", bn_momentum=0.99, bn_epsilon=1e-3)
_TORCH_MOMENTUM = 0.9 ** (100 / 32)  # PyTorch momentum 1 - 0.9^(100/32), train.py:57-61
# shuffle: a new permutation of the whole training set every epoch (keras/train.py:285,
# keras/helper.py:372-391; pytorch/loader.py:20).
_CIFAR = dict(dataset="tfds:cifar100", augment="shift_flip", schedule="epoch_triangular",
              warmup_epochs=10.0, crop_area=[], color_jitter=0.0, image_size=None,
              shuffle="full")
_RESNET50_CIFAR = dict(
    _CIFAR, backbone="resnet50_cifar", normalization="scale", epochs=80, batch_size=64,
    momentum=0.93, nesterov=False, label_smoothing=0.0)           # run_experiments.py:33-58
_WRN = dict(
    _CIFAR, backbone="wrn_28_10", normalization="mean_std", epochs=80, batch_size=64,
    momentum=0.9, nesterov=True, label_smoothing=0.0)             # run_experiments.py:65-93
_DENSENET = dict(
    _CIFAR, backbone="densenet_bc_190_40", normalization="mean_std", epochs=100,
    batch_size=32, learning_rate=0.08, momentum=0.9, nesterov=True, label_smoothing=0.1,
    label_smoothing_mode="others")                                # run_experiments.py:100-130
_IMAGENET = dict(
    dataset="tfds:imagenet2012:train:validation", image_size=224, backbone="resnet50_imagenet",
    normalization="imagenet", augment="shift_flip", shuffle="full",
    crop_area=[0.3, 1.3333333333333333],
    color_jitter=0.4, epochs=90, batch_size=100, learning_rate=0.0390625, momentum=0.9,
    nesterov=False, schedule="piecewise_linear", warmup_epochs=5.0, label_smoothing=0.0)

_RESNET50_CIFAR_STYLE = dict(conv_bias=True, conv_initializer="he_normal",
                             dense_initializer="he_normal", bn_momentum=0.65, bn_epsilon=1e-3)
_WRN_STYLE = dict(conv_bias=True, conv_initializer="glorot_uniform",
                  dense_initializer="glorot_uniform", bn_momentum=0.99, bn_epsilon=1e-3)
_ALL = ssal_keras.weight_decay.BACKBONE_CLASSES
_ALL_AUX = ssal_keras.weight_decay.HEAD_CLASSES

# recipe -> (flags, backbone options, weight decay per parameter class, branches or None).
AUTHORS_SETTINGS = {
    "resnet50_cifar100_baseline": (
        dict(_RESNET50_CIFAR, learning_rate=0.088),
        dict(style=_RESNET50_CIFAR_STYLE),
        _decay(2e-4, ["conv_kernel"], 2e-4, ["aux_conv_kernel"]),  # l2(1e-4): 3.1
        None),
    "resnet50_cifar100_ssal": (
        dict(_RESNET50_CIFAR, learning_rate=0.092),
        dict(style=_RESNET50_CIFAR_STYLE),
        _decay(2e-4, ["conv_kernel"], 2e-4, ["aux_conv_kernel"]),
        dict(taps=["stage1", "stage2", "stage3"], loss_weights=[0.42, 0.59, 0.76], alpha=0.3,
             head_style=_KERAS_HEADS, num_groups=[20, 33, 50])),
    "wrn_28_10_cifar100_baseline": (
        dict(_WRN, learning_rate=0.016),
        dict(style=_WRN_STYLE, downsample="max_pool", se_reduction=None),
        _decay(1.4e-3, ["conv_kernel", "conv_bias", "dense_kernel", "dense_bias",
                        "aux_dense_kernel", "aux_dense_bias"], 6e-4, ["aux_conv_kernel"]),  # 3.2
        None),
    "wrn_28_10_cifar100_ssal": (
        dict(_WRN, learning_rate=0.021),
        dict(style=_WRN_STYLE, downsample="max_pool", se_reduction=None),
        _decay(1.4e-3, ["conv_kernel", "conv_bias", "dense_kernel", "dense_bias",
                        "aux_dense_kernel", "aux_dense_bias"], 6e-4, ["aux_conv_kernel"]),
        dict(taps=["stage1_block2", "stage2_block2", "stage2"], loss_weights=[0.8, 0.9, 1.0],
             alpha=0.4, head_style=_KERAS_HEADS, num_groups=[20, 33, 50])),
    # No authors' run (docs/authors_settings.md, section 9.3): their WRN builder with SE, their WRN
    # 28-10 training.
    "se_wrn_16_8_cifar100_baseline": (
        dict(_WRN, backbone="se_wrn_16_8", learning_rate=0.016),
        dict(style=_WRN_STYLE, downsample="max_pool", se_reduction=16),
        _decay(1.4e-3, ["conv_kernel", "conv_bias", "dense_kernel", "dense_bias",
                        "aux_dense_kernel", "aux_dense_bias"], 6e-4, ["aux_conv_kernel"]),
        None),
    "se_wrn_16_8_cifar100_ssal": (
        dict(_WRN, backbone="se_wrn_16_8", learning_rate=0.021),
        dict(style=_WRN_STYLE, downsample="max_pool", se_reduction=16),
        _decay(1.4e-3, ["conv_kernel", "conv_bias", "dense_kernel", "dense_bias",
                        "aux_dense_kernel", "aux_dense_bias"], 6e-4, ["aux_conv_kernel"]),
        dict(taps=["stage1", "stage2", "stage3_block1"], loss_weights=[0.8, 0.9, 1.0],
             alpha=0.4, head_style=_KERAS_HEADS, num_groups=[20, 33, 50])),
    "densenet_bc_190_40_cifar100_baseline": (
        _DENSENET,
        dict(dropout_rate=0.2, style=dict(conv_bias=False, conv_initializer="orthogonal",
                                          dense_initializer="glorot_uniform", bn_momentum=0.99,
                                          bn_epsilon=1.1e-5)),
        _decay(6e-4, ["conv_kernel", "dense_kernel"], 6e-4, ["aux_conv_kernel"]),  # 3.3
        None),
    "densenet_bc_190_40_cifar100_ssal": (
        _DENSENET,
        dict(dropout_rate=0.2),
        _decay(6e-4, ["conv_kernel", "dense_kernel"], 6e-4, ["aux_conv_kernel"]),
        dict(taps=["stage1", "transition1", "transition2"], loss_weights=[0.8, 0.9, 1.0],
             alpha=0.5, head_style=_KERAS_HEADS, num_groups=[20, 33, 50])),
    "resnet50_imagenet_baseline": (
        _IMAGENET,
        dict(zero_init_residual=False, style=dict(
            conv_bias=False, conv_initializer="kaiming_normal_fan_out",
            dense_initializer="torch_default", bn_momentum=_TORCH_MOMENTUM, bn_epsilon=1e-5)),
        _decay(1e-4, _ALL, 1e-4, _ALL_AUX),  # every parameter: 3.4
        None),
    "resnet50_imagenet_ssal": (
        _IMAGENET,
        dict(zero_init_residual=True),
        _decay(1e-4, _ALL, 1e-4, _ALL_AUX),
        dict(taps=["stage1", "stage2", "stage3"], loss_weights=[1.0, 1.0, 1.0], alpha=0.3,
             head_style=dict(conv_bias=False, conv_initializer="torch_default",
                             dense_initializer="torch_default", bn_momentum=_TORCH_MOMENTUM,
                             bn_epsilon=1e-3),
             num_groups=[200, 334, 500])),
}


def _config(recipe, **overrides):
    return RunConfig.from_flagfile(os.path.join(ROOT, "models", f"{recipe}.flags"), **overrides)


def _resolve(recipe, **overrides):
    return resolve_settings(_config(recipe, **overrides))


def _check(where, actual, expected):
    for key, value in expected.items():
        got = actual[key]
        if isinstance(value, dict):
            _check(f"{where}.{key}", got, value)
        elif isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-9), f"{where}.{key}: {got} != {value}"
        else:
            assert got == value, f"{where}.{key}: {got!r} != {value!r}"


@pytest.mark.parametrize("recipe", sorted(AUTHORS_SETTINGS))
def test_paper_recipe_resolves_to_the_authors_settings(recipe):
    flag_values, backbone_options, decay, branches = AUTHORS_SETTINGS[recipe]
    settings = _resolve(recipe)
    _check(recipe, settings["config"], flag_values)
    _check(recipe, settings["backbone_options"], backbone_options)
    _check(recipe, settings["weight_decay"], decay)
    if branches is None:
        assert settings["branches"] is None and not settings["config"]["groupings"]
        return
    paper = ssal_keras.PAPER_MODELS[settings["config"]["paper_model"]]
    assert settings["branches"]["heads"] == [list(heads.HEAD_PRESETS[h]) for h in paper.heads]
    _check(recipe, settings["branches"],
           {k: v for k, v in branches.items() if k != "num_groups"})
    assert settings["config"]["num_groups"] == branches["num_groups"]
    assert settings["config"]["grouping_tie_break"] == "authors"


def test_every_paper_recipe_is_pinned():
    paper_recipes = {os.path.basename(p)[: -len(".flags")] for p in RECIPES
                     if not os.path.basename(p).startswith(("fashion_mnist", "resnet18_tiny"))}
    assert paper_recipes == set(AUTHORS_SETTINGS)


def test_a_drifted_setting_is_named():
    flag_values, *_ = AUTHORS_SETTINGS["wrn_28_10_cifar100_ssal"]
    settings = _resolve("wrn_28_10_cifar100_ssal", momentum=0.93)
    with pytest.raises(AssertionError, match="wrn_28_10_cifar100_ssal.momentum"):
        _check("wrn_28_10_cifar100_ssal", settings["config"], flag_values)


def _train(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "ssal_keras.train", *args], cwd=cwd,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True,
        timeout=300)


def _printed_settings(result):
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout[: result.stdout.rindex("}") + 1])


def test_dry_run_writes_and_prints_the_settings_and_reads_no_data(tmp_path):
    model_dir = tmp_path / "dry"
    result = _train("--flagfile=models/resnet50_imagenet_ssal.flags", f"--model_dir={model_dir}",
                    "--epochs=6", "--dry_run", "--data_dir=/nonexistent")
    printed = _printed_settings(result)
    assert printed["config"]["epochs"] == 6 and printed["config"]["batch_size"] == 100
    assert printed["backbone_options"]["zero_init_residual"] is True
    assert "nothing trained" in result.stdout
    record = json.loads((model_dir / "run.json").read_text())
    assert record["epochs"] == 6 and record["zero_init_residual"] is True
    assert "dry_run" not in record and "model_dir" not in record
    assert sorted(os.listdir(model_dir)) == ["run.json"]
    assert RunConfig.from_dict(record) == _config("resnet50_imagenet_ssal", epochs=6,
                                                  data_dir="/nonexistent")


def test_command_line_flags_behave_as_users_expect(tmp_path):
    """From another directory: a value on the command line wins wherever it stands (here
    before the flagfile), a repeated flag replaces the recipe's list, and the recipe's nested
    flagfile and grouping files are read beside it."""
    recipe = os.path.join(ROOT, "models", "fashion_mnist_ssal.flags")
    result = _train("--epochs=1", "--taps=stage2,stage2", f"--flagfile={recipe}", "--head=gap",
                    "--head=cbr(8,3) gap", f"--model_dir={tmp_path / 'run'}", "--dry_run",
                    cwd=tmp_path)
    config = _printed_settings(result)["config"]
    assert config["epochs"] == 1  # the recipe (and the baseline it names) say 12
    assert config["head"] == ["gap", "cbr(8,3) gap"] and config["taps"] == ["stage2", "stage2"]
    assert config["held_out_examples"] == 5000  # from the nested baseline recipe
    assert config["groupings"] == [os.path.join(ROOT, "models", "groupings", name)
                                   for name in ("fashion_mnist_3.txt", "fashion_mnist_5.txt")]
    assert config["loss_weights"] == [0.5, 0.75] and config["alpha"] == 0.1


def test_a_bad_setting_is_one_line_from_the_cli(tmp_path):
    result = _train("--flagfile=models/resnet50_cifar100_ssal.flags",
                    f"--model_dir={tmp_path / 'bad'}", "--dry_run", "--head=cbr(8)")
    assert result.returncode == 2, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == ("train: error: head=('cbr(8)',): has 1 entries but there are 3 "
                         "groupings; give one per branch."), lines[-1]
    assert not os.path.exists(tmp_path / "bad" / "run.json")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(weight_decay_params=("conv_kernel", "kernels")),
         "weight_decay_params names 'kernels', which is not a parameter class; valid: "
         "conv_kernel"),
        (dict(aux_weight_decay_params=("conv_kernel",)),
         "parameter class 'conv_kernel' is in both"),
        (dict(backbone="wrn_28_10"),
         "backbone='wrn_28_10' contradicts paper_model='resnet50_cifar100'"),
        (dict(zero_init_residual=True), "resnet50_cifar takes no option 'zero_init_residual'"),
        (dict(head_style="pytorch"), "head_style='pytorch': not a valid value; valid: "),
        (dict(warmup_epochs=90), "warmup_epochs"),
        (dict(warmup_epochs=2.5), "warmup_epochs=2.5: schedule=epoch_triangular warms up over "
                                  "whole epochs"),
        (dict(color_jitter=0.4), "crop_area and color_jitter act on random-resized crops: "
                                 "give image_size"),
        (dict(head=("cbr(8)",)), "head=('cbr(8)',): has 1 entries but there are 3 groupings"),
        (dict(head=("cbr(8)", "gap", "gap")), "head: "),
        (dict(num_groups=(20, 1, 50)), "num_groups=(20, 1, 50): each count must be >= 2"),
        (dict(groupings=("auto", "x.txt")), "'auto' stands alone"),
        (dict(epochs=-1), "epochs=-1: must be an integer >= 1"),
        (dict(epochs="3"), "epochs='3': must be int"),
        (dict(taps="stage1,stage2"), "taps='stage1,stage2': must be a list of str"),
        (dict(learning_rate=0), "learning_rate=0.0: must be > 0"),
        (dict(schedule="cosine"), "schedule='cosine': not a valid value; valid: "
                                  "slanted_triangular"),
    ],
)
def test_bad_settings_are_one_value_error_naming_the_setting(overrides, message):
    with pytest.raises(ValueError) as caught:
        _config("resnet50_cifar100_ssal", **overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_unknown_settings_are_named(tmp_path):
    with pytest.raises(TypeError, match="no_such_setting"):
        RunConfig(no_such_setting=1)
    with pytest.raises(ValueError, match="unknown setting 'no_such_setting'"):
        RunConfig.from_dict({"epochs": 2, "no_such_setting": 1})
    with pytest.raises(ValueError, match="sets --no_such_setting, which is not a setting"):
        (tmp_path / "x.flags").write_text("--epochs=2\n--no_such_setting=1\n")
        RunConfig.from_flagfile(tmp_path / "x.flags")
    with pytest.raises(ValueError, match="x.flags:1: 'epochs=2' is not a setting"):
        (tmp_path / "x.flags").write_text("epochs=2\n")
        RunConfig.from_flagfile(tmp_path / "x.flags")


@pytest.mark.parametrize(
    "recipe, steps, expected",
    [
        # Per epoch (keras/helper.py:356-369): 0.1 x peak first, the peak in epoch 10, peak/71 last.
        ("resnet50_cifar100_ssal", [0, 780, 9 * 781, 79 * 781 + 780],
         [0.0092, 0.0092, 0.092, 0.092 / 71]),
        ("densenet_bc_190_40_cifar100_baseline", [0, 99 * 1562], [0.008, 0.08 / 91]),
        # Per step (pytorch/train.py:88): 0.4 x peak first, the peak at epoch 4, epoch 90 at 0.
        ("resnet50_imagenet_ssal", [0, 3 * 12812, 89 * 12812, 90 * 12812 - 1],
         [0.4 * 0.0390625, 0.0390625, 0.0, 0.0]),
    ],
)
def test_recipe_schedules_have_the_authors_shape(recipe, steps, expected):
    steps_per_epoch = {"resnet50_cifar100_ssal": 781, "densenet_bc_190_40_cifar100_baseline":
                       1562, "resnet50_imagenet_ssal": 12812}[recipe]
    schedule = _config(recipe).resolve().schedule.learning_rate_schedule(steps_per_epoch)
    rates = [float(schedule(step)) for step in steps]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-12)


def test_same_seed_gives_every_fair_test_run_the_same_initial_backbone():
    """The fair test pairs runs by seed (BUILD_NOTES.md, "Fair test on Fashion-MNIST"): the
    trainer builds the backbone first after seeding, so baseline, SSAL and identity control
    start from the same backbone weights, and a different seed gives different ones."""
    dataset = types.SimpleNamespace(num_classes=10, image_shape=(28, 28, 1))

    def initial_backbone(recipe, seed):
        config = _config(recipe)
        keras.utils.set_random_seed(seed)
        groupings = [np.loadtxt(path, dtype=int) for path in config.groupings]
        model = run_lib.build_model(config.resolve(), dataset, groupings, "scale")
        names = [layer.name for layer in backbones.build(
            "resnet_fashion_mnist", num_classes=10).layers if layer.weights]
        return [w for name in names for w in model.get_layer(name).get_weights()]

    baseline = initial_backbone("fashion_mnist_baseline", 0)
    for recipe in ("fashion_mnist_ssal", "fashion_mnist_identity", "fashion_mnist_split_similar"):
        weights = initial_backbone(recipe, 0)
        assert len(weights) == len(baseline) > 20
        for a, b in zip(weights, baseline):
            np.testing.assert_array_equal(a, b)
    other_seed = initial_backbone("fashion_mnist_baseline", 1)
    assert not np.array_equal(other_seed[0], baseline[0])
