"""Dataset readers for single-channel lensing images: DeepLense ``.npy`` folders and simulator HDF5 files.

Two on-disk formats are read (see ``docs/`` for the full description):

* folders ``ROOT/<split>/<class>/*.npy`` (or ``ROOT/<class>/*.npy``) with class folders ``no``, ``sphere``,
  ``vort`` (Common Test I, our simulator) or ``no_sub``, ``cdm``, ``axion`` (DeepLense Model II/III); each
  file holds a float image ``(H, W)`` or ``(1, H, W)``, or for Model II axions a pickled object array
  ``[image, mass]``;
* an HDF5 file with groups ``train``/``val``, each holding ``images`` float32 ``(N, H, W)`` and ``labels``
  int64 ``(N,)``, and a file attribute ``classes = ["no", "sphere", "vort"]``.

Labels are always ``0 = no substructure, 1 = CDM subhalos, 2 = axion vortices`` (:data:`CLASS_NAMES`). Every
image is checked when first read (readable, shape, size, finite pixels); a bad one raises :class:`DataError`
naming the file. With ``skip_bad=True`` the whole set is checked when it is built and bad files are dropped
with a warning, so nothing is ever dropped or patched inside a batch.

Example::

    from torch.utils.data import DataLoader
    from d4lenspinn.data.datasets import load_splits

    splits = load_splits("data/dataset", scheme="80/10/10", seed=0)   # or an .h5 path, or scheme="official"
    loader = DataLoader(splits.train, batch_size=64, shuffle=True, num_workers=4, persistent_workers=True)
    for images, labels in loader:   # (B, 1, H, W) float32, (B,) int64; train images get a random D4 element
        ...
"""

from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info
from tqdm.auto import tqdm

from d4lenspinn.symmetry import D4_ELEMENTS, transform_scalar

__all__ = [
    "CLASS_ALIASES",
    "CLASS_NAMES",
    "DataError",
    "DataSplits",
    "HDF5Entry",
    "LensingImageDataset",
    "load_splits",
    "split_indices",
]

logger = logging.getLogger(__name__)

CLASS_NAMES: tuple[str, ...] = ("no", "sphere", "vort")
"""Label ``i`` is ``CLASS_NAMES[i]``: no substructure, CDM subhalos, axion vortices."""
CLASS_ALIASES: dict[str, int] = {"no": 0, "sphere": 1, "vort": 2, "no_sub": 0, "cdm": 1, "axion": 2}
"""Class folder / HDF5 class name -> label, for both the Common Test I and the Model II/III naming schemes."""

_AUTO_CACHE_BYTES = 1 << 30  # cache=None keeps a set in memory when its float32 images fit in 1 GiB
_HDF5_SUFFIXES = (".h5", ".hdf5")
_MAX_LOGGED_BAD = 20


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


def _npy_is_object_array(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            fmt = np.lib.format
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
            _, _, dtype = read_header(fh)
        return bool(dtype.hasobject)
    except Exception:  # any header failure means "not an object .npy"
        return False


def _load_npy(path: Path, allow_pickle: bool) -> np.ndarray:
    """Load a ``.npy`` image; object arrays ``[image, mass]`` (DeepLense Model II axions) give their image.

    Security: unpickling can execute arbitrary code. Pickle is used only when the plain load fails *and* the
    file's header says it is an object array, and only if ``allow_pickle`` is true; read only files you trust.
    """
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if not (isinstance(exc, ValueError) and _npy_is_object_array(path)):
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


def _as_image(arr: np.ndarray, where: object, expected: tuple[int, int] | None) -> np.ndarray:
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
        image_shape: expected ``(H, W)``; default: the first image's (``skip_bad``: the most common) size.
        augment: apply a random D4 element to each image read (needs square images). The random stream
            comes from ``seed`` in the main process and from ``seed`` and the DataLoader's worker seed in
            workers, so results are reproducible given ``seed`` (with workers: and a seeded DataLoader).
        seed: seed of the augmentation stream.
        cache: keep decoded images in memory after their first read; ``None``: only if they fit in 1 GiB.
            With ``num_workers > 0`` call :meth:`validate` first so that workers share the parent's cache.
        skip_bad: check every image now and drop bad ones with a warning giving the count; otherwise a bad
            image raises :class:`DataError` when first read.
        allow_pickle: allow reading pickled object ``.npy`` files (Model II axions); see :func:`_load_npy`.
        progress: show a tqdm bar during the ``skip_bad`` check.
    """

    def __init__(
        self,
        items: Sequence[tuple[ImageSource, int]],
        *,
        class_names: Sequence[str] = CLASS_NAMES,
        image_shape: tuple[int, int] | None = None,
        augment: bool = False,
        seed: int = 0,
        cache: bool | None = None,
        skip_bad: bool = False,
        allow_pickle: bool = True,
        progress: bool = False,
    ) -> None:
        self.class_names = tuple(class_names)
        self._items: list[tuple[ImageSource, int]] = []
        for source, label in items:
            if not 0 <= int(label) < len(self.class_names):
                raise ValueError(f"label {label!r} of {source!r:.80} is not in 0..{len(self.class_names) - 1}")
            source = Path(source) if isinstance(source, str | os.PathLike) else source
            self._items.append((source, int(label)))
        self.augment, self.seed, self.skip_bad, self.allow_pickle = augment, seed, skip_bad, allow_pickle
        self._image_shape = tuple(image_shape) if image_shape is not None else None
        self._cache_flag = cache
        self._cache: dict[str | HDF5Entry, np.ndarray] = {}
        self._h5: dict[str, h5py.File] = {}
        self._h5_pid = os.getpid()
        self._rng: torch.Generator | None = None
        self._rng_owner: tuple[int, int | None] | None = None
        if skip_bad:
            self.validate(progress=progress)
        elif self._image_shape is None and self._items:
            self._image_shape = self._load(0).shape
        if self._cache_flag is None:
            h, w = self._image_shape or (0, 0)
            self._cache_flag = len(self._items) * h * w * 4 <= _AUTO_CACHE_BYTES
        if augment and self._image_shape is not None and self._image_shape[0] != self._image_shape[1]:
            raise DataError(f"augment=True needs square images for D4, got size {self._image_shape}")

    # ---------------------------------------------------------------------------------------------- factories
    @classmethod
    def from_folder(cls, root: str | os.PathLike, split: str | None = "train", **kwargs) -> LensingImageDataset:
        """Read ``root/<split>/<class>/*.npy``; a root holding the class folders directly is read as it is."""
        return cls(_index_folder(Path(root), split), **kwargs)

    @classmethod
    def from_hdf5(cls, path: str | os.PathLike, split: str = "train", **kwargs) -> LensingImageDataset:
        """Read group ``split`` of a simulator HDF5 file; images are read lazily (one handle per worker)."""
        labels, shape = _index_hdf5(Path(path), split)
        items = [(HDF5Entry(str(path), split, i), int(lab)) for i, lab in enumerate(labels)]
        kwargs.setdefault("image_shape", shape)
        return cls(items, **kwargs)

    @classmethod
    def from_path(cls, source: str | os.PathLike, split: str = "train", **kwargs) -> LensingImageDataset:
        """:meth:`from_hdf5` for an ``.h5``/``.hdf5`` file, else :meth:`from_folder`."""
        is_h5 = Path(source).suffix.lower() in _HDF5_SUFFIXES or Path(source).is_file()
        return (cls.from_hdf5 if is_h5 else cls.from_folder)(source, split, **kwargs)

    def subset(
        self, indices: Sequence[int], *, augment: bool | None = None, seed: int | None = None
    ) -> LensingImageDataset:
        """The items at ``indices``, sharing this dataset's cache; ``augment``/``seed`` default to ours."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__getstate__())
        new._items = [self._items[int(i)] for i in indices]
        new.augment = self.augment if augment is None else augment
        new.seed = self.seed if seed is None else seed
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
        tensor = torch.tensor(image)[None]  # (1, H, W); a copy, so callers never write into the cache/items
        if self.augment:
            g = D4_ELEMENTS[int(torch.randint(len(D4_ELEMENTS), (), generator=self._generator()))]
            tensor = transform_scalar(tensor, g).contiguous()
        return tensor, self._items[index][1]

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

    def validate(self, progress: bool = True) -> int:
        """Read and check every image now (filling the cache if on); return how many bad items were dropped.

        Without ``skip_bad`` the first bad image raises :class:`DataError`; with it, bad items are removed and
        a warning gives their count.
        """
        bad: list[tuple[int, str]] = []
        shapes: dict[int, tuple[int, int]] = {}
        for i in tqdm(range(len(self._items)), desc="validating images", disable=not progress, leave=False):
            try:
                image = self._load(i, self._image_shape)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                bad.append((i, str(exc)))
                continue
            shapes[i] = image.shape
            key = _source_key(self._items[i][0])
            if self._cache_flag and key is not None:
                self._cache[key] = image
        if self._image_shape is None and shapes:  # skip_bad without a given size: the most common size wins
            self._image_shape, n_common = Counter(shapes.values()).most_common(1)[0]
            bad += [
                (i, f"{self._items[i][0]}: expected size {self._image_shape} as {n_common} others, got {s}")
                for i, s in shapes.items()
                if s != self._image_shape
            ]
        self.close()  # do not keep HDF5 handles open in a parent process that will fork DataLoader workers
        if bad:
            self._drop(sorted(bad))
        return len(bad)

    def close(self) -> None:
        """Close the HDF5 handles this process opened (they reopen on the next read)."""
        for handle in self._h5.values():
            handle.close()
        self._h5 = {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_h5={}, _rng=None, _rng_owner=None)  # open handles and generators are per process
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, image_shape={self._image_shape}, "
            f"counts={self.class_counts()}, augment={self.augment}, cache={self._cache_flag})"
        )

    # ---------------------------------------------------------------------------------------------- internals
    def _load(self, index: int, expected: tuple[int, int] | None = None) -> np.ndarray:
        source = self._items[index][0]
        if isinstance(source, np.ndarray):
            return _as_image(source, f"item {index} (in-memory array)", expected)
        if isinstance(source, HDF5Entry):
            try:
                raw = self._h5_file(source.path)[source.split]["images"][source.index]
            except (OSError, KeyError, ValueError, IndexError) as exc:
                raise DataError(f"{source}: could not be read ({type(exc).__name__}: {exc})") from exc
            return _as_image(np.asarray(raw), source, expected)
        return _as_image(_load_npy(source, self.allow_pickle), source, expected)

    def _h5_file(self, path: str) -> h5py.File:
        if self._h5_pid != os.getpid():  # forked worker: never use (or close) the parent's handles
            self._h5, self._h5_pid = {}, os.getpid()
        if path not in self._h5:
            self._h5[path] = h5py.File(path, "r")
        return self._h5[path]

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        owner = (os.getpid(), None if info is None else info.id)
        if self._rng is None or self._rng_owner != owner:
            seed = self.seed if info is None else (self.seed * 1_000_003 + info.seed) % (1 << 63)
            self._rng, self._rng_owner = torch.Generator().manual_seed(seed), owner
        return self._rng

    def _drop(self, bad: list[tuple[int, str]]) -> None:
        for _, message in bad[:_MAX_LOGGED_BAD]:
            logger.warning("skipping bad image: %s", message)
        if len(bad) > _MAX_LOGGED_BAD:
            logger.warning("... and %d more bad images", len(bad) - _MAX_LOGGED_BAD)
        n_total = len(self._items)
        drop = {i for i, _ in bad}
        self._items = [item for i, item in enumerate(self._items) if i not in drop]
        warnings.warn(f"skipped {len(drop)} bad image(s) of {n_total} (first: {bad[0][1]})", stacklevel=3)
        if not self._items:
            raise DataError(f"all {n_total} images are bad (first: {bad[0][1]})")


def _index_folder(root: Path, split: str | None) -> list[tuple[Path, int]]:
    """``(file, label)`` for every ``.npy`` under the class folders of ``root/split`` (or of ``root``)."""
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
    for folder in folders:
        if folder.name not in CLASS_ALIASES:
            raise DataError(f"{folder}: unknown class folder; expected one of {sorted(CLASS_ALIASES)}")
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
    return items


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
    """Train/val/test datasets of one source, their class names and (square) image size in pixels."""

    train: LensingImageDataset
    val: LensingImageDataset
    test: LensingImageDataset
    class_names: tuple[str, ...]
    image_size: int


def load_splits(
    source: str | os.PathLike,
    scheme: str = "80/10/10",
    seed: int = 0,
    *,
    augment_train: bool = True,
    **kwargs,
) -> DataSplits:
    """Build train/val/test datasets from a folder or ``.h5`` file.

    ``scheme="a/b/c"`` (e.g. ``"80/10/10"``, as D4LensPINN): a seeded stratified a/b/c percent split of
    ``train``. ``scheme="official"``: a stratified 90/10 split of ``train`` for train/val; the official
    ``val`` set is the test set. Only the train set is augmented (if ``augment_train``); ``kwargs`` go to
    :class:`LensingImageDataset` (``cache``, ``skip_bad``, ``allow_pickle``, ``progress``).
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
    base = LensingImageDataset.from_path(source, "train", augment=False, seed=seed, **kwargs)
    shape = base.image_shape
    if shape[0] != shape[1]:
        raise DataError(f"{source}: images must be square for the D4 models, got size {shape}")
    train_idx, val_idx, test_idx = split_indices(base.labels, fractions, seed)
    if scheme == "official":
        kwargs.setdefault("image_shape", shape)
        test = LensingImageDataset.from_path(source, "val", augment=False, **kwargs)
    else:
        test = base.subset(test_idx)
    return DataSplits(
        base.subset(train_idx, augment=augment_train), base.subset(val_idx), test, base.class_names, shape[0]
    )
