"""On-the-fly simulation as a data source (``data.source: simulate-online``): fresh training images every epoch.

    splits = online_splits(get_preset("model_ii"), n_per_class=1500, n_val_per_class=375, seed=0)
    splits.train.set_epoch(3)          # the trainer does this at the start of every epoch
    image, label = splits.train[10]    # the same image for the same (seed, epoch, index), always

Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: its lens comes from a per-(epoch, class) parameter
stream and its noise from a per-(epoch, item) generator, so a resumed run (which restores the epoch and the
loader's order) sees exactly the images of the uninterrupted one, whatever the batch size or worker count. Nothing
is written to disk. Validation and test are fixed sets from their own streams, rendered once into memory. Batches
are rendered in one call (``__getitems__``), as :func:`~d4lenspinn.data.simulator.render_images` does for the
writer. The simulator's truth of every split is available as for stored simulations (``splits.truth``).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..classes import CLASS_NAMES
from .presets import SimulationPreset
from .simulator import LensSample, noisy_images, normalise_images, render_images, sample_lenses, stream_seed
from .splits import DataSplits
from .truth import TruthTable

__all__ = ["SIMULATE_ONLINE", "OnlineSimulation", "online_splits"]

SIMULATE_ONLINE = "simulate-online"  # the data.source that selects it
_RENDER_BATCH = 256  # images per call when a fixed split is rendered up front


class OnlineSimulation(Dataset):
    """``n_per_class`` images per class of ``preset`` (items ordered by class), redrawn for every epoch.

    ``fixed=True`` keeps epoch 0 for ever and renders it once into memory (validation and test)."""

    def __init__(self, preset: SimulationPreset, n_per_class: int, seed: int, split: str, fixed: bool = False) -> None:
        if n_per_class < 1:
            raise ValueError(f"{split}: need at least 1 image per class, got n_per_class={n_per_class}")
        self.preset, self.n_per_class, self.seed, self.split, self.fixed = preset, n_per_class, seed, split, fixed
        self.labels = torch.arange(len(CLASS_NAMES)).repeat_interleave(n_per_class)
        self.epoch = 0
        self._lenses = self._draw_lenses(0)
        self._images = None
        if fixed:
            index = torch.arange(len(self))
            self._images = torch.cat([self._render(chunk) for chunk in index.split(_RENDER_BATCH)])

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lenses(self) -> LensSample:
        """The parameters of every item of the current epoch."""
        return self._lenses

    def set_epoch(self, epoch: int) -> None:
        """Draw the lenses of ``epoch`` (a fixed split ignores it)."""
        if not self.fixed and epoch != self.epoch:
            self.epoch, self._lenses = epoch, self._draw_lenses(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        ((image, label),) = self.__getitems__([index])
        return image, label

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self._images[index] if self._images is not None else self._render(index)
        return [(image, int(label)) for image, label in zip(images, self.labels[index], strict=True)]

    def _draw_lenses(self, epoch: int) -> LensSample:
        return LensSample.concatenate(
            [
                sample_lenses(
                    self.preset,
                    label,
                    self.n_per_class,
                    torch.Generator().manual_seed(stream_seed(self.seed, self.split, epoch, name)),
                )
                for label, name in enumerate(CLASS_NAMES)
            ]
        )

    def _render(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``(b, 1, n, n)`` of items ``index``: noiseless renders one class at a time (the substructure loops
        then run over that class's images only), then each item's own noise stream."""
        lenses = self._lenses.select(index)
        clean = torch.empty(len(index), 1, self.preset.n_pixels, self.preset.n_pixels)
        for label in lenses.label.unique():
            members = torch.nonzero(lenses.label == label).squeeze(1)
            clean[members] = render_images(lenses.select(members), self.preset, noise=False, normalise=False)
        noisy = [
            noisy_images(
                clean[k : k + 1],
                lenses.select(slice(k, k + 1)),
                self.preset,
                torch.Generator().manual_seed(stream_seed(self.seed, self.split, self.epoch, "noise", int(i))),
            )
            for k, i in enumerate(index)
        ]
        return normalise_images(torch.cat(noisy))


class _CurrentTruth:
    """The truth of an :class:`OnlineSimulation`'s current epoch, with :class:`TruthTable`'s ``targets``."""

    def __init__(self, dataset: OnlineSimulation) -> None:
        self.dataset = dataset
        self._table = TruthTable(dataset.lenses, dataset.preset)

    def __len__(self) -> int:
        return len(self.dataset)

    def targets(self, index: torch.Tensor):
        if self._table.lenses is not self.dataset.lenses:  # a new epoch
            self._table = TruthTable(self.dataset.lenses, self.dataset.preset)
        return self._table.targets(index)


def online_splits(
    preset: SimulationPreset, n_per_class: int, n_val_per_class: int, seed: int, pixel_scale: float | None = None
) -> DataSplits:
    """Fresh training images every epoch; fixed validation and test sets of ``n_val_per_class`` per class."""
    train = OnlineSimulation(preset, n_per_class, seed, "train")
    val = OnlineSimulation(preset, n_val_per_class, seed, "val", fixed=True)
    test = OnlineSimulation(preset, n_val_per_class, seed, "test", fixed=True)
    description = (
        f"online simulation of preset {preset.name}, {n_per_class}/class fresh every epoch, "
        f"{n_val_per_class}/class fixed validation and test sets, seed {seed}"
    )
    return DataSplits(
        train=train,
        val=val,
        test=test,
        class_names=CLASS_NAMES,
        image_size=preset.n_pixels,
        pixel_scale=preset.pixel_scale if pixel_scale is None else pixel_scale,
        description=description,
        truth={
            "train": _CurrentTruth(train),
            "val": TruthTable(val.lenses, preset),
            "test": TruthTable(test.lenses, preset),
        },
    )
