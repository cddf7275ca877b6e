"""Progress bars on stderr, silent in logs and CI."""

from __future__ import annotations

import sys


def progress(total: int | None = None, desc: str = "", *, quiet: bool = False, unit: str = "it"):
    """A tqdm bar on stderr; silent when stderr is not a terminal (logs, CI) or with --quiet."""
    from tqdm.auto import tqdm  # optional: tqdm (imported when a bar is drawn)

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet or not sys.stderr.isatty(), leave=False,
                dynamic_ncols=True)
