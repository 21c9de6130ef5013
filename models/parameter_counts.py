"""Parameter counts of the paper's models, and of SE-WRN 16-8's candidate head layouts.

    python3 models/parameter_counts.py [--output docs/parameter_counts.json]

Builds every model of BUILD_NOTES.md, "Parameter counts" (built, never trained) with the
package's public builders (``backbones.build``, ``paper_model``, ``SSALModel`` with
``Branch``) and ``keras.applications.ResNet50``, and writes one JSON (atomically) with the
command, the date, the package versions and:

- ``models``: per model its description, our ``count_params()`` (BatchNorm moving statistics
  included, as the authors' ``count_params()`` print, keras/train.py:256) and trainable
  count, the authors' and the paper's figures with their sources (``AUTHORS`` and ``PAPER``
  below), and ``diff_percent``: 100 x (ours / figure - 1) at 2 decimals, against the figure
  as printed (a figure rounded to 0.01M is matched by any diff within +-0.02%).
  Each SSAL model also has ``heads``: each head's counts and conv biases (the authors' Keras
  ``cbr`` has a bias, their PyTorch ImageNet heads none), summed in ``heads_conv_bias``;
- ``se_wrn_16_8_candidates``: SE-WRN 16-8 with head layouts that might give the authors'
  14.9M (their README.md:21; docs/method.md, section 3): one function below per idea, each
  built as a whole SSAL model, plus ``window_search``, every choice of tap width for the
  heads of Tables 7-9 (head counts added to the backbone's, checked against a full build).

Time: 3 to 5 minutes on 2 CPU cores shared with another job (measured: 154 s, 214 s and
291 s); the run records its own in ``wall_seconds``.
"""

import argparse
import dataclasses
import datetime
import itertools
import math
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import ssal_keras
from ssal_keras import Branch, SSALModel, backbones, heads, paper_model
from ssal_keras import runs as run_files

AUTHORS = "docs/authors_settings.md, section {}"  # their code's counts, run and rounded there
PAPER = "docs/method.md, section 3 (the paper's backbone / SSAL figures)"
KERAS_APPLICATIONS = "keras.applications.ResNet50(weights=None), built here"
README_FIGURE = 14.9  # the authors' README.md:21 for SE-WRN 16-8 with SSAL, in millions
README_WINDOW = (14.85, 14.95)  # what rounds to 14.9M
CIFAR_GROUPS = (20, 33, 50)


def trainable_count(model):
    return int(sum(int(np.prod(v.shape)) for v in model.trainable_weights))


def counts(model):
    return {"count_params": int(model.count_params()), "trainable": trainable_count(model)}


def structure(backbone_name):
    """The numbers that name a backbone (depth, width, growth rate), from its spec."""
    spec = {**backbones.WIDE_RESNET_SPECS, **backbones.DENSENET_BC_SPECS}.get(backbone_name, {})
    return {k: spec[k] for k in ("depth", "width", "growth_rate") if k in spec}


def groupings(num_classes, groups):
    return [np.arange(num_classes) % k for k in groups]


def diff_percent(ours, figure):
    """100 x (ours / figure - 1) at 2 decimals, as printed (no -0.0)."""
    return round(100 * (ours / figure - 1), 2) + 0.0


# --- The table of models ------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    """One model: how it is built, which count is compared, and the figures to compare with.
    A figure is ``(value, unit, source)``: unit ``"M"`` (millions, as printed) or ``"exact"``."""

    model: str
    build: object
    num_classes: int
    backbone: str
    compare: str = "count_params"
    authors: tuple = None
    paper: tuple = None
    groups: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict)
    heads_authors: tuple = None  # (millions per head, source), compared on trainable counts


def backbone_row(model, name, num_classes, **kwargs):
    return Row(model, lambda: backbones.build(name, num_classes=num_classes), num_classes, name,
               **kwargs)


def ssal_row(model, name, **kwargs):
    config = ssal_keras.PAPER_MODELS[name]
    return Row(model, lambda: paper_model(name, groupings=groupings(
        config.num_classes, config.paper_groups)), config.num_classes, config.backbone,
        groups=config.paper_groups, extra={"paper_model": name, "branches": len(config.taps)},
        **kwargs)


ROWS = [
    # docs/method.md, section 3: the paper gives no figure for ResNet18 on Tiny ImageNet.
    backbone_row("ResNet18, Tiny ImageNet (200)", "resnet18_tiny_imagenet", 200),
    backbone_row("ResNet50, CIFAR100", "resnet50_cifar", 100,
                 authors=(23.77, "M", AUTHORS.format("9.1")), paper=(23.8, "M", PAPER)),
    backbone_row("SE-WRN 16-8, CIFAR100", "se_wrn_16_8", 100,
                 authors=(11.11, "M", AUTHORS.format("9.3")), paper=(11.1, "M", PAPER)),
    backbone_row("WRN 28-10, CIFAR100", "wrn_28_10", 100,
                 authors=(36_564_932, "exact", AUTHORS.format("9.2")), paper=(36.6, "M", PAPER)),
    # No paper figure, no authors' run; the DenseNet paper's 0.8M counts trainable weights.
    backbone_row("DenseNet-BC 100-12, CIFAR100", "densenet_bc_100_12", 100, compare="trainable",
                 paper=(0.8, "M", "the DenseNet paper (docs/method.md, section 3)")),
    backbone_row("DenseNet-BC 190-40, CIFAR100", "densenet_bc_190_40", 100,
                 authors=(26.08, "M", AUTHORS.format("9.4")), paper=(26.1, "M", PAPER)),
    # torchvision's ResNet50, which the authors' ImageNet runs use; no paper figure.
    backbone_row("ResNet50, ImageNet (1000), torchvision's", "resnet50_imagenet", 1000,
                 compare="trainable", authors=(25_557_032, "exact", AUTHORS.format("9.5"))),
    backbone_row("ResNet50, `keras.applications` (1000)", "resnet50_keras_applications", 1000,
                 authors=(None, "exact", KERAS_APPLICATIONS)),  # the value: built here
    ssal_row("SSAL ResNet50 CIFAR100 (20/33/50 groups)", "resnet50_cifar100",
             authors=(28.89, "M", AUTHORS.format("9.1")), paper=(28.9, "M", PAPER)),
    ssal_row("SSAL DenseNet 190-40 CIFAR100", "densenet_bc_190_40_cifar100",
             authors=(38.29, "M", AUTHORS.format("9.4")), paper=(38.3, "M", PAPER)),
    # The paper's 38.2M matches no layout (docs/authors_settings.md, section 11.1, item 17).
    ssal_row("SSAL WRN 28-10 CIFAR100", "wrn_28_10_cifar100",
             authors=(43.25, "M", AUTHORS.format("9.2")), paper=(38.2, "M", PAPER)),
    # No authors' run (docs/authors_settings.md, section 9.3); the candidates below.
    ssal_row("SSAL SE-WRN 16-8 CIFAR100", "se_wrn_16_8_cifar100", paper=(14.9, "M", PAPER)),
    ssal_row("SSAL ResNet18 Tiny ImageNet (1 branch, 40 groups)", "resnet18_tiny_imagenet"),
    ssal_row("SSAL ResNet50 ImageNet (200/334/500 groups)", "resnet50_imagenet",
             compare="trainable", authors=(37.45, "M", AUTHORS.format("9.9")),
             heads_authors=((4.38, 4.06, 3.45), AUTHORS.format("9.9"))),
]


def head_counts(model):
    """Per branch of an SSAL model: its head's counts and conv biases (layers ``aux_i*``)."""
    result = []
    for index in range(len(model.branches)):
        name = f"aux_{index}"
        layers = [layer for layer in model.layers
                  if layer.name == name or layer.name.startswith(name + "_")]
        result.append({
            "tap": model.branches[index].tap, "head": list(model.branches[index].head),
            "groups": model.branches[index].num_groups,
            "count_params": int(sum(layer.count_params() for layer in layers)),
            "trainable": int(sum(int(np.prod(w.shape)) for layer in layers
                                 for w in layer.trainable_weights)),
            "conv_bias": int(sum(layer.filters for layer in layers
                                 if isinstance(layer, keras.layers.Conv2D) and layer.use_bias)),
        })
    return result


def figure_entry(figure, ours, built_reference=None):
    value, unit, source = figure
    if built_reference is not None:
        value = built_reference
    full = value * 1e6 if unit == "M" else value
    key = "millions" if unit == "M" else "count"
    return {key: value, "source": source, "diff_percent": diff_percent(ours, full)}


def count_row(row):
    model = row.build()
    entry = {"model": row.model, "backbone": row.backbone, "num_classes": row.num_classes,
             **structure(row.backbone), **row.extra, "groups": list(row.groups),
             **counts(model), "compared": row.compare}
    ours = entry[row.compare]
    reference = None
    if row.backbone == "resnet50_keras_applications":
        keras.backend.clear_session()
        reference = int(keras.applications.ResNet50(weights=None, classes=1000).count_params())
    for who in ("authors", "paper"):
        figure = getattr(row, who)
        entry[who] = None if figure is None else figure_entry(figure, ours, reference)
    if isinstance(model, SSALModel):
        entry["heads"] = head_counts(model)
        entry["heads_conv_bias"] = sum(h["conv_bias"] for h in entry["heads"])
    if row.heads_authors is not None:
        figures, source = row.heads_authors
        entry["heads_authors"] = {
            "millions": list(figures), "source": source, "compared": "trainable",
            "diff_percent": [diff_percent(h["trainable"], f * 1e6)
                             for h, f in zip(entry["heads"], figures)]}
    keras.backend.clear_session()
    return entry


# --- SE-WRN 16-8: candidate layouts for the authors' 14.9M ----------------------------------

H = heads.HEAD_PRESETS
TABLE = {7: tuple(H[f"cifar_resnet50_aux{i}"] for i in (1, 2, 3)),
         8: tuple(H[f"cifar_se_wrn_aux{i}"] for i in (1, 2, 3)),
         9: tuple(H[f"cifar_wrn_densenet_aux{i}"] for i in (1, 2, 3))}
OURS_TAPS = ssal_keras.PAPER_MODELS["se_wrn_16_8_cifar100"].taps  # stage1, stage2, stage3_block1
WRN_28_10_TAPS = ("stage1", "stage2_block1", "stage2")  # [2,2], [3,2], [3,-1] at 2 blocks/group
NO_BIAS = dataclasses.replace(heads.HEAD_STYLES["authors_keras"], conv_bias=False)
WRN_28_10 = {"positions_of": "wrn_28_10_cifar100", **structure("wrn_28_10")}


@dataclasses.dataclass
class Layout:
    key: str
    taps: tuple
    heads: tuple
    groups: tuple = CIFAR_GROUPS
    tables: tuple = (8, 8, 8)  # the supplement table of each head
    conv_bias: bool = True
    extra: dict = dataclasses.field(default_factory=dict)


def published():
    """Table 8 where ssal_keras attaches it, and at another block of the same groups."""
    return [Layout("table8_ours", OURS_TAPS, TABLE[8]),
            Layout("table8_ours_stage3_end", ("stage1", "stage2", "stage3"), TABLE[8])]


def without_bias():
    return [Layout("table8_no_conv_bias", OURS_TAPS, TABLE[8], conv_bias=False)]


def with_se_gates():
    """An SE gate before each GAP, or after every conv and Inception block (the authors'
    dead ``se`` head block, keras/aux_nets_tf.py:121-122)."""
    def before_gap(layout):
        return tuple(b for block in layout for b in (("se", block) if block == "gap" else (block,)))

    def after_each(layout):
        return tuple(b for block in layout for b in (
            (block, "se") if block.startswith(("cbr", "inception")) else (block,)))

    return [Layout("table8_se_before_gap", OURS_TAPS, tuple(map(before_gap, TABLE[8]))),
            Layout("table8_se_after_each_block", OURS_TAPS, tuple(map(after_each, TABLE[8])))]


def at_other_taps():
    """Table 8 at WRN 28-10's places, and at the group starts."""
    return [Layout("table8_wrn_28_10_places", WRN_28_10_TAPS, TABLE[8], extra=WRN_28_10),
            Layout("table8_group_starts", ("stem", "stage2_pool", "stage3_pool"), TABLE[8])]


def more_groups():
    return [Layout("table8_100_groups", OURS_TAPS, TABLE[8], groups=(100, 100, 100))]


def wider_aux2_dense():
    """AuxNet2's hidden dense layer wider than 768 units."""
    a1, a2, a3 = TABLE[8]
    return [Layout(f"table8_aux2_dense_{units}", OURS_TAPS,
                   (a1, a2[:-1] + (f"dense({units})",), a3), extra={"aux2_dense_units": units})
            for units in (1024, 2048, 4096)]


def aux2_deeper_tap():
    return [Layout("table8_aux2_at_stage3", ("stage1", "stage3", "stage3_block1"), TABLE[8])]


def more_inception():
    """A second Inception in AuxNet1 or AuxNet3 (Table 9's AuxNet3 has two), or one in
    AuxNet2."""
    a1, a2, a3 = TABLE[8]
    second = a1[:3] + ("inception_e",) + a1[3:]
    return [Layout("table8_aux1_two_inceptions", OURS_TAPS, (second, a2, a3)),
            Layout("table8_aux3_two_inceptions", OURS_TAPS, (a1, a2, TABLE[9][2]),
                   tables=(8, 8, 9)),
            Layout("table8_aux2_inception", OURS_TAPS,
                   (a1, a2[:2] + ("inception_e",) + a2[2:], a3))]


def other_tables():
    """Table 7's or Table 9's heads on SE-WRN 16-8."""
    return [Layout("table7_stage1_2_3", ("stage1", "stage2", "stage3"), TABLE[7],
                   tables=(7, 7, 7)),
            Layout("table9_stage1_2_3", ("stage1", "stage2", "stage3"), TABLE[9],
                   tables=(9, 9, 9)),
            Layout("table9_wrn_28_10_places", WRN_28_10_TAPS, TABLE[9], tables=(9, 9, 9),
                   extra=WRN_28_10),
            # In the README's window, but against the heads' strides (quoted in
            # BUILD_NOTES.md, "Parameter counts"): AuxNet1 (5x5/2) on the 32x32 stem.
            Layout("table7_stem_stage3_stage3", ("stem", "stage3", "stage3"), TABLE[7],
                   tables=(7, 7, 7))]


def authors_positions():
    """The authors' SSAL positions (keras/run_experiments.py:48, 81, 117) on their WRN builder
    at depth 16, where two blocks per group leave only some of them (section 9.6 of
    docs/authors_settings.md): WRN's [3,-1] alone; ResNet50's [2,-1], [3,-1]; DenseNet's
    [2,0], [3,0]."""
    return [Layout("authors_wrn_path_depth16", ("stage2",), (TABLE[9][2],), groups=(50,),
                   tables=(9,)),
            Layout("authors_resnet50_positions", ("stage1", "stage2"), TABLE[7][1:],
                   groups=(33, 50), tables=(7, 7)),
            Layout("authors_densenet_positions", ("stem", "stage2_pool"), TABLE[9][1:],
                   groups=(33, 50), tables=(9, 9))]


IDEAS = (published, without_bias, with_se_gates, at_other_taps, more_groups, wider_aux2_dense,
         aux2_deeper_tap, more_inception, other_tables, authors_positions)


def in_window(count):
    return README_WINDOW[0] * 1e6 <= count < README_WINDOW[1] * 1e6


def count_layout(layout):
    backbone = backbones.build("se_wrn_16_8", num_classes=100)
    style = "authors_keras" if layout.conv_bias else NO_BIAS
    branches = [Branch(tap=tap, grouping=g, head=list(head), head_style=style)
                for tap, g, head in zip(layout.taps, groupings(100, layout.groups), layout.heads)]
    model = SSALModel(backbone, branches, alpha=0.4, name=layout.key)
    entry = {"key": layout.key, "taps": list(layout.taps),
             "tap_channels": [backbones.resolve_tap(backbone, t).channels for t in layout.taps],
             "heads": [list(h) for h in layout.heads], "groups": list(layout.groups),
             "supplement_tables": list(layout.tables), "conv_bias": layout.conv_bias,
             **layout.extra, **counts(model),
             "heads_conv_bias": sum(h["conv_bias"] for h in head_counts(model))}
    entry["in_readme_window"] = {k: in_window(entry[k]) for k in ("count_params", "trainable")}
    keras.backend.clear_session()
    return entry


def dense_units_for_window(layouts):
    """AuxNet2 hidden units that would put Table 8 in the README's window (each unit adds its
    inputs, a bias and one weight per group)."""
    narrow = next(c for c in layouts if c["key"] == "table8_ours")
    wide = next(c for c in layouts if c["key"] == "table8_aux2_dense_4096")
    per_unit = (wide["count_params"] - narrow["count_params"]) / (4096 - 768)
    low, high = (w * 1e6 - narrow["count_params"] for w in README_WINDOW)
    return {"per_unit": int(per_unit) if per_unit.is_integer() else per_unit,
            "units": [768 + math.ceil(low / per_unit), 768 + math.ceil(high / per_unit) - 1]}


def window_search(published_count):
    """Every tap width (16, 128, 256, 512: ``stem``, ``stage1``, ``stage2``, ``stage3``) for
    each of the three heads, Table 8's heads or any mix of Tables 7-9 (branch i takes some
    table's AuxNet i, groups 20/33/50): the counts in the README's window. Head counts are
    added to the backbone's; the sum is checked against the full build of ``table8_ours``."""
    backbone = backbones.build("se_wrn_16_8", num_classes=100)
    base = counts(backbone)
    taps = {t.channels: t for name, t in backbones.taps(backbone).items()
            if name in ("stem", "stage1", "stage2", "stage3")}
    size = backbone.input_shape[1]
    keras.backend.clear_session()
    cache = {}

    def head(table, index, channels, style):
        key = (table, index, channels, style)
        if key not in cache:
            stride = taps[channels].stride
            inputs = keras.Input((size // stride, size // stride, channels))
            model = keras.Model(inputs, heads.build_head(
                inputs, layout=TABLE[table][index], num_groups=CIFAR_GROUPS[index],
                style=NO_BIAS if style == "no_bias" else "authors_keras", name="h"))
            cache[key] = counts(model)
            keras.backend.clear_session()
        return cache[key]

    def total(tables, widths, counting):
        style, field = {"count_params": ("bias", "count_params"),
                        "count_params_no_conv_bias": ("no_bias", "count_params"),
                        "trainable": ("bias", "trainable")}[counting]
        return base[field] + sum(head(t, i, w, style)[field]
                                 for i, (t, w) in enumerate(zip(tables, widths)))

    assert total((8, 8, 8), (128, 256, 512), "count_params") == published_count
    widths = list(itertools.product(sorted(taps), repeat=3))
    table8 = {counting: [{"tap_channels": list(w), "count": total((8, 8, 8), w, counting)}
                         for w in widths if in_window(total((8, 8, 8), w, counting))]
              for counting in ("count_params", "count_params_no_conv_bias", "trainable")}
    mixed = [{"supplement_tables": list(t), "tap_channels": list(w),
              "count_params": total(t, w, "count_params")}
             for t in itertools.product((7, 8, 9), repeat=3) for w in widths
             if in_window(total(t, w, "count_params"))]
    return {"tap_channels": sorted(taps), "choices_per_table_mix": len(widths),
            "table8_in_window": table8,
            "table8_max_count_params": max(total((8, 8, 8), w, "count_params") for w in widths),
            "mixed_tables_in_window": mixed}


# --- The report ------------------------------------------------------------------------------

def report(argv):
    started = time.time()
    models = [count_row(row) for row in ROWS]
    layouts = [count_layout(layout) for idea in IDEAS for layout in idea()]
    published_count = next(c for c in layouts if c["key"] == "table8_ours")["count_params"]
    return {
        "command": " ".join(["python3", "models/parameter_counts.py", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "keras": keras.__version__,
                     "tensorflow": tf.__version__, "numpy": np.__version__,
                     "ssal_keras": ssal_keras.__version__},
        "counting": ("count_params: Keras count_params(), BatchNorm moving statistics "
                     "included; trainable: the sizes of the trainable weights"),
        "diff_percent": "100 x (ours / figure - 1), 2 decimals, the figure as printed",
        "models": models,
        "se_wrn_16_8_candidates": {
            "readme_millions": README_FIGURE, "readme_window_millions": list(README_WINDOW),
            "readme_source": "the authors' README.md:21 (docs/method.md, section 3)",
            "layouts": layouts,
            "aux2_dense_for_window": dense_units_for_window(layouts),
            "window_search": window_search(published_count),
        },
        "wall_seconds": round(time.time() - started),
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="docs/parameter_counts.json")
    args = parser.parse_args(argv)
    result = report(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    run_files.write_json(args.output, result)
    print(f"wrote {args.output} in {result['wall_seconds']} s")


if __name__ == "__main__":
    main()
