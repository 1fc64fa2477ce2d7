"""Dataset readers for single-channel lensing images: DeepLense ``.npy`` folders and simulator HDF5 files.

Two on-disk formats are read (see ``docs/`` for the full description):

* folders ``ROOT/<split>/<class>/*.npy`` (or ``ROOT/<class>/*.npy``) with class folders ``no``, ``sphere``,
  ``vort`` (Common Test I, our simulator) or ``no_sub``, ``cdm``, ``axion`` (DeepLense Model II/III); each
  file holds a float image ``(H, W)`` or ``(1, H, W)``, or for Model II axions a pickled object array
  ``[image, mass]``;
* an HDF5 file with groups ``train``/``val``, each holding ``images`` float32 ``(N, H, W)`` and ``labels``
  int64 ``(N,)``, and a file attribute ``classes = ["no", "sphere", "vort"]``.

Labels are always ``0 = no substructure, 1 = CDM subhalos, 2 = axion vortices`` (:data:`CLASS_NAMES`). Every
image is read and checked when a dataset is built (readable, numeric dtype, shape, the same size as the rest,
finite pixels; unknown class folders too, :mod:`d4lenspinn.data.scan`), before anything trains on it. All the
problems found make one :class:`DataError` that names the first few and counts the rest; with ``skip_bad=True``
the bad files are dropped instead, with one warning, and listed in ``bad_files``. Nothing is ever dropped or
patched inside a batch.

Example::

    from torch.utils.data import DataLoader
    from d4lenspinn.data.datasets import load_splits

    splits = load_splits("data/dataset", scheme="80/10/10", seed=0)   # or an .h5 path, or scheme="official"
    loader = DataLoader(splits.train, batch_size=64, shuffle=True, num_workers=4, persistent_workers=True)
    for images, labels in loader:   # (B, 1, H, W) float32, (B,) int64 (D4 augmentation: train.augment)
        ...
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from d4lenspinn.classes import CLASS_ALIASES, CLASS_NAMES
from d4lenspinn.progress import progress_bar

from .scan import MAX_LISTED, ScanReport, split_names

__all__ = [
    "CLASS_ALIASES",
    "CLASS_NAMES",
    "DataError",
    "DataSplits",
    "HDF5Entry",
    "as_image",
    "load_npy",
    "npy_header",
    "LensingImageDataset",
    "ScanReport",
    "load_splits",
    "load_test_split",
    "split_indices",
]

logger = logging.getLogger(__name__)

_AUTO_CACHE_BYTES = 1 << 30  # cache=None keeps a set in memory when its float32 images fit in 1 GiB
_HDF5_SUFFIXES = (".h5", ".hdf5")
_HOW_TO_SKIP = (
    "fix or remove them, or drop them with skip_bad=True (command line --skip-bad, config data.skip_bad=true); "
    "`d4lenspinn check-data PATH` scans a dataset on its own"
)


class DataError(ValueError):
    """A data file or folder is missing, unreadable, or not what the readers expect; the message names it."""


@dataclass(frozen=True)
class HDF5Entry:
    """One image of a simulator HDF5 file: ``h5py.File(path)[split]["images"][index]``."""

    path: str
    split: str
    index: int

    def __str__(self) -> str:
        return f"{self.path}:/{self.split}/images[{self.index}]"


ImageSource = str | os.PathLike | np.ndarray | HDF5Entry


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` file's header, without reading its data (any failure raises)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        fmt = np.lib.format
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
        shape, _, dtype = read_header(fh)
    return shape, dtype


def _npy_is_object_array(path: Path) -> bool:
    try:
        return bool(npy_header(path)[1].hasobject)
    except Exception:  # any header failure means "not an object .npy"
        return False


def _has_npy_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
    except OSError:
        return False


def load_npy(path: Path, allow_pickle: bool) -> np.ndarray:
    """Load a ``.npy`` image; object arrays ``[image, mass]`` (DeepLense Model II axions) give their image.

    Security: unpickling can execute arbitrary code. Pickle is used only when the plain load fails *and* the
    file's header says it is an object array, and only if ``allow_pickle`` is true; read only files you trust.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if not (isinstance(exc, ValueError) and _npy_is_object_array(path)):
            if isinstance(exc, ValueError) and not _has_npy_magic(path):  # numpy would call it "pickled data"
                raise DataError(f"{path}: could not be read as .npy (no NPY header: not a .npy file)") from exc
            raise DataError(f"{path}: could not be read as .npy ({type(exc).__name__}: {exc})") from exc
    if not allow_pickle:
        raise DataError(f"{path}: is a pickled object array; pass allow_pickle=True to read it (trusted only)")
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as exc:  # unpickling can fail with almost any exception type
        raise DataError(f"{path}: could not unpickle the object array ({type(exc).__name__}: {exc})") from exc
    images = [np.asarray(x) for x in np.ravel(obj) if isinstance(x, np.ndarray) and x.ndim >= 2]
    if len(images) != 1:
        raise DataError(f"{path}: expected an object array [image, mass] with one image, got {obj!r:.200}")
    return images[0]


def as_image(arr: np.ndarray, where: object, expected: tuple[int, int] | None) -> np.ndarray:
    """Check a raw array and return it as contiguous float32 ``(H, W)``; raise DataError naming ``where``."""
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{where}: expected a real-valued numeric image, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or 0 in arr.shape:
        raise DataError(f"{where}: expected an image of shape (H, W) or (1, H, W), got shape {arr.shape}")
    if expected is not None and arr.shape != tuple(expected):
        raise DataError(f"{where}: expected an image of size {tuple(expected)} as the rest, got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: {int((~np.isfinite(arr)).sum())} NaN/inf pixels; expected finite values")
    return arr


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
        allow_pickle: allow reading pickled object ``.npy`` files (Model II axions); see :func:`load_npy`.
        progress: show a progress bar during the check.
        check: read and check every image now (:meth:`validate`). ``False`` reads nothing: the size is then
            unknown (unless ``image_shape`` is given) and nothing is cached until :meth:`validate` is called.

    Attributes:
        bad_files: ``"path: reason"`` of every file (or folder) dropped by ``skip_bad``.
    """

    def __init__(
        self,
        items: Sequence[tuple[ImageSource, int]],
        *,
        class_names: Sequence[str] = CLASS_NAMES,
        image_shape: tuple[int, int] | None = None,
        cache: bool | None = None,
        skip_bad: bool = False,
        allow_pickle: bool = True,
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
        self.skip_bad, self.allow_pickle = skip_bad, allow_pickle
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        self._cache_flag = cache
        self._cache: dict[str | HDF5Entry, np.ndarray] = {}
        self._h5: dict[str, h5py.File] = {}
        self._h5_pid = os.getpid()
        self._progress = progress
        self._where = f"{len(self._items)} items"  # what the items are, for messages (the factories set it)
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
        items, problems, base = _index_folder(Path(root), split)
        return cls._built(items, str(base), problems, **kwargs)

    @classmethod
    def from_hdf5(cls, path: str | os.PathLike, split: str = "train", **kwargs) -> LensingImageDataset:
        """Read group ``split`` of a simulator HDF5 file; images are read lazily (one handle per worker)."""
        labels, shape = _index_hdf5(Path(path), split)
        items = [(HDF5Entry(str(path), split, i), int(lab)) for i, lab in enumerate(labels)]
        if kwargs.get("image_shape") is None:
            kwargs["image_shape"] = shape
        return cls._built(items, f"{path}:/{split}", (), **kwargs)

    @classmethod
    def from_path(cls, source: str | os.PathLike, split: str = "train", **kwargs) -> LensingImageDataset:
        """:meth:`from_hdf5` for an ``.h5``/``.hdf5`` file, else :meth:`from_folder`."""
        return (cls.from_hdf5 if _is_hdf5_path(Path(source)) else cls.from_folder)(source, split, **kwargs)

    @classmethod
    def _built(
        cls, items: list, where: str, problems: Sequence[str], *, check: bool = True, **kwargs
    ) -> LensingImageDataset:
        dataset = cls(items, check=False, **kwargs)
        dataset._where, dataset._index_problems = where, tuple(problems)
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
        report, bad = self._scan(progress)
        _settle([(self, report, bad)], self.skip_bad, self._where)
        return report

    def scan(self, progress: bool | None = None) -> ScanReport:
        """Read and check every image (filling the cache if on) and report the problems; nothing is dropped.

        Checks: the file reads (``.npy``, pickled object arrays only with ``allow_pickle``, HDF5 row), the dtype is
        real numeric, the shape is ``(H, W)`` or ``(1, H, W)``, the size is ``image_shape`` (default: the most
        common size), every pixel is finite. Unknown class folders found while indexing are problems too. Images
        already in the cache passed before and are not read again. HDF5 handles are closed afterwards.
        """
        return self._scan(progress)[0]

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
        return as_image(load_npy(source, self.allow_pickle), source, expected)

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

    def _scan(self, progress: bool | None = None) -> tuple[ScanReport, list[int]]:
        """:meth:`scan`'s report and the indices of the bad items."""
        start = time.perf_counter()
        expected = self._image_shape
        bad: dict[int, str] = {}
        shapes: dict[int, tuple[int, int]] = {}
        show = self._progress if progress is None else progress
        bar = progress_bar(range(len(self._items)), desc="checking images", unit="file", disable=not show, leave=False)
        for i in bar:
            key = _source_key(self._items[i][0])
            image = self._cache.get(key) if key is not None else None
            if image is None:
                try:
                    image = self._load(i, expected)
                except DataError as exc:
                    bad[i] = str(exc)
                    continue
                self._decide_cache(image.shape)  # cache=None: decided by the first good image's size
                if self._cache_flag and key is not None:
                    self._cache[key] = image
            shapes[i] = image.shape
        self.close()  # do not keep HDF5 handles open in a parent process that will fork DataLoader workers
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
        report = ScanReport(
            source=self._where,
            n_files=len(self._items),
            bad=self._index_problems + tuple(bad[i] for i in indices),
            image_shape=self._image_shape,
            class_counts={name: int(n) for name, n in zip(self.class_names, counts, strict=True)},
            seconds=time.perf_counter() - start,
        )
        return report, indices

    def _drop(self, indices: Sequence[int], problems: Sequence[str]) -> None:
        """Remove the items at ``indices``; ``problems`` (their messages and the index problems) go to bad_files."""
        drop = set(indices)
        self._items = [item for i, item in enumerate(self._items) if i not in drop]
        self.bad_files += tuple(problems)
        self._index_problems = ()


def _settle(
    scanned: Sequence[tuple[LensingImageDataset, ScanReport, list[int]]], skip_bad: bool, where: str
) -> tuple[str, ...]:
    """Act on the scans of one or more datasets: one DataError, or (``skip_bad``) one warning and the drops.

    Returns every dropped ``"path: reason"``."""
    total = ScanReport.combine(where, [report for _, report, _ in scanned])
    if total.ok:
        return ()
    if not skip_bad:
        raise DataError(f"{total.listing()}\n{_HOW_TO_SKIP}")
    n_images = sum(len(indices) for _, _, indices in scanned)
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
    for dataset, report, indices in scanned:
        dataset._drop(indices, report.bad)
    for dataset, report, _ in scanned:
        if report.n_files and not len(dataset):
            raise DataError(f"{dataset._where}: all {report.n_files} images are bad\n" + "\n".join(report.lines()))
    return total.bad


def _is_hdf5_path(path: Path) -> bool:
    return path.suffix.lower() in _HDF5_SUFFIXES or path.is_file()


def _index_folder(root: Path, split: str | None) -> tuple[list[tuple[Path, int]], list[str], Path]:
    """``(file, label)`` for every ``.npy`` under the class folders of ``root/split`` (or of ``root``), the
    unknown class folders found there (as problems ``"folder: reason"``) and the folder that was indexed."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    base = root / split if split is not None and (root / split).is_dir() else root
    folders = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if base == root and split is not None and not any(p.name in CLASS_ALIASES for p in folders):
        raise DataError(
            f"{root}: expected a split folder {split!r} or class folders {CLASS_NAMES}; "
            f"found {[p.name for p in folders]}"
        )
    if base == root and split is not None:
        logger.info("%s has no %r folder; reading its class folders directly", root, split)
    by_label: dict[int, Path] = {}
    problems: list[str] = []
    for folder in folders:
        if folder.name not in CLASS_ALIASES:
            problems.append(f"{folder}: unknown class folder; expected one of {sorted(CLASS_ALIASES)}")
            continue
        label = CLASS_ALIASES[folder.name]
        if label in by_label:
            raise DataError(f"{folder} and {by_label[label]} both hold class {CLASS_NAMES[label]!r}")
        by_label[label] = folder
    missing = [CLASS_NAMES[c] for c in range(len(CLASS_NAMES)) if c not in by_label]
    if missing:
        raise DataError(f"{base}: no class folder for {missing}; found {[p.name for p in folders]}")
    items: list[tuple[Path, int]] = []
    for label, folder in sorted(by_label.items()):
        files = sorted(p for p in folder.iterdir() if p.suffix == ".npy" and p.is_file())
        if not files:
            raise DataError(f"{folder}: class folder holds no .npy files")
        n_other = sum(1 for p in folder.iterdir() if p.suffix != ".npy" and not p.name.startswith("."))
        if n_other:
            logger.warning("%s: ignoring %d entries that are not .npy files", folder, n_other)
        items += [(p, label) for p in files]
    return items, problems, base


def _index_hdf5(path: Path, split: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Check the simulator schema of ``path`` and return (labels (N,) mapped to CLASS_NAMES order, (H, W))."""
    try:
        with h5py.File(path, "r") as f:
            raw_classes = f.attrs.get("classes")
            if raw_classes is None:
                raise DataError(f"{path}: missing file attribute 'classes' (expected {list(CLASS_NAMES)})")
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in np.ravel(raw_classes)]
            unknown = [c for c in classes if c not in CLASS_ALIASES]
            if unknown:
                raise DataError(f"{path}: unknown classes {unknown} in attr 'classes'; expected {CLASS_NAMES}")
            if split not in f or not {"images", "labels"} <= set(f[split]):
                raise DataError(
                    f"{path}: expected a group '{split}' with datasets 'images' and 'labels'; "
                    f"found {list(f)} / {list(f[split]) if split in f else '-'}"
                )
            images, labels = f[split]["images"], f[split]["labels"][()]
            shape = tuple(images.shape)
    except OSError as exc:
        raise DataError(f"{path}: could not be opened as HDF5 ({exc})") from exc
    if not (len(shape) == 3 or (len(shape) == 4 and shape[1] == 1)):
        raise DataError(f"{path}:/{split}/images: expected shape (N, H, W), got {shape}")
    if labels.shape != shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}:/{split}/labels: expected integer labels of shape {shape[:1]}, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(
            f"{path}:/{split}/labels: values must be in 0..{len(classes) - 1}, got {labels.min()}..{labels.max()}"
        )
    return np.array([CLASS_ALIASES[c] for c in classes], dtype=np.int64)[labels], shape[-2:]


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
    truth: dict[str, Any] | None = None  # "train"/"val"/"test" -> TruthTable (None if empty), our simulations only


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
    ``allow_pickle``, ``progress``). No set is augmented here: the trainer draws the D4 augmentation of each
    training batch from its seeded generator (:func:`d4lenspinn.train.augment`; the truth by `Truth.transform`).

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
    parts, bad_files, report = _checked_parts(source, ["train", "val"] if scheme == "official" else ["train"], kwargs)
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
    all problems settled at once (:func:`_settle`); with the dropped files and the combined report. Square only."""
    kwargs = {key: value for key, value in kwargs.items() if key != "check"}  # the check is not optional
    progress = kwargs.get("progress", False)
    scanned = []
    for split in splits:
        if scanned and kwargs.get("image_shape") is None:
            kwargs["image_shape"] = scanned[0][0].image_shape
        dataset = LensingImageDataset.from_path(source, split, check=False, **kwargs)
        scanned.append((dataset, *dataset._scan(progress)))
    bad_files = _settle(scanned, kwargs.get("skip_bad", False), str(source))
    shape = scanned[0][0].image_shape
    if shape is None or shape[0] != shape[1]:
        raise DataError(f"{source}: images must be square for the D4 models, got size {shape}")
    report = ScanReport.combine(str(source), [report for _, report, _ in scanned])
    return [dataset for dataset, _, _ in scanned], bad_files, report


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
    parts, bad_files, report = _checked_parts(source, names, kwargs)
    if len(parts) == 1:
        test = parts[0]
    else:
        merged = {key: value for key, value in kwargs.items() if key != "check"}
        merged["image_shape"] = parts[0].image_shape
        test = LensingImageDataset([item for part in parts for item in part._items], check=False, **merged)
    return DataSplits(
        test.subset([]), test.subset([]), test, test.class_names, test.image_shape[0], bad_files=bad_files, scan=report
    )
