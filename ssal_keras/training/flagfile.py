"""Reads recipe flagfiles (``models/*.flags``) as users expect them to read, and types their
values (and the command line's) by the ``RunConfig`` fields they set.

A flagfile holds one ``--name=value`` per line (``--x`` / ``--nox`` for on/off settings,
``#`` comments). Three rules differ from absl's own flagfile handling
(docs/stack_notes.md, section 7):

- a ``--flagfile=OTHER`` line reads ``OTHER`` relative to the file that names it, and so do
  the other files a recipe ships with (``--groupings`` files, ``--reference``), so a recipe
  works from any working directory;
- the value read last wins; the caller's own values (the command line) win over all of them;
- a repeated setting (``--head``) takes all the lines of the one file that names it last:
  a recipe that includes another and names its own heads replaces the included file's heads
  rather than adding to them.
"""

import os
import types
import typing

#: Settings whose values are files that ship with a recipe: read relative to the flagfile.
FILE_SETTINGS = ("groupings", "reference")


class FlagfileError(ValueError):
    """A flagfile that cannot be read or holds a line that is not a setting."""


def _resolve(path, relative_to):
    if not path or os.path.isabs(path) or path == "auto":
        return path
    return os.path.normpath(os.path.join(os.path.dirname(relative_to), path))


def _lines(path, chain, relative_paths):
    """``(name, value, file)`` of every setting of ``path`` and the flagfiles it names, in
    reading order; ``value`` is None for a bare ``--name``."""
    if path in chain:
        raise FlagfileError(f"flagfile {path} names itself through {' -> '.join(chain)}; "
                            "remove the loop.")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        where = f" (named in {chain[-1]})" if chain else ""
        raise FlagfileError(f"cannot read flagfile {path}{where}: {error.strerror}.") from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("--"):
            raise FlagfileError(f"{path}:{number}: {line!r} is not a setting; write "
                                "--name=value (or # for a comment).")
        name, equals, value = line[2:].partition("=")
        value = value if equals else None
        if name == "flagfile":
            yield from _lines(_resolve(value, path) if relative_paths else value,
                              chain + (path,), relative_paths)
            continue
        if name in FILE_SETTINGS and value and relative_paths:
            value = ",".join(_resolve(v.strip(), path) for v in value.split(","))
        yield name, value, path


def read(paths, *, repeated=(), relative_paths=True):
    """The settings of one or more flagfiles, merged by the rules of this module.

    Args:
        paths: str or sequence of str. Flagfiles, read in order.
        repeated: collection of str. Names of the settings that may be given several times
            (a list of all the values of the last file naming them).
        relative_paths: bool. Read ``--flagfile`` and the ``FILE_SETTINGS`` relative to the
            file naming them (False for a run folder's record, written relative to the
            working directory).

    Returns:
        dict. ``name -> raw value`` (str, or None for a bare ``--name``); for ``repeated``
        names, ``name -> list of raw values``.

    Raises:
        FlagfileError: naming the file (and line) that cannot be read.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    values, owner = {}, {}
    for path in paths:
        for name, value, source in _lines(os.fspath(path), (), relative_paths):
            if name not in repeated:
                values[name] = value
            elif owner.get(name) == source:
                values[name].append(value)
            else:
                owner[name], values[name] = source, [value]
    return values


# === Typing the values =====================================================================
def type_parts(field):
    """``(base type, item type or None, optional)`` of a field's annotation."""
    kind, optional = field.type, False
    if isinstance(kind, types.UnionType):
        kind, optional = [a for a in typing.get_args(kind) if a is not type(None)][0], True
    if typing.get_origin(kind) is tuple:
        return tuple, typing.get_args(kind)[0], optional
    return kind, None, optional


def unaliased(field, value):
    """A former bool flag's value as its choice (``boolean_aliases``), a choice's former
    spelling as today's (``old_spellings``); others unchanged."""
    if isinstance(value, str) and value in field.metadata["old_spellings"]:
        return field.metadata["old_spellings"][value]
    aliases = field.metadata["boolean_aliases"]
    if aliases and isinstance(value, (bool, str)):
        spelled = {True: True, False: False, "true": True, "false": False, "1": True,
                   "0": False}.get(value.strip().lower() if isinstance(value, str) else value)
        return value if spelled is None else aliases[0 if spelled else 1]
    return value


def parse_value(field, raw):
    """A setting's typed value from its text (a flagfile's or the command line's): ``field``
    is its ``RunConfig`` field; ``raw`` a str, None for a bare ``--name``, or a list of str for
    a repeated setting."""
    name = field.name
    kind, item, optional = type_parts(field)
    if field.metadata["repeated"]:  # an empty line (--head=) names no value: it clears the list
        return tuple(value for value in raw if value)
    if raw is None and (kind is bool or field.metadata["boolean_aliases"]):
        return unaliased(field, True)
    if raw is None or (optional and raw.strip() in ("", "None")):
        if optional or kind is str:
            return None if optional else ""
        raise ValueError(f"--{name} needs a value (--{name}=VALUE).")
    try:
        if item is not None:
            return tuple(item(v.strip()) for v in raw.split(",") if v.strip())
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        return unaliased(field, kind(raw))
    except ValueError:
        what = f"a list of {item.__name__}" if item else kind.__name__
        raise ValueError(f"--{name}={raw}: must be {what}.") from None


def _is_switch(field):
    """Whether ``--noNAME`` turns the field off: a bool, or a former bool flag."""
    return field is not None and (type_parts(field)[0] is bool
                                  or bool(field.metadata["boolean_aliases"]))


def parse_settings(values, fields, *, source, skipped=()):
    """Typed settings from ``read``'s raw values: ``fields`` maps each setting's name to its
    ``RunConfig`` field; ``--nox`` reads as ``x=false``; names in ``skipped`` (the CLI's own
    options) are left out; an unknown name is an error naming ``source``."""
    settings = {}
    for name, raw in values.items():
        if name in skipped:
            continue
        if name not in fields and name.startswith("no") and raw is None and _is_switch(
                fields.get(name[2:])):
            name, raw = name[2:], "false"
        if name not in fields:
            raise ValueError(f"{source} sets --{name}, which is not a setting of "
                             "python -m ssal_keras.train (see its --help).")
        settings[name] = parse_value(fields[name], raw)
    return settings
