"""Helpers shared by the benchmarks: forward FLOPs, and models built from the recipes."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def forward_flops(model):
    """Forward FLOPs of one image: 2 x multiply-adds of every Conv2D and Dense layer."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels = layer.output.shape
            kh, kw = layer.kernel_size
            total += 2 * height * width * kh * kw * layer.input.shape[-1] * channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def grouping_files(folder, classes, groups):
    """One grouping file per branch in ``folder``: class c in group c mod k (speed does not
    depend on which classes share a group)."""
    paths = []
    for k in groups:
        path = os.path.join(folder, f"grouping_{k}.txt")
        with open(path, "w") as f:
            f.write("".join(f"{c % k}\n" for c in range(classes)))
        paths.append(path)
    return paths


def recipe_model(recipe, shape, classes, groupings=None):
    """The model of ``models/RECIPE.flags`` (random weights, inputs /255 inside), as the
    trainer builds it; ``groupings`` (files) replace the recipe's when given."""
    from ssal_keras import data, grouping
    from ssal_keras.training import RunConfig, run

    config = RunConfig.from_flagfile(os.path.join(ROOT, "models", f"{recipe}.flags"),
                                     dataset="npz:unused",
                                     **({"groupings": tuple(groupings)} if groupings else {}))
    dataset = data.Dataset(train=None, eval=None, num_classes=classes, class_names=[],
                           image_shape=shape, num_train=1, num_eval=1)
    loaded = [grouping.load_grouping(path) for path in config.groupings]
    return run.build_model(config, dataset, loaded, "scale")
