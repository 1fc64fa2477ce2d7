"""The labelled image dataset: :class:`LensingImageDataset` over ``.npy`` files, HDF5 rows or in-memory arrays.

A dataset is built from a folder (the DeepLense layout, :mod:`d4lenspinn.data.layout`), a simulator HDF5 file
(:mod:`d4lenspinn.data.formats`) or ``(source, label)`` pairs. Every image is read and checked when it is built
(readable, numeric dtype, shape, the same size as the rest, finite pixels within float32's range; unknown class
folders too). All the problems found make one :class:`~d4lenspinn.data.formats.DataError` that names the first few
and counts the rest; with ``skip_bad=True`` the bad files are dropped instead, with one warning, and listed in
``bad_files``. Nothing is ever dropped or patched inside a batch. Object ``.npy`` files are read by the restricted
unpickler of :mod:`d4lenspinn.data.npy` (numpy arrays and numbers only). Splits: :mod:`d4lenspinn.data.splits`.

Labels are always ``0 = no substructure, 1 = CDM subhalos, 2 = axion vortices`` (:data:`CLASS_NAMES`).

Example::

    from torch.utils.data import DataLoader
    from d4lenspinn.data.datasets import LensingImageDataset

    train = LensingImageDataset.from_path("data/dataset", "train")    # or an .h5 path
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=4, persistent_workers=True)
    for images, labels in loader:   # (B, 1, H, W) float32, (B,) int64
        ...
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.progress import progress_bar

from .formats import DataError, HDF5Entry, ImageSource, as_image, hdf5_labels, is_hdf5_path
from .layout import index_folder
from .npy import load_npy
from .scan_report import MAX_LISTED, ScanReport

__all__ = ["LensingImageDataset", "settle_scans"]

_AUTO_CACHE_BYTES = 1 << 30  # cache=None keeps a set in memory when its float32 images fit in 1 GiB
_HOW_TO_SKIP = (
    "fix or remove them, or drop them with skip_bad=True (command line --skip-bad, config data.skip_bad=true); "
    "`d4lenspinn check-data PATH` scans a dataset on its own"
)


def _source_key(source: ImageSource) -> str | HDF5Entry | None:
    if isinstance(source, np.ndarray):
        return None
    return source if isinstance(source, HDF5Entry) else str(source)


class LensingImageDataset(Dataset):
    """Labelled single-channel lensing images; ``dataset[i] -> (image (1, H, W) float32 tensor, label int)``.

    Args:
        items: ``(source, label)`` pairs; a source is a ``.npy`` path, an :class:`HDF5Entry` or an array
            ``(H, W)``.
        class_names: name of each label.
        image_shape: expected ``(H, W)``; default: the most common size among the images.
        cache: keep decoded images in memory after their first read; ``None``: only if they fit in 1 GiB. The
            check at construction fills the cache, so DataLoader workers share the parent's copy.
        skip_bad: drop the bad images the check finds, with one warning (count and first few names), and list
            them in :attr:`bad_files`; otherwise any bad image raises one :class:`DataError` naming them.
        progress: show a progress bar during the check.
        check: read and check every image now (:meth:`validate`). ``False`` reads nothing: the size is then
            unknown (unless ``image_shape`` is given) and nothing is cached until :meth:`validate` is called.

    Attributes:
        bad_files: ``"path: reason"`` of every file (or folder) dropped by ``skip_bad``.
        where: what the items are (the folder, ``file:/group``), for messages.
    """

    def __init__(
        self,
        items: Sequence[tuple[ImageSource, int]],
        *,
        class_names: Sequence[str] = CLASS_NAMES,
        image_shape: tuple[int, int] | None = None,
        cache: bool | None = None,
        skip_bad: bool = False,
        progress: bool = False,
        check: bool = True,
    ) -> None:
        self.class_names = tuple(class_names)
        self._items: list[tuple[ImageSource, int]] = []
        for source, label in items:
            if not 0 <= int(label) < len(self.class_names):
                raise ValueError(f"label {label!r} of {source!r:.80} is not in 0..{len(self.class_names) - 1}")
            source = Path(source) if isinstance(source, str | os.PathLike) else source
            self._items.append((source, int(label)))
        self.skip_bad = skip_bad
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        self._cache_flag = cache
        self._cache: dict[str | HDF5Entry, np.ndarray] = {}
        self._h5: dict[str, h5py.File] = {}
        self._h5_pid = os.getpid()
        self._progress = progress
        self.where = f"{len(self._items)} items"  # what the items are, for messages (the factories set it)
        self._index_problems: tuple[str, ...] = ()  # found while indexing (unknown class folders)
        self.bad_files: tuple[str, ...] = ()
        self._set_shape(self._image_shape)
        if check:
            self.validate()

    # ---------------------------------------------------------------------------------------------- factories
    @classmethod
    def from_folder(cls, root: str | os.PathLike, split: str | None = "train", **kwargs) -> LensingImageDataset:
        """Read ``root/<split>/<class>/*.npy``; a root holding the class folders directly is read as it is.

        An unknown class folder is one problem of the check (reported with the bad files, skipped by
        ``skip_bad``); a missing, empty or duplicated class folder raises :class:`DataError` at once."""
        items, problems, base = index_folder(Path(root), split)
        return cls._built(items, str(base), problems, **kwargs)

    @classmethod
    def from_hdf5(cls, path: str | os.PathLike, split: str = "train", **kwargs) -> LensingImageDataset:
        """Read group ``split`` of a simulator HDF5 file; images are read lazily (one handle per worker)."""
        labels, shape = hdf5_labels(Path(path), split)
        items = [(HDF5Entry(str(path), split, i), int(lab)) for i, lab in enumerate(labels)]
        if kwargs.get("image_shape") is None:
            kwargs["image_shape"] = shape
        return cls._built(items, f"{path}:/{split}", (), **kwargs)

    @classmethod
    def from_path(cls, source: str | os.PathLike, split: str = "train", **kwargs) -> LensingImageDataset:
        """:meth:`from_hdf5` for an ``.h5``/``.hdf5`` file, else :meth:`from_folder`."""
        return (cls.from_hdf5 if is_hdf5_path(Path(source)) else cls.from_folder)(source, split, **kwargs)

    @classmethod
    def _built(
        cls, items: list, where: str, problems: Sequence[str], *, check: bool = True, **kwargs
    ) -> LensingImageDataset:
        dataset = cls(items, check=False, **kwargs)
        dataset.where, dataset._index_problems = where, tuple(problems)
        if check:
            dataset.validate()
        return dataset

    def subset(self, indices: Sequence[int]) -> LensingImageDataset:
        """The items at ``indices``, sharing this dataset's cache."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__getstate__())
        new._items = [self._items[int(i)] for i in indices]
        return new

    # ---------------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        key = _source_key(self._items[index][0])
        image = self._cache.get(key) if key is not None else None
        if image is None:
            image = self._load(index, self._image_shape)
            if self._cache_flag and key is not None:
                self._cache[key] = image
        return torch.tensor(image)[None], self._items[index][1]  # (1, H, W); a copy: never into the cache/items

    @property
    def labels(self) -> np.ndarray:
        """Labels of all items, int64 ``(N,)``, without reading any image."""
        return np.fromiter((label for _, label in self._items), dtype=np.int64, count=len(self._items))

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of every image (``None`` for an empty dataset)."""
        return self._image_shape

    @property
    def sources(self) -> list[ImageSource]:
        """The source of each item (path, :class:`HDF5Entry` or array)."""
        return [source for source, _ in self._items]

    def class_counts(self) -> dict[str, int]:
        """Number of items of each class name."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}

    def validate(self, progress: bool | None = None) -> ScanReport:
        """Read and check every image now (:meth:`scan`) and act on what it found; return its report.

        Without ``skip_bad`` any problem raises one :class:`DataError` that names the first
        :data:`~d4lenspinn.data.scan.MAX_LISTED` and counts the rest. With it, the bad items are dropped with one
        warning and added to :attr:`bad_files`; if nothing is left, :class:`DataError`. ``progress``: show a bar
        (default: the constructor's ``progress``).
        """
        report = self.scan(progress)
        settle_scans([(self, report)], self.skip_bad, self.where)
        return report

    def scan(self, progress: bool | None = None) -> ScanReport:
        """Read and check every image (filling the cache if on) and report the problems; nothing is dropped.

        Checks: the file reads (``.npy``, object arrays through the restricted unpickler, HDF5 row), the dtype is
        real numeric, the shape is ``(H, W)`` or ``(1, H, W)``, the size is ``image_shape`` (default: the most
        common size), every pixel is finite and within float32's range. Unknown class folders found while indexing
        are problems too. Images already in the cache passed before and are not read again. HDF5 handles are closed
        afterwards. The report's ``bad_items`` are the positions of the bad images (:meth:`drop` removes them).
        """
        start = time.perf_counter()
        bad, shapes = self._read_all(self._progress if progress is None else progress)
        expected = self._image_shape
        if expected is None and shapes:  # no size given: the most common size wins, the others are bad
            expected, n_common = Counter(shapes.values()).most_common(1)[0]
            for i, shape in shapes.items():
                if shape != expected:
                    source = self._items[i][0]
                    bad[i] = f"{source}: expected an image of size {expected} as {n_common} others, got {shape}"
                    self._cache.pop(_source_key(source), None)
        self._set_shape(expected)
        indices = sorted(bad)
        counts = np.bincount(
            [label for i, (_, label) in enumerate(self._items) if i not in bad], minlength=len(self.class_names)
        )
        return ScanReport(
            source=self.where,
            n_files=len(self._items),
            bad=self._index_problems + tuple(bad[i] for i in indices),
            image_shape=self._image_shape,
            class_counts={name: int(n) for name, n in zip(self.class_names, counts, strict=True)},
            seconds=time.perf_counter() - start,
            bad_items=tuple(indices),
        )

    def drop(self, report: ScanReport) -> None:
        """Remove the bad items of this dataset's ``report`` (:meth:`scan`); its problems go to :attr:`bad_files`."""
        drop = set(report.bad_items)
        self._items = [item for i, item in enumerate(self._items) if i not in drop]
        self.bad_files += report.bad
        self._index_problems = ()

    def close(self) -> None:
        """Close the HDF5 handles this process opened (they reopen on the next read)."""
        for handle in self._h5.values():
            handle.close()
        self._h5 = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_h5={})  # open handles are per process
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, image_shape={self._image_shape}, "
            f"counts={self.class_counts()}, cache={self._cache_flag})"
        )

    # ---------------------------------------------------------------------------------------------- internals
    def _load(self, index: int, expected: tuple[int, int] | None = None) -> np.ndarray:
        source = self._items[index][0]
        if isinstance(source, np.ndarray):
            return as_image(source, f"item {index} (in-memory array)", expected)
        if isinstance(source, HDF5Entry):
            try:
                raw = self._h5_file(source.path)[source.split]["images"][source.index]
            except (OSError, KeyError, ValueError, IndexError) as exc:
                raise DataError(f"{source}: could not be read ({type(exc).__name__}: {exc})") from exc
            return as_image(np.asarray(raw), source, expected)
        return as_image(load_npy(source), source, expected)

    def _h5_file(self, path: str) -> h5py.File:
        if self._h5_pid != os.getpid():  # forked worker: never use (or close) the parent's handles
            self._h5, self._h5_pid = {}, os.getpid()
        if path not in self._h5:
            self._h5[path] = h5py.File(path, "r")
        return self._h5[path]

    def _set_shape(self, shape: tuple[int, int] | None) -> None:
        """Fix the image size; decide ``cache=None`` from it."""
        self._image_shape = None if shape is None else tuple(shape)
        if shape is not None:
            self._decide_cache(shape)

    def _decide_cache(self, shape: tuple[int, ...]) -> None:
        """``cache=None``: keep the images in memory when all of them, at this size, fit in 1 GiB as float32."""
        if self._cache_flag is None:
            self._cache_flag = len(self._items) * shape[0] * shape[1] * 4 <= _AUTO_CACHE_BYTES

    def _read_all(self, show: bool) -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
        """Read every image not cached yet (filling the cache if on): ``{index: problem}`` and ``{index: (H, W)}``."""
        bad: dict[int, str] = {}
        shapes: dict[int, tuple[int, int]] = {}
        bar = progress_bar(range(len(self._items)), desc="checking images", unit="file", disable=not show, leave=False)
        for i in bar:
            key = _source_key(self._items[i][0])
            image = self._cache.get(key) if key is not None else None
            if image is None:
                try:
                    image = self._load(i, self._image_shape)
                except DataError as exc:
                    bad[i] = str(exc)
                    continue
                self._decide_cache(image.shape)  # cache=None: decided by the first good image's size
                if self._cache_flag and key is not None:
                    self._cache[key] = image
            shapes[i] = image.shape
        self.close()  # do not keep HDF5 handles open in a parent process that will fork DataLoader workers
        return bad, shapes


def settle_scans(
    scanned: Sequence[tuple[LensingImageDataset, ScanReport]], skip_bad: bool, where: str
) -> tuple[str, ...]:
    """Act on the scans of one or more datasets (each with its own :meth:`~LensingImageDataset.scan` report): one
    DataError naming the problems of all, or (``skip_bad``) one warning and the drops.

    Returns every dropped ``"path: reason"``."""
    total = ScanReport.combine(where, [report for _, report in scanned])
    if total.ok:
        return ()
    if not skip_bad:
        raise DataError(f"{total.listing()}\n{_HOW_TO_SKIP}")
    n_images = sum(len(report.bad_items) for _, report in scanned)
    others = total.n_bad - n_images
    warnings.warn(
        "\n".join(
            [
                f"skipped {n_images} bad image(s) of {total.n_files}"
                + (f" and {others} other problem(s)" if others else "")
                + f" in {where}:",
                *total.lines(MAX_LISTED),
            ]
        ),
        UserWarning,
        stacklevel=3,
    )
    for dataset, report in scanned:
        dataset.drop(report)
    for dataset, report in scanned:
        if report.n_files and not len(dataset):
            raise DataError(f"{dataset.where}: all {report.n_files} images are bad\n" + "\n".join(report.lines()))
    return total.bad
