"""Quick demo of the whole SSAL method on Fashion-MNIST, on a CPU in a few minutes.

    python -m ssal_keras.demo [--train_examples=12000] [--epochs=3]

1. trains a small pre-activation ResNet baseline with ``model.fit``;
2. groups the ten labels from its confusion matrix on held-out training images
   (``balanced_grouping``, join similar: docs/method.md, section 2);
3. trains the same network with two SSAL branches (3 and 5 groups) on the same data;
4. reports test accuracy: baseline, +TR (SSAL-trained, base output) and +JP (joint output).
"""

import os
import shlex
import sys
import time

from absl import flags

from ssal_keras import cli, runs

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Folder of the Fashion-MNIST IDX files "
                                "(default: Debian's /usr/share/datasets/fashion-mnist).")
_TRAIN_EXAMPLES = flags.DEFINE_integer("train_examples", 12000, "Training images used (max 60000).")
_TEST_EXAMPLES = flags.DEFINE_integer("test_examples", 10000, "Test images used (max 10000).")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs of each training run.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of weights, data order and grouping ties.")
_REPORT = flags.DEFINE_string("report", None, "If set, a JSON file of the printed test "
                              "figures, the settings and the command (BUILD_NOTES: "
                              "docs/demo.json).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "If set, the groupings and the SSAL "
                                  "model (ssal.keras) are written there.")

GROUP_COUNTS = (3, 5)  # fewer groups at the shallower tap, as the paper's 20/33/50
# The SSAL quick start's branches (models/fashion_mnist_ssal.flags): heads, loss weights and
# alpha as the fair test chose them on held-out images (BUILD_NOTES.md, "Fair test").
TAPS = ("stage1", "stage2")
HEADS = ("cbr(32,3,2) cbr(64,3,2) gap", "cbr(64,3,2) cbr(64,3) gap")
LOSS_WEIGHTS = (0.5, 0.75)
ALPHA = 0.1
HELD_OUT_FRACTION = 0.1


def _backbone(num_classes):
    """The network, normalising inside (``preprocess``: /255) as the trainer's default
    ``--normalization=scale``: it takes raw pixels 0..255, as ``evaluate``, ``export`` and
    the ONNX client feed it."""
    from ssal_keras.modeling import backbones

    return backbones.build("resnet_fashion_mnist", num_classes=num_classes, normalization="scale")


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


def _load_images():
    """``(fit, held_out, test)``, each ``(images, labels)``: the ``--train_examples`` training
    images in a seeded random order, of which ``HELD_OUT_FRACTION`` are held out for the
    groupings, and the first ``--test_examples`` test images."""
    import numpy as np

    from ssal_keras import data

    train_images, train_labels = data.load_fashion_mnist("train", data_dir=_DATA_DIR.value)
    test_images, test_labels = data.load_fashion_mnist("test", data_dir=_DATA_DIR.value)
    rng = np.random.default_rng(_SEED.value)
    order = rng.permutation(len(train_images))[: _TRAIN_EXAMPLES.value]
    held_out = max(int(len(order) * HELD_OUT_FRACTION), 1)
    fit_index, held_index = order[held_out:], order[:held_out]
    return ((train_images[fit_index], train_labels[fit_index]),
            (train_images[held_index], train_labels[held_index]),
            (test_images[: _TEST_EXAMPLES.value], test_labels[: _TEST_EXAMPLES.value]))


def _train_baseline(fit_images, fit_labels, num_classes):
    """Step 1: the backbone alone, trained with ``model.fit``."""
    print(f"1. baseline: {len(fit_images)} training images", flush=True)
    baseline = _backbone(num_classes)
    baseline.compile(optimizer=_optimizer(len(fit_images)),
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _fit(baseline, fit_images, fit_labels, label="baseline")
    return baseline


def _make_groupings(baseline, held_images, held_labels, num_classes):
    """Step 2: one grouping per ``GROUP_COUNTS`` from the baseline's confusion on the held-out
    images, joining the classes it confuses; prints each grouping's groups."""
    import numpy as np

    from ssal_keras import data, grouping

    print(f"2. groupings from the baseline's confusion on {len(held_images)} held-out images")
    predictions = baseline.predict(held_images, verbose=0).argmax(-1)
    confusion = grouping.confusion_matrix(held_labels, predictions, num_classes)
    distance = grouping.confusion_distance(confusion, "join_similar")
    groupings = [grouping.balanced_grouping(distance, k, seed=_SEED.value) for k in GROUP_COUNTS]
    for g in groupings:
        groups = [
            "{" + ", ".join(data.FASHION_MNIST_CLASSES[c] for c in np.flatnonzero(g == i)) + "}"
            for i in range(g.max() + 1)
        ]
        print(f"  {g.max() + 1} groups: {' '.join(groups)}")
    return groupings


def _train_ssal(fit_images, fit_labels, groupings, num_classes):
    """Step 3: the same network with the quick start's branches, one per grouping."""
    import ssal_keras

    print("3. SSAL: the same network with the quick start's branches: " + ", ".join(
        f"{tap} ({head}, weight {weight:g})" for tap, head, weight in zip(TAPS, HEADS, LOSS_WEIGHTS))
        + f"; alpha {ALPHA:g}", flush=True)
    model = ssal_keras.SSALModel(
        _backbone(num_classes),
        branches=[
            ssal_keras.Branch(tap=tap, grouping=g, head=head.split(), loss_weight=weight)
            for tap, g, head, weight in zip(TAPS, groupings, HEADS, LOSS_WEIGHTS)
        ],
        alpha=ALPHA,
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
    keras.utils.set_random_seed(_SEED.value)
    (fit_images, fit_labels), held, (test_images, test_labels) = _load_images()
    num_classes = len(data.FASHION_MNIST_CLASSES)
    baseline = _train_baseline(fit_images, fit_labels, num_classes)
    groupings = _make_groupings(baseline, *held, num_classes)
    model = _train_ssal(fit_images, fit_labels, groupings, num_classes)
    figures = _report_accuracy(baseline, model, groupings, test_images, test_labels)
    if _REPORT.value:
        runs.write_json(_REPORT.value, {
            "command": "python3 -m ssal_keras.demo " + shlex.join(sys.argv[1:]),
            "settings": {name: flags.FLAGS[name].value for name in (
                "train_examples", "test_examples", "epochs", "batch_size", "seed")},
            "test": figures})
        print(f"  wrote {_REPORT.value}")
    if _OUTPUT_DIR.value:
        _save(model, groupings, _OUTPUT_DIR.value)


def main():
    """The ``ssal-demo`` console command; the same as ``python -m ssal_keras.demo``."""
    cli.run(run, prog="demo", module=__name__)


if __name__ == "__main__":
    main()
