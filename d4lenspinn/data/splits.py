"""Train/val/test splits of one source: :func:`load_splits`, :func:`load_test_split` and :class:`DataSplits`.

Example::

    from d4lenspinn.data import batch_loader, load_splits

    splits = load_splits("data/dataset", scheme="80/10/10", seed=0)   # or an .h5 path, or scheme="official"
    loader = batch_loader(splits.train, batch_size=64, shuffle=True, num_workers=4, persistent_workers=True)

No set is augmented here: the trainer draws the D4 augmentation of each training batch from its seeded generator
(the truth transforms with its image: :class:`~d4lenspinn.data.truth.Truth`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import LensingImageDataset, settle_scans
from .formats import DataError
from .layout import split_names
from .scan_report import ScanReport
from .truth import TruthTable

__all__ = ["DataSplits", "load_splits", "load_test_split", "split_indices"]


def split_indices(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified split of ``labels`` ``(N,)`` into sorted disjoint int64 indices (train, val, test).

    Each class is shuffled and cut at the rounded cumulative ``fractions`` (three values >= 0 summing to 1).
    """
    labels = np.asarray(labels)
    frac = np.asarray(fractions, dtype=float)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if frac.shape != (3,) or (frac < 0).any() or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"fractions must be three values >= 0 summing to 1, got {tuple(fractions)}")
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], ...] = ([], [], [])
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.round(np.cumsum(frac)[:2] * len(idx)).astype(int)
        for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
            part.append(chunk)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) if p else np.empty(0, np.int64) for p in parts)


@dataclass
class DataSplits:
    """Train/val/test datasets of one source, their class names and (square) image size in pixels.

    ``bad_files``: ``"path: reason"`` of every file or folder that ``skip_bad`` dropped, over all sources read
    (the trainer writes them to the run directory); ``scan``: the report of the check that preceded the split.
    """

    train: LensingImageDataset
    val: LensingImageDataset
    test: LensingImageDataset
    class_names: tuple[str, ...]
    image_size: int
    bad_files: tuple[str, ...] = ()
    scan: ScanReport | None = None
    pixel_scale: float | None = None  # arcsec per pixel, when the source says (set by prepare_data)
    description: str = ""  # where the images came from, for the model card (set by prepare_data)
    prior: dict | None = None  # the simulation preset's training_prior(), for the model card (set by prepare_data)
    truth: dict[str, TruthTable | None] | None = None  # "train"/"val"/"test" -> table (None if empty); our simulations


def load_splits(
    source: str | os.PathLike,
    scheme: str = "80/10/10",
    seed: int = 0,
    **kwargs,
) -> DataSplits:
    """Build train/val/test datasets from a folder or ``.h5`` file.

    ``scheme="a/b/c"`` (e.g. ``"80/10/10"``, as D4LensPINN): a seeded stratified a/b/c percent split of
    ``train``. ``scheme="official"``: a stratified 90/10 split of ``train`` for train/val; the official
    ``val`` set is the test set. ``kwargs`` go to :class:`LensingImageDataset` (``cache``, ``skip_bad``,
    ``progress``; every image is checked, whatever ``check`` says).

    Every image of every source read (``train``, and ``val`` for ``"official"``) is checked first; all the
    problems together raise one :class:`DataError`, or with ``skip_bad=True`` are dropped with one warning and
    listed in :attr:`DataSplits.bad_files`.
    """
    if scheme == "official":
        fractions = (0.9, 0.1, 0.0)
        if not Path(source).is_file() and not (Path(source) / "val").is_dir():
            raise DataError(f"{source}: scheme 'official' needs the folders {source}/train and {source}/val")
    else:
        try:
            fractions = tuple(float(p) / 100 for p in scheme.split("/"))
        except ValueError:
            fractions = ()
        if len(fractions) != 3:
            raise ValueError(f"scheme must be 'official' or percentages like '80/10/10', got {scheme!r}")
    names = ["train", "val"] if scheme == "official" else ["train"]
    parts, bad_files, report = _checked_parts(source, names, _dataset_options(kwargs))
    base = parts[0]
    train_idx, val_idx, test_idx = split_indices(base.labels, fractions, seed)
    test = parts[1] if scheme == "official" else base.subset(test_idx)
    return DataSplits(
        base.subset(train_idx),
        base.subset(val_idx),
        test,
        base.class_names,
        base.image_shape[0],
        bad_files=bad_files,
        scan=report,
    )


def _checked_parts(
    source: str | os.PathLike, splits: Sequence[str | None], kwargs: dict
) -> tuple[list[LensingImageDataset], tuple[str, ...], ScanReport]:
    """The datasets of ``splits`` of ``source``, every image checked (later splits against the first's size),
    all problems settled at once (:func:`settle_scans`); with the dropped files and the combined report. Square only."""
    progress = kwargs.get("progress", False)
    scanned: list[tuple[LensingImageDataset, ScanReport]] = []
    for split in splits:
        if scanned and kwargs.get("image_shape") is None:
            kwargs = {**kwargs, "image_shape": scanned[0][0].image_shape}
        dataset = LensingImageDataset.from_path(source, split, check=False, **kwargs)
        scanned.append((dataset, dataset.scan(progress)))
    bad_files = settle_scans(scanned, kwargs.get("skip_bad", False), str(source))
    shape = scanned[0][0].image_shape
    if shape is None or shape[0] != shape[1]:
        raise DataError(f"{source}: images must be square for the D4 models, got size {shape}")
    report = ScanReport.combine(str(source), [report for _, report in scanned])
    return [dataset for dataset, _ in scanned], bad_files, report


def _dataset_options(kwargs: dict) -> dict:
    """``kwargs`` for :class:`LensingImageDataset` without ``check``: the split functions always check."""
    return {key: value for key, value in kwargs.items() if key != "check"}


def load_test_split(source: str | os.PathLike, split: str = "auto", **kwargs) -> DataSplits:
    """Every labelled image of ``source`` as the test set (``train`` and ``val`` of the result are empty).

    ``split``: ``"auto"`` (``val/`` when ``source`` has one, the DeepLense layout; otherwise every split present,
    or the class folders a root holds itself), a split name (``"val"``, ``"train"``), or ``"all"`` (every split).
    ``kwargs`` go to :class:`LensingImageDataset`. Every image is checked first, as by :func:`load_splits`."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    present = split_names(source)  # [None] when source holds the class folders itself
    if split == "auto":
        names = ["val"] if "val" in present else present
    elif split == "all":
        names = present
    elif split in present:
        names = [split]
    else:
        raise DataError(
            f"{source}: no split {split!r}; it has {present if present != [None] else 'class folders only'}"
        )
    options = _dataset_options(kwargs)
    parts, bad_files, report = _checked_parts(source, names, options)
    if len(parts) == 1:
        test = parts[0]
    else:
        items = [item for part in parts for item in zip(part.sources, part.labels, strict=True)]
        test = LensingImageDataset(items, check=False, **{**options, "image_shape": parts[0].image_shape})
    return DataSplits(
        test.subset([]), test.subset([]), test, test.class_names, test.image_shape[0], bad_files=bad_files, scan=report
    )
