"""Atomic file writes and single writers.

Every write goes to a uniquely named hidden temporary file beside the target (``tempfile.mkstemp`` in the target's
folder), is flushed to disk (fsync), then renamed over the target (``os.replace``). A reader never sees a
half-written file, an interrupted write leaves the previous version in place, and two processes writing one file
never share a temporary file (the last rename wins, each version complete)::

    write_text(run_dir / "report.md", text)
    save_torch(state, run_dir / "last.pt")
    save_figure(fig, figures / "roc.png")                 # closes the figure
    with atomic_path(out / "truth.h5") as tmp:            # anything else that writes a path
        h5py.File(tmp, "w") ...

A user-facing output that one run builds over a while (``predict``'s CSV) has a single writer: hold
:func:`exclusive_writer` for the whole run, and a second run to the same file fails at once with
:class:`WriterBusyError` ("another process is writing X") instead of both reporting success. The lock is an advisory
``fcntl.flock`` on a hidden ``.<name>.lock`` file beside the target, removed on release; where ``fcntl`` is missing
(not Linux/macOS) runs are not serialised.

This module imports neither torch nor matplotlib at import time (the command line's ``--help`` stays light).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not a POSIX system: no advisory locks
    fcntl = None

__all__ = [
    "atomic_path",
    "exclusive_writer",
    "WriterBusyError",
    "write_text",
    "write_bytes",
    "save_torch",
    "save_figure",
]


class WriterBusyError(OSError):
    """Another process holds the single-writer lock of an output file."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes it owner-only)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = True, durable: bool = True) -> Iterator[Path]:
    """Yield a new, uniquely named temporary path beside ``path``; on success fsync it and rename it to ``path``,
    on error delete it.

    The parent folder is created if needed; ``path`` naming a directory is an error (``IsADirectoryError``) before
    anything is written. By default the temporary name keeps the suffix (``.x.tmp<random>.png``), so writers that
    pick the format from the suffix (matplotlib, ``np.save`` on a path) still do the right thing.
    ``keep_suffix=False`` gives ``.x.png.tmp<random>`` instead: use it for files in a folder that readers scan by
    suffix (``*.npy`` images), so a temporary file left by a killed process is never taken for data.
    ``durable=False`` skips the fsync (many small files that can be made again, e.g. simulated images): the rename
    stays atomic for readers, but after a power loss the file may be empty."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; expected a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = (f".{path.stem}.tmp", path.suffix) if keep_suffix else (f".{path.name}.tmp", "")
    fd, name = tempfile.mkstemp(suffix=suffix, prefix=prefix, dir=path.parent)
    os.close(fd)  # the writers below open the path themselves
    tmp = Path(name)
    tmp.chmod(_FILE_MODE)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def exclusive_writer(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the single-writer lock of the output file ``path`` (yielded) for the ``with`` block.

    Raises :class:`WriterBusyError` at once if another process (or another ``with`` block) holds it: the second
    writer is refused, never queued, so it can say so before doing any work. The lock file
    ``.<name>.lock`` beside ``path`` is removed on release."""
    path = Path(path)
    if fcntl is None:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WriterBusyError(
                f"another process is writing {path} (lock {lock}); wait for it or choose another file"
            ) from None
        try:  # the holder before us may have removed the file we opened: lock the current one instead
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield path
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


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
