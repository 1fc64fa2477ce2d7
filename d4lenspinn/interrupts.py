"""Ctrl-C during training: deferred inside a state change, so a run is only ever saved between whole steps.

    with deferred_interrupts():          # a SIGINT arriving in here is raised as KeyboardInterrupt at the end
        optimizer.step(); state.record_step(...)

A KeyboardInterrupt raised outside such a section leaves the run at its last completed step; the trainer saves it and
raises :class:`TrainingInterrupted`, whose message says where the run was saved and how to continue it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["TrainingInterrupted", "deferred_interrupts"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; the message says what was saved and how to resume."""


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT until the block ends, then raise one KeyboardInterrupt (several Ctrl-C count as one).

    Signal handlers can only be set in the main thread; elsewhere the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
