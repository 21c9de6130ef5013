r"""Trains a baseline or an SSAL model: ``python -m ssal_keras.train --flagfile=models/X.flags``.

    python -m ssal_keras.train --flagfile=models/fashion_mnist_ssal.flags \
        --model_dir=runs/fashion_mnist_ssal [--flag=value ...]

The flags are the fields of ``ssal_keras.training.RunConfig``; this module turns them into one
and calls ``ssal_keras.training.train`` (Python users call it directly). A value given on the
command line wins over the flagfile's wherever it stands; a list or repeated flag given on the
command line (``--head``, ``--groupings``, ``--taps``, ``--loss_weights``) replaces the
recipe's; a ``--flagfile`` named inside a flagfile, and the files a recipe ships with
(``--groupings``, ``--reference``), are read relative to the file naming them.

``--model_dir`` is the run's folder (``ssal_keras.runs``); the same command again resumes the
run from its last checkpoint. A run with ``--groupings`` empty is a baseline;
``--groupings=FILE,FILE`` or ``auto`` (with ``--grouping_source=BASELINE_DIR`` and
``--num_groups``) trains an SSAL model.
"""

import dataclasses
import sys

from absl import flags

from ssal_keras import cli, runs
from ssal_keras.training import config as config_lib
from ssal_keras.training import dry_run, flagfile, train

# Options of this command that are not settings of the run (config_lib.CLI_OPTIONS).
_MODEL_DIR = flags.DEFINE_string("model_dir", None,
                                 "The run's folder (created; resumed if it exists).")
_REFERENCE = flags.DEFINE_string(
    "reference", None, "A JSON file of a measured reference figure to print beside the run's "
    "own at the end: {\"top1\", \"std\", \"seeds\", \"label\", \"explained_in\"} (the quick "
    "start's: docs/quick_start_reference.json, written by the fair test's report).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Resolve and check the settings, write them to the run folder, "
                             "print them and exit, without reading data or training.")


def _define_setting_flags():
    """One flag per ``RunConfig`` field, of its type, with its help and valid values."""
    for field in dataclasses.fields(config_lib.RunConfig):
        kind, item, _ = flagfile.type_parts(field)
        name, default, help_text = field.name, field.default, field.metadata["help"]
        choices = field.metadata["choices"]
        if field.metadata["repeated"]:
            flags.DEFINE_multi_string(name, list(default), help_text)
        elif item is not None:
            flags.DEFINE_list(name, [str(v) for v in default], help_text)
        elif choices:
            flags.DEFINE_enum(name, default, list(choices), help_text)
        else:
            define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                      float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
            define(name, default, help_text)


_define_setting_flags()


def switch_spellings(arg):
    """``arg`` with a former bool flag (``--mixed_precision``, ``--nojit_compile``,
    ``--jit_compile=false``) or a choice's former spelling (``--mixed_precision=off``)
    spelled as today's choice, which absl's enum flag takes."""
    name, equals, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
    switch = name[2:] if (name.startswith("no") and not equals
                          and name not in config_lib.FIELDS) else name
    field = config_lib.FIELDS.get(switch)
    if field is None or not (field.metadata["boolean_aliases"]
                             or field.metadata["old_spellings"]):
        return arg
    given = value if equals else ("false" if switch != name else "true")
    return f"--{switch}={flagfile.unaliased(field, given)}"


def split_flagfiles(args):
    """``(flagfiles, other args)`` of a command line: ``--flagfile`` is read here, by the
    rules of ``ssal_keras.training.flagfile``, not by absl."""
    files, rest, args = [], [], [switch_spellings(arg) for arg in args]
    while args:
        arg = args.pop(0)
        if arg.startswith("--flagfile="):
            files.append(arg.partition("=")[2])
        elif arg == "--flagfile":
            if not args:
                cli.fail("train", "--flagfile needs a file (--flagfile=models/X.flags).")
            files.append(args.pop(0))
        else:
            rest.append(arg)
    return files, rest


def command_line_settings():
    """The settings given on the command line, typed (``RunConfig`` keyword arguments)."""
    settings = {}
    for name, field in config_lib.FIELDS.items():
        holder = flags.FLAGS[name]
        if not holder.present:
            continue
        value = holder.value
        if isinstance(value, list):
            value = flagfile.parse_value(
                field, value if field.metadata["repeated"] else ",".join(value))
        settings[name] = value
    return settings


def _option(holder, file_values):
    """A CLI option from the command line, else from the flagfiles."""
    if holder.present or holder.name not in file_values:
        return holder.value
    raw = file_values[holder.name]
    if isinstance(holder.value, bool):
        return raw is None or raw.strip().lower() in ("true", "1")
    return raw


def read_reference(path):
    """The reference figure of ``--reference`` (checked before any training), or None."""
    if not path:
        return None
    try:
        reference = runs.read_json(path)
    except FileNotFoundError:
        raise cli.UsageError(f"--reference={path}: no such file; give the JSON file of a "
                             "measured reference, e.g. docs/quick_start_reference.json.") from None
    except ValueError as error:
        raise cli.UsageError(f"--reference={path} is not valid JSON ({error}).") from None
    keys = {"top1", "std", "seeds", "label", "explained_in"}
    top1 = reference.get("top1") if isinstance(reference, dict) else None
    if not isinstance(reference, dict) or not keys <= set(reference) or not (
            isinstance(top1, float) and 0 <= top1 <= 1):
        raise cli.UsageError(f"--reference={path} must be a JSON object with {sorted(keys)} and "
                             "a top-1 between 0 and 1.")
    return reference


def report_lines(final, reference):
    """The run's closing lines: the reference (if any), its own figures, where they are
    explained."""
    own = f"this run: base output top-1 {final['base_top1']:.4f}"
    if final.get("joint_top1") is not None:
        own = (f"this run: +TR (base output) top-1 {final['base_top1']:.4f}, "
               f"+JP (joint output) top-1 {final['joint_top1']:.4f}")
    if reference is None:
        return [own]
    spread = f" ± {reference['std']:.4f}" if reference.get("std") else ""
    return [f"reference: test top-1 {reference['top1']:.4f}{spread}, {reference['label']} "
            f"({reference['seeds']} seed(s))", own, f"explained in: {reference['explained_in']}"]


def run(flagfiles):
    """Turns the command line and its flagfiles into a ``RunConfig`` and trains it."""
    file_values = flagfile.read(flagfiles, repeated=config_lib.REPEATED) if flagfiles else {}
    model_dir = _option(_MODEL_DIR, file_values)
    if not model_dir:
        raise cli.UsageError("--model_dir is required: the run's folder.")
    # The flagfiles' settings (read once, above), then the command line's, which win: what
    # RunConfig.from_flagfile(flagfiles, **settings) does.
    config = config_lib.RunConfig(**{
        **flagfile.parse_settings(file_values, config_lib.FIELDS, source=", ".join(flagfiles),
                                   skipped=config_lib.CLI_OPTIONS),
        **command_line_settings()})
    reference = read_reference(_option(_REFERENCE, file_values))
    if _option(_DRY_RUN, file_values):
        dry_run(config, model_dir)
        return
    metrics = train(config, model_dir)
    for line in report_lines(metrics, reference):
        print(line, flush=True)


def main():
    """The ``ssal-train`` console command; the same as ``python -m ssal_keras.train``."""
    flagfiles, sys.argv[1:] = split_flagfiles(sys.argv[1:])
    cli.run(lambda: run(flagfiles), prog="train", module=__name__)


if __name__ == "__main__":
    main()
