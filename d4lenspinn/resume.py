"""What continuing a run needs besides weights, optimiser and scheduler: every random generator's state, and the
epoch's batches from the step where it stopped.

    seed_everything(0)
    states = capture_rng()              # torch (CPU and CUDA), numpy and Python's random, as checkpointable values
    restore_rng(states)
    batches = EpochBatches(len(dataset), batch_size=32, generator=generator)
    batches.skip = 5                    # the next epoch's first 5 batches are not read

:class:`EpochBatches` draws exactly what ``DataLoader(shuffle=True, drop_last=True, generator=generator)`` draws, at
the same moments, so a run that skips the batches it already trained on sees the same order and keeps the random
stream aligned (the trainer draws the augmentation of skipped batches too).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler

__all__ = ["EpochBatches", "capture_rng", "restore_rng", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators (the package draws from torch and its own
    generators; the others are seeded and saved for code it calls)."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global generator, for code that uses it)
    random.seed(seed)


def capture_rng() -> dict:
    """The global generators' states, as values ``torch.load(weights_only=True)`` reads back."""
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def restore_rng(states: dict) -> None:
    """Set the global generators to ``states`` from :func:`capture_rng`."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


class EpochBatches(Sampler[list[int]]):
    """Batches of ``batch_size`` indices of a random order of ``size`` items per epoch (the last partial batch
    dropped); the first ``skip`` batches of an epoch come out as their first index only (the loader cannot yield an
    empty batch), so resuming mid-epoch reads next to nothing before the step it stopped at."""

    def __init__(self, size: int, batch_size: int, generator: torch.Generator) -> None:
        self.batches = BatchSampler(RandomSampler(range(size), generator=generator), batch_size, drop_last=True)
        self.skip = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for step, batch in enumerate(self.batches):
            yield batch[:1] if step < self.skip else batch
