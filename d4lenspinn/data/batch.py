"""The training batch: a small typed structure instead of ``(images, labels)``.

    loader = batch_loader(splits.train, batch_size=32, shuffle=True, generator=generator, drop_last=True)
    for batch in loader:                        # Batch(images (B, 1, n, n), labels (B,), index (B,), truth=None)
        truth = splits.truth["train"].targets(batch.index) if splits.truth else None
        batch = batch._replace(truth=truth)

``index`` is each image's position in its dataset, so the simulator's truth (:class:`~d4lenspinn.data.truth.TruthTable`)
can be looked up for the batch in one call; ``truth`` is filled in by whoever needs it (the trainer), so data
without truth trains unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from .truth import Truth

__all__ = ["Batch", "batch_loader"]


class Batch(NamedTuple):
    """``B`` images with their labels, their positions in the dataset and (when known) the simulator's truth."""

    images: torch.Tensor  # (B, 1, n, n) float32
    labels: torch.Tensor  # (B,) int64
    index: torch.Tensor  # (B,) int64
    truth: Truth | None = None

    def to(self, device: torch.device | str) -> Batch:
        truth = None if self.truth is None else Truth(*(t.to(device) for t in self.truth))
        return Batch(self.images.to(device), self.labels.to(device), self.index, truth)


class _Indexed(Dataset):
    """``dataset[i]`` as ``(image, label, i)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return image, label, index

    def __getitems__(self, indices: list[int]):
        """A whole batch in one call when the dataset renders batches (``OnlineSimulation``)."""
        fetch = getattr(self.dataset, "__getitems__", None)
        items = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return [(image, label, i) for (image, label), i in zip(items, indices, strict=True)]


def _collate(items) -> Batch:
    images, labels, index = default_collate(items)
    return Batch(images, labels, index)


def batch_loader(dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` (of ``(image, label)`` items) yielding :class:`Batch`; ``kwargs`` go to the
    ``DataLoader`` (``shuffle``, ``generator``, ``num_workers``, ``drop_last``)."""
    return DataLoader(_Indexed(dataset), batch_size=batch_size, collate_fn=_collate, **kwargs)
