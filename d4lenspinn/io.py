"""Atomic file writes: write to a hidden temporary file beside the target, then rename it over the target.

A reader never sees a half-written file, and an interrupted write leaves the previous version in place::

    write_text(run_dir / "report.md", text)
    save_torch(state, run_dir / "last.pt")
    save_figure(fig, figures / "roc.png")                 # closes the figure
    with atomic_path(out / "truth.h5") as tmp:            # anything else that writes a path
        h5py.File(tmp, "w") ...

This module imports neither torch nor matplotlib at import time (the command line's ``--help`` stays light).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_text", "write_bytes", "save_torch", "save_figure"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The parent folder is created if needed. By default the temporary name keeps the suffix (``.x.tmp.png``), so
    writers that pick the format from the suffix (matplotlib, ``np.save`` on a path) still do the right thing.
    ``keep_suffix=False`` gives ``.x.png.tmp`` instead: use it for files in a folder that readers scan by suffix
    (``*.npy`` images), so a temporary file left by a killed process is never taken for data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}" if keep_suffix else f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; return the path."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure (tight bounding box) to ``path`` atomically, close it; return the path."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)
