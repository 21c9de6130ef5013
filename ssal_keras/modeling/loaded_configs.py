"""Every guard on the config of a loaded ``.keras`` file, in one place.

``keras.saving.load_model`` hands a file's config to ``SSALModel.from_config`` and
``JointPrediction.from_config``; the file may come from anywhere, so the config is checked
here before anything is built, whatever ``safe_mode``: groupings must be inline lists of ids
(a model file never makes the loader open another file), and every number that sizes an
allocation stays under a cap far above any real network and far below what exhausts memory
(a config of a few bytes must not make the loader allocate gigabytes). Each refusal is one
``ValueError`` naming the entry (BUILD_NOTES.md, "Faults and hostile input").
"""

import numbers
import os

import numpy as np

from ssal_keras.modeling import heads

MAX_CLASSES = 1_000_000
"""Most classes (group ids in one grouping) a loaded model or JointPrediction config may have."""
MAX_BRANCHES = 256
"""Most groupings (branches) a loaded config may have."""
MAX_GROUP_IDS = 10_000_000
"""Most group ids a loaded config may hold in all its groupings together."""
MAX_WIDTH = 65_536
"""Most filters or units of a loaded head block or backbone conv (classifiers: MAX_CLASSES)."""
MAX_HEAD_BLOCKS = 64
MAX_TAPS = 4096
"""Most declared taps a loaded backbone may have (DenseNet-BC 190 declares 99)."""
# Per block kind, the cap of each argument in order (cbr: filters, kernel; padding and stride
# allocate nothing); se's reduction only shrinks the block.
_HEAD_CAPS = {"cbr": (MAX_WIDTH, 64), "dense": (MAX_WIDTH,), "inception_e": (64,),
              "inception_c_smaller": (64,), "inception_d_smaller": (64,),
              "inception_e_smaller": (64,)}
# Keras layer-config keys whose numbers size a weight.
_BACKBONE_CAPS = {"units": MAX_CLASSES, "input_dim": MAX_CLASSES,
                  "filters": MAX_WIDTH, "output_dim": MAX_WIDTH, "kernel_size": 64,
                  "depth_multiplier": 64}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_grouping(grouping, name, where="model"):
    """Checks one grouping of a loaded config is an inline list of ids of bounded size.

    A config may come from an untrusted ``.keras`` file, so nothing here opens a file or
    allocates in proportion to a number in it (``validate_grouping`` checks the ids after).

    Args:
        grouping: the config's value: a list (or tuple, or 1-D int array) of group ids.
        name: str. How the grouping is called in the message, e.g. ``"branches[0].grouping"``.
        where: str. Whose config it is, for the message: ``"model"``, ``"JointPrediction"``.

    Returns:
        int. The number of classes of the grouping.

    Raises:
        ValueError: a path or any other non-list, over ``MAX_CLASSES`` entries, entries that
            are not ints, or a group id not below the number of classes.
    """
    head = f"{name} in the {where} config must be a list of group ids"
    if isinstance(grouping, (str, bytes, os.PathLike)):
        raise ValueError(f"{head}; a path is refused when loading a model (a .keras file "
                         "never reads other files).")
    array_ok = isinstance(grouping, np.ndarray) and grouping.ndim == 1 and (
        grouping.dtype.kind in "iu")
    if not (array_ok or isinstance(grouping, (list, tuple))):
        raise ValueError(f"{head}; received {type(grouping).__name__}.")
    if len(grouping) > MAX_CLASSES:
        raise ValueError(f"{head} of at most {MAX_CLASSES:,} classes (loaded_configs.MAX_CLASSES); "
                         f"received {len(grouping):,} ids.")
    if not array_ok and not all(_is_int(g) for g in grouping):
        bad = next(g for g in grouping if not _is_int(g))
        raise ValueError(f"{head}, whole numbers; received an entry {bad!r:.40}.")
    top = (grouping.max() if array_ok else max(grouping)) if len(grouping) else -1
    if top >= len(grouping):
        raise ValueError(f"{name} in the {where} config has group id {int(top)} but "
                         f"{len(grouping)} classes; group ids are below the number of classes.")
    return len(grouping)


def check_groupings(groupings, name, where="model"):
    """Checks the groupings of a loaded config with ``check_grouping``, and their count
    (``MAX_BRANCHES``) and total size (``MAX_GROUP_IDS``); ``name`` has a ``{}`` for the index.
    """
    if not isinstance(groupings, (list, tuple)) or len(groupings) > MAX_BRANCHES:
        received = (f"{len(groupings):,}" if isinstance(groupings, (list, tuple))
                    else type(groupings).__name__)
        raise ValueError(f"the {where} config must hold a list of at most {MAX_BRANCHES} "
                         f"groupings (loaded_configs.MAX_BRANCHES); received {received}.")
    total = 0
    for index, grouping in enumerate(groupings):
        total += check_grouping(grouping, name.format(index), where)
        if total > MAX_GROUP_IDS:
            raise ValueError(
                f"the groupings in the {where} config hold over {MAX_GROUP_IDS:,} group ids "
                f"in all (loaded_configs.MAX_GROUP_IDS); refused before allocating.")


def check_branches(branches, fields):
    """Checks a loaded config's branches: dicts of ``Branch`` fields, inline groupings and
    heads under the caps, before any is built (so ``Branch`` never sees a path); ``fields``: the
    names of ``Branch``'s fields."""
    if not isinstance(branches, (list, tuple)) or not all(isinstance(b, dict) for b in branches):
        raise ValueError("branches in the model config must be a list of dicts of Branch "
                         "fields (Branch.get_config).")
    for index, branch in enumerate(branches):
        unknown = sorted(set(branch) - set(fields))
        if unknown:
            raise ValueError(f"branches[{index}] in the model config has no field "
                             f"{unknown[0]!r}; fields: {', '.join(fields)}.")
    check_groupings([b.get("grouping") for b in branches],
                    "branches[{}].grouping")
    for index, branch in enumerate(branches):
        check_head(branch.get("head"), f"branches[{index}].head")


def check_head(head, name):
    """Bounds a loaded head layout's blocks and their numbers (``_HEAD_CAPS``); None and preset
    names are left to ``Branch`` (presets are the paper's sizes)."""
    if head is None or isinstance(head, str):
        return
    if not isinstance(head, (list, tuple)) or len(head) > MAX_HEAD_BLOCKS:
        raise ValueError(f"{name} in the model config must be a list of at most "
                         f"{MAX_HEAD_BLOCKS} blocks.")
    for block in head:
        kind, args = heads.parse_block(block)
        for value, cap in zip(args, _HEAD_CAPS.get(kind, ())):
            if value > cap:
                raise ValueError(f"{name} block {block!r} in the model config asks for {value}; "
                                 f"a loaded model allows at most {cap} there (refused before "
                                 "allocating).")


def check_backbone(config):
    """Bounds the sizes in a loaded backbone config (``_BACKBONE_CAPS``: units, which make the
    number of classes, filters, kernels) before Keras builds, and so allocates, its layers."""
    def too_big(value, cap):
        values = value if isinstance(value, (list, tuple)) else [value]
        return any(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > cap
                   for v in values)

    containers = (dict, list, tuple)
    stack = [("backbone", config)] if isinstance(config, containers) else []
    while stack:  # a loop, not recursion: the config's depth is the file's choice
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            cap = _BACKBONE_CAPS.get(key) if isinstance(node, dict) else None
            if cap is not None and too_big(value, cap):
                raise ValueError(
                    f"{path}.{key}={value!r:.60} in the model config is over {cap:,}, the cap "
                    "for a loaded model (refused before allocating).")
            if isinstance(value, containers):  # only containers: a long list costs no paths
                stack.append((f"{path}.{key}" if isinstance(node, dict) else f"{path}[{key}]",
                              value))


def check_taps(layout):
    """Checks a loaded config's declared taps: a list of at most ``MAX_TAPS`` pairs of names
    ``[tap_name, layer_name]``; returns them as tuples (``taps.declare`` checks the layers)."""
    if not isinstance(layout, (list, tuple)) or len(layout) > MAX_TAPS or not all(
            isinstance(pair, (list, tuple)) and len(pair) == 2
            and all(isinstance(name, str) and len(name) <= 256 for name in pair)
            for pair in layout):
        raise ValueError(f"backbone_taps in the model config must be a list of at most "
                         f"{MAX_TAPS} [tap name, layer name] pairs of names.")
    return [tuple(pair) for pair in layout]
