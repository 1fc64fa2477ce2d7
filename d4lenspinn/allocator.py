"""Keep freed memory in the process: on Linux with glibc, large CPU tensors are otherwise handed back to the kernel
when freed and come back as fresh pages, which the kernel zeroes one page fault at a time (``d4lenspinn detect``
spent nearly as much system time on that as on its arithmetic; docs/physics.md, "A detector that needs no
training").

    keep_freed_memory()   # once, before the work; the command line does it for every command

The same as starting Python with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647``; either
variable set by the user wins, and elsewhere (macOS, Windows, musl) nothing changes. The process keeps up to its
peak memory mapped instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # bytes: glibc's largest; a larger block is always mapped anew
TRIM_THRESHOLD = 2**31 - 1  # bytes free at the top of the heap kept before any goes back (the largest C int)


def keep_freed_memory() -> bool:
    """Ask glibc to serve blocks up to :data:`MMAP_THRESHOLD` from its heap and to keep up to
    :data:`TRIM_THRESHOLD` free at its top (``mallopt``); True where that was done, False where the user set either
    variable or the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
