r"""Builds a label grouping file for an SSAL branch (docs/method.md, section 2).

Reads a confusion matrix or a label distance matrix (.npy or .csv), runs the balanced
clustering of supplement section A and writes one group id per line in label order:

    python -m ssal_keras.group --matrix=confusion.npy --kind=confusion \
        --criterion=join_similar --num_groups=20 --output=groups_20.txt

Flags: --matrix (required), --kind=confusion|distance (required), --criterion (confusion
only, or with --tie_break=authors; join_similar, the paper's default, or split_similar),
--num_groups (required), --size_margin (1.1), --seed (0), --tie_break=random|authors
(random), --output (required). Runs in well under a second for 1000 labels. Every user
error prints one line, `group: error: ...`, and exits with code 2.

--tie_break=authors reproduces the authors' `create_grouping_v2` (keras/helper.py:42-188,
docs/authors_settings.md, section 10.2) exactly, ties included, with their random draws taken from
`numpy.random.RandomState(--seed)`: a confusion matrix is turned into their distances
(`confusion_distance(..., maximum="raw")`), and --criterion selects their split-similar rule
for groups at distance 0 (for --kind=distance too, where it defaults to join_similar).
"""

import os

import numpy as np
from absl import flags

from ssal_keras import cli
from ssal_keras import grouping as grouping_lib

_MATRIX = flags.DEFINE_string(
    "matrix", None, "Confusion or distance matrix over the labels, a .npy or .csv file (C x C)."
)
_KIND = flags.DEFINE_string(
    "kind", None, "What --matrix holds: 'confusion' (counts of a trained model) or 'distance'."
)
_CRITERION = flags.DEFINE_string(
    "criterion",
    "join_similar",
    "For --kind=confusion: 'join_similar' (confused labels share a group) or "
    "'split_similar' (confused labels go to different groups).",
)
_NUM_GROUPS = flags.DEFINE_integer("num_groups", None, "Number of groups k (1 <= k <= labels).")
_SIZE_MARGIN = flags.DEFINE_float(
    "size_margin", 1.1, "A group is full at size_margin * labels / num_groups labels (>= 1)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for breaking ties (same seed, same grouping).")
_TIE_BREAK = flags.DEFINE_string(
    "tie_break",
    "random",
    "How ties are broken, one of: 'random' (ties within 1e-12 relative drawn from "
    "numpy.random.default_rng(--seed)) or 'authors' (exactly the authors' create_grouping_v2, "
    "draws from numpy.random.RandomState(--seed); with --kind=confusion also their "
    "distance preparation).",
)
_OUTPUT = flags.DEFINE_string("output", None, "Text file to write, one group id per line.")

_KINDS = ("confusion", "distance")


def _load_matrix(path):
    """Reads a .npy or .csv matrix; errors become `cli.UsageError`."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in (".npy", ".csv"):
        raise cli.UsageError(f"--matrix must be a .npy or .csv file; received --matrix={path}.")
    if not os.path.isfile(path):
        raise cli.UsageError(f"--matrix={path} does not exist or is not a file.")
    try:
        if extension == ".npy":
            return np.load(path, allow_pickle=False)
        return np.loadtxt(path, delimiter=",", ndmin=2)
    except (OSError, ValueError, EOFError) as error:
        raise cli.UsageError(f"cannot read --matrix={path}: {error}") from None


def _run():
    """Checks the flags, builds the grouping, writes it and reports the group sizes."""
    for flag, name in ((_MATRIX, "matrix"), (_KIND, "kind"), (_NUM_GROUPS, "num_groups"),
                       (_OUTPUT, "output")):
        if flag.value is None:
            raise cli.UsageError(f"missing required flag --{name} (see --helpshort).")
    if _KIND.value not in _KINDS:
        raise cli.UsageError(
            f"--kind must be one of {', '.join(_KINDS)}; received --kind={_KIND.value}."
        )
    if _TIE_BREAK.value not in grouping_lib.TIE_BREAKS:
        raise cli.UsageError(
            f"--tie_break must be one of {', '.join(grouping_lib.TIE_BREAKS)}; received "
            f"--tie_break={_TIE_BREAK.value}."
        )
    authors = _TIE_BREAK.value == "authors"
    if _KIND.value == "distance" and flags.FLAGS["criterion"].present and not authors:
        raise cli.UsageError(
            "--criterion applies only to --kind=confusion or --tie_break=authors; a distance "
            "matrix is used as it is."
        )

    matrix = _load_matrix(_MATRIX.value)
    group = (grouping_lib.grouping_from_confusion if _KIND.value == "confusion"
             else grouping_lib.balanced_grouping)
    grouping = group(
        matrix,
        _NUM_GROUPS.value,
        size_margin=_SIZE_MARGIN.value,
        seed=_SEED.value,
        tie_break=_TIE_BREAK.value,
        criterion=_CRITERION.value,
    )
    try:
        grouping_lib.save_grouping(_OUTPUT.value, grouping)
    except OSError as error:
        raise cli.UsageError(f"cannot write --output={_OUTPUT.value}: {error}") from None
    sizes = grouping_lib.group_sizes(grouping)
    print(
        f"wrote {grouping.size} labels in {sizes.size} groups to {_OUTPUT.value}; "
        f"sizes: {' '.join(str(s) for s in sizes)}"
    )


def main():
    """The ``ssal-group`` console command; the same as ``python -m ssal_keras.group``."""
    cli.run(_run, prog="group", module=__name__)


if __name__ == "__main__":
    main()
