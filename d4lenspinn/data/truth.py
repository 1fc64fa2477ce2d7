"""The simulator's truth as training targets, aligned with the items of a dataset.

For our own simulations (a folder or HDF5 file with ``manifest.json`` and the truth the writer stores) every image
has its lens parameters; :class:`TruthTable` turns the rows of a batch into targets::

    table = TruthTable.for_dataset(splits.train, root="data/demo")    # None when the data has no truth
    truth = table.targets(batch.index)          # Truth(macro (B, 7), substructure (B, 1, n, n)), float32

* ``macro``: the smooth lens (SIE + shear) as :class:`~d4lenspinn.physics.MacroLens` columns;
* ``substructure``: the substructure convergence (0 without substructure) convolved with the preset's PSF: a point
  mass is a delta on the grid, which no network can place to the pixel; smoothed to the PSF scale it is the part of
  the mass map the image constrains, and the learnable target.

Under a D4 element the macro columns transform by :func:`~d4lenspinn.symmetry.transform_macro` and the
substructure map as a scalar field: ``truth.transform(elements)`` does both, with each image's element (the trainer's
augmentation applies the same elements to the images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch

from ..physics.light import convolve_psf
from ..physics.macro import MacroLens
from ..symmetry import transform_each, transform_macro
from .datasets import LensingImageDataset
from .formats import DataError, HDF5Entry
from .presets import SimulationPreset
from .simulator import LensSample, psf_kernel, substructure_convergence, true_macro_lens
from .writer import read_truth

__all__ = ["Truth", "TruthTable", "simulation_preset"]


class Truth(NamedTuple):
    """Targets of a batch of ``B`` simulated images of ``n x n`` pixels."""

    macro: torch.Tensor  # (B, 7) MacroLens columns: theta_E, e1, e2, centre x, y [arcsec], gamma1, gamma2
    substructure: torch.Tensor  # (B, 1, n, n) substructure convergence smoothed by the PSF

    def transform(self, elements: torch.Tensor) -> Truth:
        """The targets of the transformed images: D4 element ``elements[i]`` (int64 ``(B,)``, indices into
        :data:`~d4lenspinn.symmetry.D4_ELEMENTS`) applied to item ``i``, the macro lens by its parameter types and
        the substructure map as a scalar field."""
        macro = transform_each(
            self.macro, elements, lambda v, g: transform_macro(MacroLens.from_tensor(v), g).as_tensor()
        )
        return Truth(macro, transform_each(self.substructure, elements))


def simulation_preset(root: str | Path) -> SimulationPreset | None:
    """The preset recorded in the ``manifest.json`` beside our simulated data (``None`` if there is none)."""
    folder = Path(root) if Path(root).is_dir() else Path(root).parent
    try:
        recorded = json.loads((folder / "manifest.json").read_text())["preset"]
    except (OSError, ValueError, KeyError):
        return None
    return SimulationPreset.from_dict(recorded)


class TruthTable:
    """Lens parameters ``lenses`` (row ``i`` for item ``i`` of a dataset) of images made with ``preset``."""

    def __init__(self, lenses: LensSample, preset: SimulationPreset) -> None:
        self.lenses, self.preset = lenses, preset
        self._psf = psf_kernel(preset, torch.float64)

    def __len__(self) -> int:
        return len(self.lenses)

    def targets(self, index: torch.Tensor) -> Truth:
        """The targets of rows ``index (B,)``, float32, computed in one batched call."""
        lenses = self.lenses.select(index.long().cpu())
        macro = torch.stack(tuple(true_macro_lens(lenses)), dim=1)
        substructure = convolve_psf(substructure_convergence(lenses, self.preset), self._psf)
        return Truth(macro.float(), substructure.float())

    @classmethod
    def for_dataset(cls, dataset: LensingImageDataset, root: str | Path, read: dict | None = None) -> TruthTable | None:
        """The truth of every item of ``dataset`` read from our simulation at ``root`` (its ``truth.h5``, or the
        truth inside its ``dataset.h5``); ``None`` when ``root`` holds no simulation of ours or ``dataset`` is empty.
        ``read``: a dict shared by calls on datasets of one source, so each truth split is read once.

        Raises :class:`DataError` naming the first item the truth does not cover."""
        preset = simulation_preset(root)
        if preset is None:
            return None
        folder = Path(root) if Path(root).is_dir() else Path(root).parent
        tables: dict[tuple[str, str], tuple[LensSample, dict[str, int]]] = {} if read is None else read
        wanted: dict[tuple[str, str], tuple[list[int], list[int]]] = {}  # (file, split) -> (positions, truth rows)
        for position, source in enumerate(dataset.sources):
            if isinstance(source, HDF5Entry):
                split, key, path = source.split, None, source.path
            else:
                parts = Path(source).parts[-3:]  # split/class/file.npy, as the writer names them
                split, key, path = parts[0], "/".join(parts), folder / "truth.h5"
            where = (str(path), split)
            if where not in tables:
                if not Path(path).exists():
                    return None
                lenses, files = read_truth(path, split)
                tables[where] = (lenses, {name: i for i, name in enumerate(files)})
            lenses, by_file = tables[where]
            row = source.index if key is None else by_file.get(key)
            if row is None or row >= len(lenses):
                raise DataError(f"{source}: not in the simulation truth of {folder}")
            positions, rows = wanted.setdefault(where, ([], []))
            positions.append(position)
            rows.append(row)
        if not wanted:
            return None
        parts = [tables[where][0].select(torch.tensor(rows)) for where, (_, rows) in wanted.items()]
        order = torch.tensor([p for positions, _ in wanted.values() for p in positions]).argsort()
        return cls(LensSample.concatenate(parts).select(order), preset)
