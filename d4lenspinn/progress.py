"""Progress bars that keep logs readable: a live tqdm bar on a terminal, a line every minute otherwise.

    for batch in progress_bar(loader, desc="epoch 1/6"):
        ...

On a terminal (stderr is a TTY) this is ``tqdm.auto.tqdm``; in a log file or CI it refreshes at most once per
``log_interval`` seconds, so a long job writes a few dozen lines instead of thousands of carriage returns.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "on_terminal"]

LOG_INTERVAL_S = 60.0


def on_terminal() -> bool:
    """Whether stderr (where tqdm writes) is an interactive terminal."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress_bar(iterable: Any = None, *, disable: bool = False, log_interval: float = LOG_INTERVAL_S, **kwargs):
    """``tqdm(iterable, **kwargs)``; off a terminal it refreshes every ``log_interval`` seconds at most."""
    if not on_terminal():
        kwargs.update(mininterval=log_interval, maxinterval=max(log_interval, 10.0 * log_interval))
    return tqdm(iterable, disable=disable, **kwargs)
