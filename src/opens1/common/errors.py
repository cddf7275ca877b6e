"""Errors a user can act on, and the messages that help them: shared by every package.

A `UserError` is a mistake in the user's input (arguments, files, rows); `opens1 ...` shows it
as one line and exits 2 (`cli/util.py: run_main`), a library caller catches it like any
exception.
"""

from __future__ import annotations

import difflib
import importlib.util
from typing import Iterable


class UserError(Exception):
    """A mistake in the user's input (arguments, files, rows): shown as one line, no traceback."""



def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean x?)' for the closest names, else ''."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if not close:  # "ring_count" against "chem/ring_count": compare the part after the domain
        tails = {k.split("/", 1)[-1]: k for k in known}
        close = [tails[t] for t in difflib.get_close_matches(name.split("/", 1)[-1], list(tails), n=3, cutoff=0.6)]
    return f" (did you mean {' or '.join(close)}?)" if close else ""



def missing_extra(exc: ModuleNotFoundError, feature: str, extra: str = "api") -> UserError:
    """The one-line message for an optional dependency that is not installed."""
    return UserError(f"{feature} needs the {exc.name!r} package: pip install \"opens1[{extra}]\"")



def require(module: str, feature: str, extra: str = "api") -> None:
    """Fail early, in one line naming the extra to install, when an optional module is missing."""
    if importlib.util.find_spec(module) is None:
        raise missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), feature, extra)
