"""Auxiliary heads of the SSAL branches (supplement section C, docs/method.md, section 4).

A head is written as data: a sequence of block strings from a small vocabulary, applied in
order to a tapped feature map, always followed by ``dense(K) softmax`` over the branch's groups.

=========================  ================================================================
block                      meaning
=========================  ================================================================
``cbr(f,k[,s[,p]])``       conv ``k x k``, ``f`` filters, stride ``s`` (default 1), BN, ReLU;
                           "same" padding, or ``p`` pixels of zero padding on every side
                           (PyTorch's ``padding=p``; 0 is "valid")
``inception_e[(m)]``       the authors' CIFAR Inception block (docs/authors_settings.md,
                           section 9.8; supplement fig. 1c), every width times ``m``: 748
                           channels at ``m = 1``
``inception_c_smaller(m)`` the authors' ImageNet ``InceptionC_smaller``
                           (docs/authors_settings.md, section 9.9), every width times ``m``:
                           256 channels at ``m = 0.5``
``inception_d_smaller(m)`` the authors' ``InceptionD_smaller``, a stride-2 reduction
``inception_e_smaller(m)`` the authors' ``InceptionE_smaller``: 748 channels times ``m``
``se[(r)]``                Squeeze-and-Excitation, reduction ``r`` (default 16)
``gap``                    global average pooling (the spatial blocks come before it)
``dense(u)``               fully connected, ``u`` units, ReLU
=========================  ================================================================

Presets name the paper's layouts (``HEAD_PRESETS``), e.g. ``"cifar_resnet50_aux1"``. A head's
``style`` (``HEAD_STYLES``) sets its conv bias, initialisers and BatchNorm settings, which
differ between the authors' Keras (CIFAR) and PyTorch (ImageNet) heads.
"""

import dataclasses
import re

from keras import layers

from ssal_keras.modeling import blocks

DEFAULT_HEAD = ("cbr(128,3)", "cbr(256,3)", "gap", "dense(256)")
"""The head used when a branch names none: the Tiny ImageNet AuxNet of Table 6, slimmed."""

# Supplement tables 6-10, docs/method.md, section 4 and the authors' code (docs/authors_settings.md,
# sections 9.7 and 9.9). Keys: "{dataset}_{backbone}_aux{n}".
HEAD_PRESETS = {
    # Table 6: ResNet18 on Tiny ImageNet (AuxNet1, attached at g1 or g2).
    "tiny_imagenet_resnet18_aux1": (
        "cbr(128,3)", "cbr(128,3)", "cbr(256,3)", "cbr(256,3)", "gap", "dense(256)",
    ),
    # Table 7: ResNet50 on CIFAR100 (run_experiments.py:52-54).
    "cifar_resnet50_aux1": ("cbr(128,5,2)", "cbr(128,3)", "inception_e", "gap"),
    "cifar_resnet50_aux2": ("cbr(128,5)", "cbr(128,3)", "inception_e", "gap"),
    "cifar_resnet50_aux3": ("cbr(128,3)", "cbr(128,3)", "inception_e", "gap"),
    # Table 8: SE-WRN 16-8 on CIFAR100 (no run in the authors' code).
    "cifar_se_wrn_aux1": ("cbr(128,5,2)", "cbr(128,3)", "inception_e", "gap"),
    "cifar_se_wrn_aux2": ("cbr(128,5)", "cbr(128,3)", "gap", "dense(768)"),
    "cifar_se_wrn_aux3": ("cbr(128,3)", "cbr(128,3)", "inception_e", "gap"),
    # Table 9: WRN 28-10 and DenseNet-BC 190-40 on CIFAR100 (run_experiments.py:85-88, 121-124).
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
    # Table 10: ResNet50 on ImageNet, the authors' InceptionAux with pool 2, 1, 0
    # (pytorch/aux_nets.py:7-36, resnet_aux.py:73-75): 56x56 -> 27 -> 13 -> 6, 28 -> 13 -> 6,
    # 14 -> 6.
    "imagenet_resnet50_aux1": (
        "cbr(256,3,2,0)", "inception_c_smaller(0.5)", "inception_d_smaller(0.5)",
        "inception_e_smaller(1)", "inception_d_smaller(0.5)", "inception_e_smaller(2)", "gap",
    ),
    "imagenet_resnet50_aux2": (
        "inception_c_smaller(0.5)", "inception_d_smaller(0.5)", "inception_e_smaller(1)",
        "inception_d_smaller(0.5)", "inception_e_smaller(2)", "gap",
    ),
    "imagenet_resnet50_aux3": (
        "inception_c_smaller(0.5)", "inception_d_smaller(0.5)", "inception_e_smaller(2)", "gap",
    ),
}

# The authors' two kinds of head (docs/authors_settings.md, sections 5, 6, 9.7 and 9.9):
# - Keras (CIFAR, aux_nets_tf.py:25-58, 131, 152): convs with bias and he_normal init,
#   Keras's BatchNorm (0.99, 1e-3), glorot_uniform dense layers. The default.
# - PyTorch (ImageNet, aux_nets.py:150-160): bias-free convs, BatchNorm epsilon 1e-3 with the
#   run's momentum override 1 - 0.9^(100/32) (train.py:57-61: Keras momentum 0.9^(100/32)),
#   PyTorch's default layer init (the heads are made after torchvision's init loop).
HEAD_STYLES = {
    "authors_keras": blocks.LayerStyle(
        conv_bias=True, conv_initializer="he_normal", dense_initializer="glorot_uniform",
        bn_momentum=0.99, bn_epsilon=1e-3,
    ),
    "authors_pytorch": blocks.LayerStyle(
        conv_bias=False, conv_initializer="torch_default", dense_initializer="torch_default",
        bn_momentum=0.9 ** (100 / 32), bn_epsilon=1e-3,
    ),
}
DEFAULT_HEAD_STYLE = "authors_keras"


def resolve_style(style):
    """Turns a branch's ``head_style`` (None, a ``HEAD_STYLES`` name, a ``LayerStyle`` or a
    dict of its fields) into a ``blocks.LayerStyle``."""
    if style is None:
        style = DEFAULT_HEAD_STYLE
    if isinstance(style, blocks.LayerStyle):
        return style
    if isinstance(style, str):
        if style not in HEAD_STYLES:
            raise ValueError(
                f"head_style={style!r} is not a head style; valid: {', '.join(HEAD_STYLES)} "
                "(or a dict of blocks.LayerStyle fields).")
        return HEAD_STYLES[style]
    if isinstance(style, dict):
        fields = {f.name for f in dataclasses.fields(blocks.LayerStyle)}
        unknown = sorted(set(style) - fields)
        if unknown:
            raise ValueError(f"head_style has no field {unknown[0]!r}; fields: {sorted(fields)}.")
        return blocks.LayerStyle(**style)
    raise ValueError(
        f"head_style must be None, a name of {list(HEAD_STYLES)}, a blocks.LayerStyle or a "
        f"dict; received {type(style).__name__}.")


@dataclasses.dataclass(frozen=True)
class _BlockKind:
    """One word of the layout vocabulary: its argument count and whether it keeps 4-D maps."""

    min_args: int
    max_args: int
    spatial: bool
    usage: str


VOCABULARY = {
    "cbr": _BlockKind(2, 4, True, "cbr(filters,kernel[,stride[,padding]])"),
    "inception_e": _BlockKind(0, 1, True, "inception_e[(factor)]"),
    "inception_c_smaller": _BlockKind(1, 1, True, "inception_c_smaller(factor)"),
    "inception_d_smaller": _BlockKind(1, 1, True, "inception_d_smaller(factor)"),
    "inception_e_smaller": _BlockKind(1, 1, True, "inception_e_smaller(factor)"),
    "se": _BlockKind(0, 1, True, "se[(reduction)]"),
    "gap": _BlockKind(0, 0, False, "gap"),
    "dense": _BlockKind(1, 1, False, "dense(units)"),
}

_BLOCK_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(?:\(([^()]*)\))?\s*$")


def _parse_number(text, *, block, may_be_zero):
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"head block {block!r} has a non-numeric argument {text!r}; "
            "arguments are numbers, e.g. 'cbr(128,3,2)'."
        ) from None
    if value < 0 or (value == 0 and not may_be_zero):
        limit = ">= 0" if may_be_zero else "> 0"
        raise ValueError(f"head block {block!r} has argument {text!r}; it must be {limit}.")
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
    texts = [a.strip() for a in (arg_text or "").split(",") if a.strip()]
    # Only cbr's padding (its 4th argument) may be 0.
    args = tuple(_parse_number(a, block=block, may_be_zero=(kind == "cbr" and i == 3))
                 for i, a in enumerate(texts))
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
    return max(1, int(width * factor))


def _cbr(x, filters, kernel_size, *, style, strides=1, padding=None, name):
    """conv-BN-ReLU with "same" padding, or ``padding`` zero pixels on every side."""
    if padding is None:
        return blocks.conv_bn_relu(x, filters, kernel_size, style=style, strides=strides,
                                   name=name)
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return blocks.conv_bn_relu(x, filters, kernel_size, style=style, strides=strides,
                               padding="valid", name=name)


def _average_pool_3x3(x, *, count_padding, name):
    """3x3/1 average pooling that keeps the size. TF's "same" pooling leaves the padded
    cells out of the mean (the authors' Keras heads); PyTorch's ``avg_pool2d(padding=1)``
    counts them as zeros (their PyTorch heads)."""
    if not count_padding:
        return layers.AveragePooling2D(3, strides=1, padding="same", name=name)(x)
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, strides=1, padding="valid", name=name)(x)


def _inception_e_block(x, *, factor, style, c_kernel, pool_kernel, pool_counts_padding,
                       name):
    """The authors' Inception E blocks, stride 1, size kept. Branches: (a) 1x1 128; (b) 1x1
    128 then parallel 1x3 and 3x1 (128 each); (c) 1x1 160, ``c_kernel`` 128, then parallel
    1x3 and 3x1 (128 each); (d) 3x3 average pool then a ``pool_kernel`` conv 108. Output:
    748 channels times ``factor``."""
    w = lambda width: _scaled(width, factor)  # noqa: E731

    def split_1x3_3x1(t, branch):
        return layers.Concatenate(name=f"{name}_{branch}_cat")([
            blocks.conv_bn_relu(t, w(128), (1, 3), style=style, name=f"{name}_{branch}a"),
            blocks.conv_bn_relu(t, w(128), (3, 1), style=style, name=f"{name}_{branch}b"),
        ])

    a = blocks.conv_bn_relu(x, w(128), 1, style=style, name=f"{name}_a")
    b = blocks.conv_bn_relu(x, w(128), 1, style=style, name=f"{name}_b1")
    b = split_1x3_3x1(b, "b2")
    c = blocks.conv_bn_relu(x, w(160), 1, style=style, name=f"{name}_c1")
    c = blocks.conv_bn_relu(c, w(128), c_kernel, style=style, name=f"{name}_c2")
    c = split_1x3_3x1(c, "c3")
    d = _average_pool_3x3(x, count_padding=pool_counts_padding, name=f"{name}_d_pool")
    d = blocks.conv_bn_relu(d, w(108), pool_kernel, style=style, name=f"{name}_d")
    return layers.Concatenate(name=f"{name}_out")([a, b, c, d])


def inception_e(x, *, factor=1, style, name):
    """The authors' CIFAR Inception block (``inception_block_high_level``, docs/authors_settings.md,
    section 9.8; supplement figure 1c): branch (c)'s second conv is 1x1, the pool branch's conv 3x1,
    and the pool leaves padded cells out. 748 channels times ``factor``."""
    return _inception_e_block(x, factor=factor, style=style, c_kernel=1, pool_kernel=(3, 1),
                              pool_counts_padding=False, name=name)


def inception_e_smaller(x, *, factor, style, name):
    """The authors' ImageNet ``InceptionE_smaller`` (docs/authors_settings.md, section 9.9,
    aux_nets.py:108-147): branch (c)'s second conv is 3x3, the pool branch's conv 1x1, and the pool
    counts padded cells. 748 channels times ``factor``."""
    return _inception_e_block(x, factor=factor, style=style, c_kernel=3, pool_kernel=1,
                              pool_counts_padding=True, name=name)


def inception_c_smaller(x, *, factor, style, name):
    """The authors' ``InceptionC_smaller`` (docs/authors_settings.md, section 9.9,
    aux_nets.py:39-75), size kept.

    Branches (widths times ``factor``): 1x1 128; 1x1 160 -> 1x7 160 -> 7x1 128; 1x1 160 ->
    7x1 160 -> 1x7 160 -> 7x1 160 -> 1x7 128; 3x3 average pool (padding counted) -> 1x1 128.
    Output 512 x factor.
    """
    w = lambda width: _scaled(width, factor)  # noqa: E731
    a = blocks.conv_bn_relu(x, w(128), 1, style=style, name=f"{name}_a")
    b = x
    for i, (width, kernel) in enumerate(((160, 1), (160, (1, 7)), (128, (7, 1))), start=1):
        b = blocks.conv_bn_relu(b, w(width), kernel, style=style, name=f"{name}_b{i}")
    c = x
    for i, (width, kernel) in enumerate(
        ((160, 1), (160, (7, 1)), (160, (1, 7)), (160, (7, 1)), (128, (1, 7))), start=1
    ):
        c = blocks.conv_bn_relu(c, w(width), kernel, style=style, name=f"{name}_c{i}")
    d = _average_pool_3x3(x, count_padding=True, name=f"{name}_d_pool")
    d = blocks.conv_bn_relu(d, w(128), 1, style=style, name=f"{name}_d")
    return layers.Concatenate(name=f"{name}_out")([a, b, c, d])


def inception_d_smaller(x, *, factor, style, name):
    """The authors' ``InceptionD_smaller`` (docs/authors_settings.md, section 9.9,
    aux_nets.py:78-105): a stride-2 reduction, "valid" like PyTorch's (13x13 from 27x27, 6x6 from
    13x13).

    Branches (widths times ``factor``): 1x1 192 -> 3x3/2 216; 1x1 192 -> 1x7 192 -> 7x1 192
    -> 3x3/2 168; 3x3/2 max pool -> 1x1 128 (torchvision's InceptionD has no conv there).
    Output 512 x factor.
    """
    w = lambda width: _scaled(width, factor)  # noqa: E731
    a = blocks.conv_bn_relu(x, w(192), 1, style=style, name=f"{name}_a1")
    a = blocks.conv_bn_relu(a, w(216), 3, strides=2, padding="valid", style=style,
                            name=f"{name}_a2")
    b = blocks.conv_bn_relu(x, w(192), 1, style=style, name=f"{name}_b1")
    b = blocks.conv_bn_relu(b, w(192), (1, 7), style=style, name=f"{name}_b2")
    b = blocks.conv_bn_relu(b, w(192), (7, 1), style=style, name=f"{name}_b3")
    b = blocks.conv_bn_relu(b, w(168), 3, strides=2, padding="valid", style=style,
                            name=f"{name}_b4")
    c = layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
    c = blocks.conv_bn_relu(c, w(128), 1, style=style, name=f"{name}_c")
    return layers.Concatenate(name=f"{name}_out")([a, b, c])


def build_head(x, *, layout, num_groups, style=None, name):
    """Applies an auxiliary head to a tapped feature map.

    Args:
        x: tensor. The tapped NHWC feature map.
        layout: sequence of str. Blocks in the head vocabulary (see ``resolve_layout``).
        num_groups: int. Groups of the branch's grouping: the softmax width.
        style: None, str, dict or blocks.LayerStyle. The head's layer settings (see
            ``resolve_style``; default ``DEFAULT_HEAD_STYLE``).
        name: str. Prefix of every layer name; the softmax layer is named ``name`` itself, so
            a model's output and its layer share one name.

    Returns:
        tensor. Group probabilities, shape ``(batch, num_groups)``.
    """
    style = resolve_style(style)
    for index, block in enumerate(resolve_layout(layout), start=1):
        kind, args = parse_block(block)
        block_name = f"{name}_{index}_{kind}"
        if kind == "cbr":
            filters, kernel_size, *rest = args
            x = _cbr(x, filters, kernel_size, style=style, strides=rest[0] if rest else 1,
                     padding=rest[1] if len(rest) > 1 else None, name=block_name)
        elif kind == "inception_e":
            x = inception_e(x, factor=args[0] if args else 1, style=style, name=block_name)
        elif kind in _INCEPTION_SMALLER:
            x = _INCEPTION_SMALLER[kind](x, factor=args[0], style=style, name=block_name)
        elif kind == "se":
            x = blocks.squeeze_excite(x, style=style, reduction=args[0] if args else 16,
                                      name=block_name)
        elif kind == "gap":
            x = layers.GlobalAveragePooling2D(name=block_name)(x)
        elif kind == "dense":
            x = blocks.dense(x, args[0], style=style, activation="relu", name=block_name)
    # float32 under a mixed-precision policy, like the base classifier.
    return blocks.dense(x, num_groups, style=style, activation="softmax", dtype="float32",
                        name=name)


_INCEPTION_SMALLER = {
    "inception_c_smaller": inception_c_smaller,
    "inception_d_smaller": inception_d_smaller,
    "inception_e_smaller": inception_e_smaller,
}
