"""Checks of the command line's arguments, run before any work starts: argparse ``type=`` functions (a bad value
is a one-line usage error naming the argument, exit 2), the config values ``train`` and ``demo`` check before any
data is made, and which exceptions are the user's (one line) rather than bugs (traceback).

Light: imports nothing heavy at import time (``d4lenspinn --help`` stays fast)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "whole_number",
    "positive_number",
    "existing_file",
    "existing_path",
    "output_file",
    "output_dir",
    "override",
    "check_train_config",
    "is_user_error",
]


def whole_number(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def positive_number(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def existing_file(text: str) -> str:
    """argparse type: a file that exists."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; expected a file")
    return text


def existing_path(text: str) -> str:
    """argparse type: a file or folder that exists."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"no such file or directory: {text}")
    return text


def output_file(text: str) -> str:
    """argparse type: a file to write (not an existing directory)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; expected the name of a file to write")
    return text


def output_dir(text: str) -> str:
    """argparse type: a folder to write into (not an existing file)."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a directory")
    return text


def override(text: str) -> str:
    """argparse type: a ``KEY=VALUE`` config override."""
    if "=" not in text or not text.split("=", 1)[0].strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. optim.lr=3e-4), got {text!r}")
    return text


def check_train_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` naming the config key for paths and model options no run can use (before any data is made
    or read)."""
    from .models.registry import check_model_kwargs

    data = config.data  # counts and rates were checked when the config was built (config.py)
    if data.source == "simulate" and Path(data.root).exists() and not Path(data.root).is_dir():
        raise ValueError(f"data.root {data.root} is a file; expected the folder the simulated data goes to")
    if Path(config.out).exists() and not Path(config.out).is_dir():
        raise ValueError(f"out {config.out} is a file; expected the run directory")
    check_model_kwargs(config.model.name, config.model.kwargs)


def is_user_error(error: Exception) -> bool:
    """Whether ``error`` reports bad input (a config/data/argument ``ValueError``, a file ``OSError``, or one of the
    package's own ``RuntimeError`` classes such as ``DownloadError``) rather than a bug (anything else: shown with
    its traceback)."""
    if isinstance(error, ValueError | OSError):
        return True
    return isinstance(error, RuntimeError) and type(error).__module__.split(".")[0] in ("d4lenspinn", "interp")
