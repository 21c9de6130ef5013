"""Quick demo of the whole SSAL method on Fashion-MNIST, on a CPU in a few minutes.

    python -m ssal_keras.demo [--recipe=models/fashion_mnist_ssal.flags] \
        [--train_examples=12000] [--epochs=3]

The network, its SSAL branches (taps, heads, loss weights, number of groups of each),
alpha and the grouping criterion are the recipe's (``--recipe``, a flagfile of ``models/``
read by ``RunConfig.from_flagfile``); the demo's own settings only make it short: fewer
images and epochs, and ``model.fit`` with Adam.

1. trains the recipe's backbone alone (the baseline) with ``model.fit``;
2. groups the labels from its confusion matrix on held-out training images, as many groups
   per branch as the recipe's groupings have (``grouping_from_confusion``: docs/method.md,
   section 2);
3. trains the same network with the recipe's SSAL branches on the same data;
4. reports test accuracy: baseline, +TR (SSAL-trained, base output) and +JP (joint output).
"""

import dataclasses
import os
import shlex
import sys
import time

from absl import flags

from ssal_keras import cli, runs

#: The repository root, where ``models/`` lies (as ``tests/`` and ``benchmarks/`` find it).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RECIPE = "models/fashion_mnist_ssal.flags"

_RECIPE = flags.DEFINE_string(
    "recipe", DEFAULT_RECIPE, "SSAL recipe (a Fashion-MNIST flagfile) whose backbone, "
    "branches, alpha and grouping settings the demo uses; a relative path is read from the "
    "working directory, else from the repository root.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of the Fashion-MNIST IDX files "
                                "(default: the recipe's, else Debian's "
                                "/usr/share/datasets/fashion-mnist).")
_TRAIN_EXAMPLES = flags.DEFINE_integer("train_examples", 12000, "Training images used (max 60000).")
_TEST_EXAMPLES = flags.DEFINE_integer("test_examples", 10000, "Test images used (max 10000).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs of each training run (the demo's own, "
                               "fewer than the recipe's).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size of the demo's model.fit "
                                   "(its own, for its few thousand images).")
_SEED = flags.DEFINE_integer("seed", None, "Seed of weights, data order and grouping ties "
                             "(default: the recipe's).")
_REPORT = flags.DEFINE_string("report", None, "If set, a JSON file of the printed test "
                              "figures, the settings and the command (BUILD_NOTES: "
                              "docs/demo.json).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "If set, the groupings and the SSAL "
                                  "model (ssal.keras) are written there.")

HELD_OUT_FRACTION = 0.1  # of --train_examples, for the baseline's confusion matrix


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the demo takes from a recipe (``read_recipe``)."""

    config: object  # its ``RunConfig``
    run: object  # ``config.resolve()``: backbone, branches, alpha as the trainer takes them
    group_counts: tuple  # groups of each branch: of its grouping file, or ``num_groups``

    def branches_text(self):
        """The branches and alpha as the demo prints them."""
        branches = self.run.branches
        return ", ".join(
            f"{tap} ({head if isinstance(head, str) else ' '.join(head or ('default',))}, "
            f"weight {weight:g})"
            for tap, head, weight in zip(branches.taps, branches.heads, branches.loss_weights)
        ) + f"; alpha {branches.alpha:g}"


def recipe_path(path):
    """``path`` itself when absolute or present from the working directory, else relative to
    the repository root (so the default recipe is found from any working directory)."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    return os.path.join(ROOT, path)


def read_recipe(path):
    """The ``Recipe`` of the flagfile ``path``: a Fashion-MNIST SSAL recipe (grouping files, or
    ``--groupings=auto`` with ``--num_groups``), not a paper model; what it leaves unsaid is
    resolved as the trainer resolves it (``RunConfig.resolve()``).

    Raises:
        ValueError: naming the recipe, when it is not one the demo can run.
    """
    from ssal_keras import data, grouping
    from ssal_keras.training import RunConfig

    config = RunConfig.from_flagfile(path)
    if config.dataset != "fashion_mnist":
        raise ValueError(f"--recipe={path} trains on {config.dataset}; the demo runs "
                         f"Fashion-MNIST recipes (e.g. the default, {DEFAULT_RECIPE}).")
    if config.paper_model:
        raise ValueError(f"--recipe={path} is paper model {config.paper_model}; the demo runs "
                         "recipes that state their backbone and branches.")
    if not config.groupings:
        raise ValueError(f"--recipe={path} is a baseline (no --groupings); give an SSAL "
                         f"recipe, e.g. {DEFAULT_RECIPE}.")
    if config.normalization not in ("none", "scale"):
        raise ValueError(f"--recipe={path} has --normalization={config.normalization}; the "
                         "demo builds its models with none or scale.")
    if config.groupings == ("auto",):
        counts = tuple(config.num_groups)  # grouping_source is not read: the demo's own baseline
    else:
        num_classes = len(data.FASHION_MNIST_CLASSES)
        counts = tuple(int(grouping.load_grouping(p, num_classes=num_classes).max()) + 1
                       for p in config.groupings)
    return Recipe(config=config, run=config.resolve(), group_counts=counts)


def _backbone(recipe, num_classes):
    """The recipe's network, normalising inside as the trainer builds it (``scale``: a
    ``preprocess`` layer dividing by 255): it takes raw pixels 0..255, as ``evaluate``,
    ``export`` and the ONNX client feed it."""
    backbone = recipe.run.backbone
    return backbone.build(num_classes=num_classes, input_shape=None,
                          normalization=backbone.normalization)


def _optimizer(num_images):
    """Adam with a cosine decay to zero: the last epoch settles, so one run compares to another."""
    import keras

    steps = _EPOCHS.value * -(-num_images // _BATCH_SIZE.value)
    return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps))


def _fit(model, images, labels, *, label):
    start = time.time()
    model.fit(images, labels, batch_size=_BATCH_SIZE.value, epochs=_EPOCHS.value, verbose=0,
              shuffle=True)
    print(f"  {label}: {_EPOCHS.value} epoch(s) on {len(images)} images in "
          f"{time.time() - start:.0f} s", flush=True)


def _check_flags():
    """Refuses counts below one, before any data is read."""
    for flag in (_TRAIN_EXAMPLES, _TEST_EXAMPLES, _EPOCHS, _BATCH_SIZE):
        if flag.value < 1:
            raise cli.UsageError(f"--{flag.name} must be >= 1; received {flag.value}.")


def _load_images(data_dir, seed):
    """``(fit, held_out, test)``, each ``(images, labels)``: the ``--train_examples`` training
    images in a seeded random order, of which ``HELD_OUT_FRACTION`` are held out for the
    groupings, and the first ``--test_examples`` test images."""
    import numpy as np

    from ssal_keras import data

    train_images, train_labels = data.load_fashion_mnist("train", data_dir=data_dir)
    test_images, test_labels = data.load_fashion_mnist("test", data_dir=data_dir)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_images))[: _TRAIN_EXAMPLES.value]
    held_out = max(int(len(order) * HELD_OUT_FRACTION), 1)
    fit_index, held_index = order[held_out:], order[:held_out]
    return ((train_images[fit_index], train_labels[fit_index]),
            (train_images[held_index], train_labels[held_index]),
            (test_images[: _TEST_EXAMPLES.value], test_labels[: _TEST_EXAMPLES.value]))


def _train_baseline(recipe, fit_images, fit_labels, num_classes):
    """Step 1: the backbone alone, trained with ``model.fit``."""
    print(f"1. baseline: {len(fit_images)} training images", flush=True)
    baseline = _backbone(recipe, num_classes)
    baseline.compile(optimizer=_optimizer(len(fit_images)),
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _fit(baseline, fit_images, fit_labels, label="baseline")
    return baseline


def _make_groupings(recipe, seed, baseline, held_images, held_labels, num_classes):
    """Step 2: one grouping per branch of the recipe, with as many groups as its own, from the
    baseline's confusion on the held-out images, by the recipe's criterion and tie-break;
    prints each grouping's groups."""
    import numpy as np

    from ssal_keras import data, grouping

    config = recipe.config
    print(f"2. groupings ({config.grouping_criterion}) from the baseline's confusion on "
          f"{len(held_images)} held-out images")
    predictions = baseline.predict(held_images, verbose=0).argmax(-1)
    confusion = grouping.confusion_matrix(held_labels, predictions, num_classes)
    groupings = [grouping.grouping_from_confusion(
        confusion, k, criterion=config.grouping_criterion, tie_break=config.grouping_tie_break,
        seed=seed) for k in recipe.group_counts]
    for g in groupings:
        groups = [
            "{" + ", ".join(data.FASHION_MNIST_CLASSES[c] for c in np.flatnonzero(g == i)) + "}"
            for i in range(g.max() + 1)
        ]
        print(f"  {g.max() + 1} groups: {' '.join(groups)}")
    return groupings


def _train_ssal(recipe, fit_images, fit_labels, groupings, num_classes):
    """Step 3: the same network with the recipe's branches, one per grouping."""
    import ssal_keras

    settings = recipe.run.branches
    print(f"3. SSAL: the same network with the recipe's {len(groupings)} branches", flush=True)
    model = ssal_keras.SSALModel(
        _backbone(recipe, num_classes),
        branches=[
            ssal_keras.Branch(tap=tap, grouping=g, head=head, loss_weight=weight,
                              head_style=settings.head_style)
            for tap, g, head, weight in zip(settings.taps, groupings, settings.heads,
                                            settings.loss_weights)
        ],
        alpha=settings.alpha,
        objective=settings.objective,
    )
    model.compile(optimizer=_optimizer(len(fit_images)))
    _fit(model, fit_images, fit_labels, label="SSAL")
    return model


def _report_accuracy(baseline, model, groupings, test_images, test_labels):
    """Step 4: test accuracy of the baseline, the SSAL model's base (+TR) and joint (+JP)
    outputs, and each branch's group accuracy."""
    import numpy as np

    from ssal_keras.modeling import outputs

    print(f"4. test accuracy on {len(test_images)} images")
    baseline_predictions = baseline.predict(test_images, verbose=0).argmax(-1)
    baseline_acc = float(np.mean(baseline_predictions == test_labels))
    predictions = model.predict(test_images, verbose=0)
    tr_acc = float(np.mean(predictions[outputs.BASE].argmax(-1) == test_labels))
    jp_acc = float(np.mean(predictions[outputs.JOINT].argmax(-1) == test_labels))
    print(f"  baseline {baseline_acc:.4f} | +TR (base) {tr_acc:.4f} | +JP (joint) {jp_acc:.4f}")
    figures = {"baseline_top1": baseline_acc, "base_top1": tr_acc, "joint_top1": jp_acc,
               "aux_group_top1": []}
    for index, g in enumerate(groupings):
        name = outputs.aux_name(index)
        acc = float(np.mean(predictions[name].argmax(-1) == g[test_labels]))
        print(f"  {name} ({g.max() + 1} groups) group accuracy {acc:.4f}")
        figures["aux_group_top1"].append(acc)
    return figures


def _save(model, groupings, output_dir):
    """Writes the groupings (``grouping_<b>.txt``) and the SSAL model (``ssal.keras``)."""
    from ssal_keras import grouping

    os.makedirs(output_dir, exist_ok=True)
    for index, g in enumerate(groupings):
        grouping.save_grouping(os.path.join(output_dir, f"grouping_{index}.txt"), g)
    path = os.path.join(output_dir, "ssal.keras")
    runs.save_model(model, path)
    print(f"  wrote {path} and the groupings")


def run():
    """Runs the four steps of the module docstring and prints the results."""
    import keras

    from ssal_keras import data

    _check_flags()
    recipe = read_recipe(recipe_path(_RECIPE.value))
    config = recipe.config
    seed = config.seed if _SEED.value is None else _SEED.value
    print(f"recipe {_RECIPE.value}: {recipe.run.backbone.name}, branches: "
          f"{recipe.branches_text()}; groups {', '.join(map(str, recipe.group_counts))}",
          flush=True)
    keras.utils.set_random_seed(seed)
    (fit_images, fit_labels), held, (test_images, test_labels) = _load_images(
        _DATA_DIR.value or config.data_dir, seed)
    num_classes = len(data.FASHION_MNIST_CLASSES)
    baseline = _train_baseline(recipe, fit_images, fit_labels, num_classes)
    groupings = _make_groupings(recipe, seed, baseline, *held, num_classes)
    model = _train_ssal(recipe, fit_images, fit_labels, groupings, num_classes)
    figures = _report_accuracy(baseline, model, groupings, test_images, test_labels)
    if _REPORT.value:
        runs.write_json(_REPORT.value, {
            "command": "python3 -m ssal_keras.demo " + shlex.join(sys.argv[1:]),
            "settings": {**{name: flags.FLAGS[name].value for name in (
                "recipe", "train_examples", "test_examples", "epochs", "batch_size")},
                "seed": seed},
            "test": figures})
        print(f"  wrote {_REPORT.value}")
    if _OUTPUT_DIR.value:
        _save(model, groupings, _OUTPUT_DIR.value)


def main():
    """The ``ssal-demo`` console command; the same as ``python -m ssal_keras.demo``."""
    cli.run(run, prog="demo", module=__name__)


if __name__ == "__main__":
    main()
