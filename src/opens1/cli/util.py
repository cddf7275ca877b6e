"""What every `opens1` subcommand shares: help that shows defaults, list arguments that take
commas or spaces, close-match suggestions, and one-line errors for user mistakes.

    p = argparse.ArgumentParser(prog="opens1 eval", formatter_class=HelpFormatter)
    add_list_argument(p, "--tasks", help="environment names or globs")   # --tasks a,b  or  --tasks a b
    ...
    sys.exit(run_main(main, argv, "opens1 eval"))   # UserError & co -> one line, exit 2

A user mistake (a missing file, a misspelt name, a malformed row) prints one line,
`PROG: error: MESSAGE`, and exits 2; `--debug` (anywhere on the command line) or
OPENS1_DEBUG=1 shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from typing import Callable, Iterable, Sequence

from opens1.common.errors import UserError, did_you_mean, missing_extra, require
from opens1.common.progress import progress

# the shared errors and progress bar, re-exported so a command imports its helpers from one place
__all__ = ["HelpFormatter", "UserError", "add_list_argument", "add_quiet_argument", "add_subcommands", "check_dir",
           "did_you_mean", "missing_extra", "progress", "require", "run_main", "split_list"]

DEBUG_ENV = "OPENS1_DEBUG"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends `(default: X)` to every option that has a
    default worth showing (not None, not a False flag)."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._get_help_string(action):  # no help text: the default alone
            action = copy.copy(action)
            action.help = self._get_help_string(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_ = action.help or ""
        default = action.default
        if ("%(default)" in help_ or "default" in help_.lower() or default is None or default is False
                or default == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._VersionAction))):
            return help_
        if isinstance(default, (list, tuple)):
            if not default:
                return help_
            default = " ".join(map(str, default))
        return f"{help_} (default: {str(default).replace('%', '%%')})".strip()


def add_subcommands(parser: argparse.ArgumentParser, **kw):
    """parser.add_subparsers whose subcommands also show their defaults in --help."""
    import functools

    return parser.add_subparsers(parser_class=functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter),
                                 **kw)


def split_list(values: str | Iterable[str] | None) -> list[str]:
    """'a,b c' or ['a,b', 'c'] -> ['a', 'b', 'c'] (order kept, duplicates and blanks dropped)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for item in v.replace(",", " ").split():
            if item not in out:
                out.append(item)
    return out


class _ListAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        items = [] if current is None or current is self.default else current  # the first use replaces the default
        setattr(namespace, self.dest, split_list([*items, *values]))


def add_list_argument(parser: argparse.ArgumentParser, *flags: str, default: Sequence[str] = (), **kw):
    """A list option that accepts `--x a,b`, `--x a b` and `--x a --x b` alike."""
    return parser.add_argument(*flags, nargs="+", action=_ListAction, default=list(default), **kw)


def check_dir(path: str | os.PathLike, what: str = "directory") -> str:
    """`path` if it is a directory, else a UserError naming it."""
    if not os.path.isdir(path):
        raise UserError(f"{what} {str(path)!r} does not exist" if not os.path.exists(path)
                        else f"{what} {str(path)!r} is not a directory")
    return str(path)


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def strip_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(argv without `--debug`, whether it was there or OPENS1_DEBUG is set)."""
    argv = list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    return argv, debug or debug_enabled()


# Exceptions that mean "the input is wrong", not "OpenS1 is broken".
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError)


def run_main(main: Callable[[list[str]], int | None], argv: Sequence[str] | None, prog: str) -> int:
    """Run a subcommand's `main(argv)`: user errors become one stderr line and exit 2."""
    argv, debug = strip_debug(sys.argv[1:] if argv is None else argv)
    if debug:
        before = os.environ.get(DEBUG_ENV)
        os.environ[DEBUG_ENV] = "1"  # subprocesses and nested run_main calls see it too
        try:
            return int(main(argv) or 0)
        finally:
            if before is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = before
    try:
        return int(main(argv) or 0)
    except USER_ERRORS as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"{prog}: error: {msg}  (--debug for a traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
