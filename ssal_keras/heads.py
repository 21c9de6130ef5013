"""Auxiliary heads of the SSAL branches (supplement section C, SPEC section 4).

A head is written as data: a sequence of block strings from a small vocabulary, applied in
order to a tapped feature map, always followed by ``dense(K) softmax`` over the branch's groups.

=====================  =====================================================================
block                  meaning
=====================  =====================================================================
``cbr(f,k[,s])``       conv ``k x k``, ``f`` filters, stride ``s`` (default 1), BN, ReLU
``inception_e[(m)]``   the CIFAR "AuxInceptionE" block (supplement fig. 1c); ``m`` scales
                       every width (default 1: 748 channels; the ImageNet heads' last E has 2)
``inception_c(m)``     Inception-v3's C block (1x7 / 7x1 factorised), widths times ``m``
``inception_d(m)``     Inception-v3's D block (stride-2 reduction), widths times ``m``
``se[(r)]``            Squeeze-and-Excitation, reduction ``r`` (default 16)
``gap``                global average pooling (the spatial blocks come before it)
``dense(u)``           fully connected, ``u`` units, ReLU
=====================  =====================================================================

Presets name the paper's layouts (``HEAD_PRESETS``), e.g. ``"cifar_resnet50_aux1"``.
"""

import dataclasses
import re

from keras import layers

from ssal_keras import blocks

DEFAULT_HEAD = ("cbr(128,3)", "cbr(256,3)", "gap", "dense(256)")
"""The head used when a branch names none: the Tiny ImageNet AuxNet of Table 6, slimmed."""

# Supplement tables 6-10 and SPEC section 4. Keys: "{dataset}_{backbone}_aux{n}".
HEAD_PRESETS = {
    # Table 6: ResNet18 on Tiny ImageNet (AuxNet1, attached at g1 or g2).
    "tiny_imagenet_resnet18_aux1": (
        "cbr(128,3)", "cbr(128,3)", "cbr(256,3)", "cbr(256,3)", "gap", "dense(256)",
    ),
    # Table 7: ResNet50 on CIFAR100.
    "cifar_resnet50_aux1": ("cbr(128,5,2)", "cbr(128,3)", "inception_e", "gap"),
    "cifar_resnet50_aux2": ("cbr(128,5)", "cbr(128,3)", "inception_e", "gap"),
    "cifar_resnet50_aux3": ("cbr(128,3)", "cbr(128,3)", "inception_e", "gap"),
    # Table 8: SE-WRN 16-8 on CIFAR100.
    "cifar_se_wrn_aux1": ("cbr(128,5,2)", "cbr(128,3)", "inception_e", "gap"),
    "cifar_se_wrn_aux2": ("cbr(128,5)", "cbr(128,3)", "gap", "dense(768)"),
    "cifar_se_wrn_aux3": ("cbr(128,3)", "cbr(128,3)", "inception_e", "gap"),
    # Table 9: WRN 28-10 and DenseNet-BC 190-40 on CIFAR100.
    "cifar_wrn_densenet_aux1": (
        "cbr(128,5,2)", "cbr(128,3)", "cbr(256,3)", "cbr(256,3)",
        "inception_e", "inception_e", "gap",
    ),
    "cifar_wrn_densenet_aux2": (
        "cbr(128,5)", "cbr(128,3)", "cbr(256,3)", "cbr(256,3)", "gap", "dense(768)",
    ),
    "cifar_wrn_densenet_aux3": (
        "cbr(128,3)", "cbr(128,3)", "inception_e", "inception_e", "gap",
    ),
    # Table 10 and figure 1: ResNet50 on ImageNet, reduced Inception-v3 blocks.
    "imagenet_resnet50_aux1": (
        "cbr(256,3,2)", "inception_c(0.5)", "inception_d(0.5)", "inception_e(1)",
        "inception_d(0.5)", "inception_e(2)", "gap",
    ),
    "imagenet_resnet50_aux2": (
        "inception_c(0.5)", "inception_d(0.5)", "inception_e(1)",
        "inception_d(0.5)", "inception_e(2)", "gap",
    ),
    "imagenet_resnet50_aux3": (
        "inception_c(0.5)", "inception_d(0.5)", "inception_e(2)", "gap",
    ),
}


@dataclasses.dataclass(frozen=True)
class _BlockKind:
    """One word of the layout vocabulary: its argument count and whether it keeps 4-D maps."""

    min_args: int
    max_args: int
    spatial: bool
    usage: str


VOCABULARY = {
    "cbr": _BlockKind(2, 3, True, "cbr(filters,kernel[,stride])"),
    "inception_e": _BlockKind(0, 1, True, "inception_e[(factor)]"),
    "inception_c": _BlockKind(1, 1, True, "inception_c(factor)"),
    "inception_d": _BlockKind(1, 1, True, "inception_d(factor)"),
    "se": _BlockKind(0, 1, True, "se[(reduction)]"),
    "gap": _BlockKind(0, 0, False, "gap"),
    "dense": _BlockKind(1, 1, False, "dense(units)"),
}

_BLOCK_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(?:\(([^()]*)\))?\s*$")


def _parse_number(text, *, block):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"head block {block!r} has a non-numeric argument {text!r}; "
            "arguments are numbers, e.g. 'cbr(128,3,2)'."
        ) from None
    if value <= 0:
        raise ValueError(f"head block {block!r} has argument {text!r}; arguments must be > 0.")
    return int(value) if value.is_integer() else value


def parse_block(block):
    """Splits one block string into its kind and numeric arguments.

    Args:
        block: str. One word of the vocabulary, e.g. ``"cbr(128,5,2)"``.

    Returns:
        ``(kind, args)``: the vocabulary word and a tuple of numbers.
    """
    match = _BLOCK_PATTERN.match(block) if isinstance(block, str) else None
    if match is None or match.group(1) not in VOCABULARY:
        valid = ", ".join(kind.usage for kind in VOCABULARY.values())
        raise ValueError(f"head block {block!r} is not in the head vocabulary; valid: {valid}.")
    kind, arg_text = match.group(1), match.group(2)
    args = tuple(
        _parse_number(a.strip(), block=block) for a in (arg_text or "").split(",") if a.strip()
    )
    spec = VOCABULARY[kind]
    if not spec.min_args <= len(args) <= spec.max_args:
        raise ValueError(
            f"head block {block!r} has {len(args)} argument(s); write it as {spec.usage}."
        )
    if kind in ("cbr", "dense", "se") and not all(isinstance(a, int) for a in args):
        raise ValueError(f"head block {block!r} takes whole numbers; write it as {spec.usage}.")
    return kind, args


def resolve_layout(head):
    """Turns a branch's ``head`` argument into a validated tuple of block strings.

    Args:
        head: None, str or sequence of str. ``None`` gives ``DEFAULT_HEAD``; a string names a
            preset of ``HEAD_PRESETS``; a sequence is a layout in the head vocabulary.

    Returns:
        tuple of str. The layout, checked: known blocks, spatial blocks before ``gap``, and a
        ``gap`` before the classifier.
    """
    if head is None:
        layout = DEFAULT_HEAD
    elif isinstance(head, str):
        if head not in HEAD_PRESETS:
            raise ValueError(
                f"head={head!r} is not a head preset; valid presets: "
                f"{', '.join(sorted(HEAD_PRESETS))} (or give a list of blocks such as "
                "['cbr(128,3)', 'gap'])."
            )
        layout = HEAD_PRESETS[head]
    else:
        layout = tuple(head)
    spatial = True
    for block in layout:
        kind, _ = parse_block(block)
        if VOCABULARY[kind].spatial and not spatial:
            raise ValueError(
                f"head layout {list(layout)} puts {block!r} after 'gap'; spatial blocks "
                "(cbr, inception_*, se) must come before 'gap'."
            )
        spatial = spatial and VOCABULARY[kind].spatial
    if spatial:
        raise ValueError(
            f"head layout {list(layout)} has no 'gap'; add 'gap' after the spatial blocks "
            "so the classifier sees a vector."
        )
    return tuple(layout)


def _scaled(width, factor):
    return max(1, int(round(width * factor)))


def inception_e(x, *, factor=1, name):
    """The CIFAR "AuxInceptionE" block (supplement figure 1c, SPEC section 4).

    Four cbr branches, stride 1, same padding: (a) 1x1 128; (b) 1x1 128 then parallel 1x3 and
    3x1 (128 each); (c) 1x1 160, 1x1 128, then parallel 1x3 and 3x1 (128 each); (d) 3x3 average
    pool then 3x1 conv 108. Output: 748 channels times ``factor``.
    """
    w = lambda width: _scaled(width, factor)  # noqa: E731
    a = blocks.conv_bn_relu(x, w(128), 1, name=f"{name}_a")
    b = blocks.conv_bn_relu(x, w(128), 1, name=f"{name}_b1")
    b = layers.Concatenate(name=f"{name}_b_cat")([
        blocks.conv_bn_relu(b, w(128), (1, 3), name=f"{name}_b2a"),
        blocks.conv_bn_relu(b, w(128), (3, 1), name=f"{name}_b2b"),
    ])
    c = blocks.conv_bn_relu(x, w(160), 1, name=f"{name}_c1")
    c = blocks.conv_bn_relu(c, w(128), 1, name=f"{name}_c2")
    c = layers.Concatenate(name=f"{name}_c_cat")([
        blocks.conv_bn_relu(c, w(128), (1, 3), name=f"{name}_c3a"),
        blocks.conv_bn_relu(c, w(128), (3, 1), name=f"{name}_c3b"),
    ])
    d = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_d_pool")(x)
    d = blocks.conv_bn_relu(d, w(108), (3, 1), name=f"{name}_d")
    return layers.Concatenate(name=f"{name}_out")([a, b, c, d])


def inception_c(x, *, factor, name):
    """Inception-v3's block C (1x7 / 7x1 factorised), every width times ``factor``.

    Branches: 1x1 192; 1x1 128 -> 1x7 128 -> 7x1 192; 1x1 128 -> 7x1 128 -> 1x7 128 -> 7x1 128
    -> 1x7 192; 3x3 average pool -> 1x1 192 (Szegedy et al. 2016, figure 6). Output 768 x factor.
    """
    w = lambda width: _scaled(width, factor)  # noqa: E731
    a = blocks.conv_bn_relu(x, w(192), 1, name=f"{name}_a")
    b = blocks.conv_bn_relu(x, w(128), 1, name=f"{name}_b1")
    b = blocks.conv_bn_relu(b, w(128), (1, 7), name=f"{name}_b2")
    b = blocks.conv_bn_relu(b, w(192), (7, 1), name=f"{name}_b3")
    c = blocks.conv_bn_relu(x, w(128), 1, name=f"{name}_c1")
    c = blocks.conv_bn_relu(c, w(128), (7, 1), name=f"{name}_c2")
    c = blocks.conv_bn_relu(c, w(128), (1, 7), name=f"{name}_c3")
    c = blocks.conv_bn_relu(c, w(128), (7, 1), name=f"{name}_c4")
    c = blocks.conv_bn_relu(c, w(192), (1, 7), name=f"{name}_c5")
    d = layers.AveragePooling2D(3, strides=1, padding="same", name=f"{name}_d_pool")(x)
    d = blocks.conv_bn_relu(d, w(192), 1, name=f"{name}_d")
    return layers.Concatenate(name=f"{name}_out")([a, b, c, d])


def inception_d(x, *, factor, name):
    """Inception-v3's block D (stride-2 grid reduction), every width times ``factor``.

    Branches: 1x1 192 -> 3x3/2 320; 1x1 192 -> 1x7 192 -> 7x1 192 -> 3x3/2 192; 3x3/2 max pool.
    Same padding (Inception-v3 uses valid), so small CIFAR-size maps halve cleanly.
    """
    w = lambda width: _scaled(width, factor)  # noqa: E731
    a = blocks.conv_bn_relu(x, w(192), 1, name=f"{name}_a1")
    a = blocks.conv_bn_relu(a, w(320), 3, strides=2, name=f"{name}_a2")
    b = blocks.conv_bn_relu(x, w(192), 1, name=f"{name}_b1")
    b = blocks.conv_bn_relu(b, w(192), (1, 7), name=f"{name}_b2")
    b = blocks.conv_bn_relu(b, w(192), (7, 1), name=f"{name}_b3")
    b = blocks.conv_bn_relu(b, w(192), 3, strides=2, name=f"{name}_b4")
    c = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_out")([a, b, c])


def build_head(x, *, layout, num_groups, name):
    """Applies an auxiliary head to a tapped feature map.

    Args:
        x: tensor. The tapped NHWC feature map.
        layout: sequence of str. Blocks in the head vocabulary (see ``resolve_layout``).
        num_groups: int. Groups of the branch's grouping: the softmax width.
        name: str. Prefix of every layer name; the softmax layer is named ``name`` itself, so
            a model's output and its layer share one name.

    Returns:
        tensor. Group probabilities, shape ``(batch, num_groups)``.
    """
    for index, block in enumerate(resolve_layout(layout), start=1):
        kind, args = parse_block(block)
        block_name = f"{name}_{index}_{kind}"
        if kind == "cbr":
            filters, kernel_size, *stride = args
            x = blocks.conv_bn_relu(
                x, filters, kernel_size, strides=stride[0] if stride else 1, name=block_name
            )
        elif kind == "inception_e":
            x = inception_e(x, factor=args[0] if args else 1, name=block_name)
        elif kind == "inception_c":
            x = inception_c(x, factor=args[0], name=block_name)
        elif kind == "inception_d":
            x = inception_d(x, factor=args[0], name=block_name)
        elif kind == "se":
            x = blocks.squeeze_excite(x, reduction=args[0] if args else 16, name=block_name)
        elif kind == "gap":
            x = layers.GlobalAveragePooling2D(name=block_name)(x)
        elif kind == "dense":
            x = layers.Dense(args[0], activation="relu", name=block_name)(x)
    # float32 under a mixed-precision policy, like the base classifier.
    return layers.Dense(num_groups, activation="softmax", dtype="float32", name=name)(x)
