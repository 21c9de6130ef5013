"""Quick demo of the whole SSAL method on Fashion-MNIST, on a CPU in a few minutes.

    python -m ssal_keras.demo [--train_examples=12000] [--epochs=3]

1. trains a small pre-activation ResNet baseline with ``model.fit``;
2. groups the ten labels from its confusion matrix on held-out training images
   (``balanced_grouping``, join similar: SPEC section 2);
3. trains the same network with two SSAL branches (3 and 5 groups) on the same data;
4. reports test accuracy: baseline, +TR (SSAL-trained, base output) and +JP (joint output).
"""

import os
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
    from ssal_keras.modeling import backbones

    return backbones.build("resnet_fashion_mnist", num_classes=num_classes)


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


def run():
    """Runs the four steps of the module docstring and prints the results."""
    import keras
    import numpy as np

    import ssal_keras
    from ssal_keras import data, grouping

    for flag in (_TRAIN_EXAMPLES, _TEST_EXAMPLES, _EPOCHS, _BATCH_SIZE):
        if flag.value < 1:
            raise cli.UsageError(f"--{flag.name} must be >= 1; received {flag.value}.")
    keras.utils.set_random_seed(_SEED.value)
    train_images, train_labels = data.load_fashion_mnist("train", data_dir=_DATA_DIR.value)
    test_images, test_labels = data.load_fashion_mnist("test", data_dir=_DATA_DIR.value)
    rng = np.random.default_rng(_SEED.value)
    order = rng.permutation(len(train_images))[: _TRAIN_EXAMPLES.value]
    held_out = max(int(len(order) * HELD_OUT_FRACTION), 1)
    fit_index, held_index = order[held_out:], order[:held_out]
    test_images = test_images[: _TEST_EXAMPLES.value]
    test_labels = test_labels[: _TEST_EXAMPLES.value]
    scale = lambda x: x.astype("float32") / 255.0  # noqa: E731
    num_classes = len(data.FASHION_MNIST_CLASSES)

    print(f"1. baseline: {len(fit_index)} training images", flush=True)
    baseline = _backbone(num_classes)
    baseline.compile(optimizer=_optimizer(len(fit_index)),
                     loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _fit(baseline, scale(train_images[fit_index]), train_labels[fit_index], label="baseline")

    print(f"2. groupings from the baseline's confusion on {held_out} held-out images")
    predictions = baseline.predict(scale(train_images[held_index]), verbose=0).argmax(-1)
    confusion = grouping.confusion_matrix(train_labels[held_index], predictions, num_classes)
    distance = grouping.confusion_distance(confusion, "join_similar")
    groupings = [grouping.balanced_grouping(distance, k, seed=_SEED.value) for k in GROUP_COUNTS]
    for g in groupings:
        groups = [
            "{" + ", ".join(data.FASHION_MNIST_CLASSES[c] for c in np.flatnonzero(g == i)) + "}"
            for i in range(g.max() + 1)
        ]
        print(f"  {g.max() + 1} groups: {' '.join(groups)}")

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
    model.compile(optimizer=_optimizer(len(fit_index)))
    _fit(model, scale(train_images[fit_index]), train_labels[fit_index], label="SSAL")

    print(f"4. test accuracy on {len(test_images)} images")
    x_test = scale(test_images)
    baseline_acc = float(np.mean(baseline.predict(x_test, verbose=0).argmax(-1) == test_labels))
    out = model.predict(x_test, verbose=0)
    tr_acc = float(np.mean(out["base"].argmax(-1) == test_labels))
    jp_acc = float(np.mean(out["joint"].argmax(-1) == test_labels))
    print(f"  baseline {baseline_acc:.4f} | +TR (base) {tr_acc:.4f} | +JP (joint) {jp_acc:.4f}")
    for index, g in enumerate(groupings):
        acc = float(np.mean(out[f"aux_{index}"].argmax(-1) == g[test_labels]))
        print(f"  aux_{index} ({g.max() + 1} groups) group accuracy {acc:.4f}")

    if _OUTPUT_DIR.value:
        os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
        for index, g in enumerate(groupings):
            grouping.save_grouping(os.path.join(_OUTPUT_DIR.value, f"grouping_{index}.txt"), g)
        path = os.path.join(_OUTPUT_DIR.value, "ssal.keras")
        runs.save_model(model, path)
        print(f"  wrote {path} and the groupings")


if __name__ == "__main__":
    cli.run(run, prog="demo")
