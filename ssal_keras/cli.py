"""Plumbing shared by the command-line entry points: one-line errors, never a traceback.

Each entry module defines its own absl flags (never imported from the package, so flags are
defined once: docs/stack_notes.md, section 7) and hands its body to ``run``.
"""

import sys

from absl import app, flags

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or its input files: reported as one line."""


def fail(prog, message, exit_code=EXIT_USAGE):
    """Prints ``{prog}: error: {message}`` as a single line on stderr and exits."""
    line = " ".join(str(message).split())
    print(f"{prog}: error: {line}", file=sys.stderr)
    sys.exit(exit_code)


def _adopt_help(module):
    """Started as a console command (``ssal-train``), ``__main__`` is the generated script:
    absl's ``--help`` then shows the entry module's docstring and flags, as it does for
    ``python -m``."""
    if module in (None, "__main__"):
        return
    sys.modules["__main__"].__doc__ = sys.modules[module].__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(body, *, prog, user_errors=(UsageError, ValueError, FileNotFoundError), commands=None,
        module=None):
    """Parses the flags and runs ``body()``; flag and user errors become one-line failures.

    Args:
        body: callable. The program, taking no arguments (it reads its flags), or with
            ``commands`` the name of the command (``prog COMMAND --flags``).
        prog: str. The program's name in error lines, e.g. ``"group"``.
        user_errors: tuple of exception types. Errors that are the user's to fix.
        commands: sequence of str or None. The program's sub-commands, one of which must
            be the single positional argument.
        module: str or None. The entry module's ``__name__`` (its ``--help`` when started as
            a console command).
    """
    _adopt_help(module)

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:  # absl's own message spans several lines
            fail(prog, error)

    def main(argv):
        args = argv[1:]
        if commands:
            if not args or args[0] not in commands:
                given = f"unknown command {args[0]!r}" if args else "no command given"
                fail(prog, f"{given}; use one of {', '.join(commands)} "
                           f"(python -m ssal_keras.{prog} COMMAND --flags).")
            command, args = args[0], args[1:]
        if args:
            fail(prog, f"unexpected arguments {' '.join(args)}; flags are --name=value.")
        try:
            body(command) if commands else body()
        except user_errors as error:
            fail(prog, error)

    app.run(main, flags_parser=parse)
