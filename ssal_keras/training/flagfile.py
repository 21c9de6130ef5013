"""Reads recipe flagfiles (``models/*.flags``) as users expect them to read.

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
