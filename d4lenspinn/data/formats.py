"""What one data file holds: the error every reader raises, the image check, and the simulator's HDF5 schema.

No torch here (numpy and h5py only). The ``.npy`` reader is :mod:`d4lenspinn.data.npy`; the folder layout
(split and class folders) is :mod:`d4lenspinn.data.layout`.

* :class:`DataError`: a data file or folder is missing, unreadable, or not what the readers expect;
* :func:`as_image`: a raw array checked (real numeric, ``(H, W)`` or ``(1, H, W)``, size, values finite in
  float32) and returned as contiguous float32 ``(H, W)``;
* HDF5 (our simulator's layout): groups ``train``/``val`` with ``images`` float32 ``(N, H, W)`` and ``labels``
  int64 ``(N,)``, a file attribute ``classes``; :class:`HDF5Entry` names one image, :func:`hdf5_labels` checks the
  schema of one group, :func:`hdf5_image_groups` lists the groups holding images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..classes import CLASS_ALIASES, CLASS_NAMES

__all__ = [
    "DataError",
    "HDF5Entry",
    "ImageSource",
    "as_image",
    "hdf5_image_groups",
    "hdf5_labels",
    "is_hdf5_path",
]

_HDF5_SUFFIXES = (".h5", ".hdf5")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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


def as_image(arr: np.ndarray, where: object, expected: tuple[int, int] | None) -> np.ndarray:
    """Check a raw array and return it as contiguous float32 ``(H, W)``; raise DataError naming ``where``.

    Values must be finite and, for wider dtypes, within float32's range (``|x| <= 3.4e38``); the span
    ``max - min`` must be finite in float32 too, so that min-max normalisation cannot overflow."""
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{where}: expected a real-valued numeric image, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or 0 in arr.shape:
        raise DataError(f"{where}: expected an image of shape (H, W) or (1, H, W), got shape {arr.shape}")
    if expected is not None and arr.shape != tuple(expected):
        raise DataError(f"{where}: expected an image of size {tuple(expected)} as the rest, got {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        raise DataError(f"{where}: {int((~finite).sum())} NaN/inf pixels; expected finite values")
    low, high = float(arr.min()), float(arr.max())
    if max(-low, high) > _FLOAT32_MAX:
        raise DataError(f"{where}: values overflow float32 (range {low:.3g}..{high:.3g}; float32 holds +-3.4e38)")
    if high - low > _FLOAT32_MAX:
        raise DataError(
            f"{where}: values overflow float32 when normalised (range {low:.3g}..{high:.3g} spans more than 3.4e38)"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def is_hdf5_path(path: Path) -> bool:
    """Whether ``path`` is read as an HDF5 file (an ``.h5``/``.hdf5`` name, or any file that is not a folder)."""
    return path.suffix.lower() in _HDF5_SUFFIXES or path.is_file()


def hdf5_image_groups(path: Path) -> list[str]:
    """The groups of an HDF5 file that hold an ``images`` dataset, sorted; DataError naming what it holds if none."""
    try:
        with h5py.File(path, "r") as f:
            groups = [name for name in f if isinstance(f[name], h5py.Group) and "images" in f[name]]
            held: list[str] = []
            f.visit(held.append)
    except OSError as exc:
        raise DataError(f"{path}: could not be opened as HDF5 ({exc})") from exc
    if not groups:
        raise DataError(
            f"{path}: no image dataset (expected groups 'train', 'val' holding 'images'); it holds {held or 'nothing'}"
        )
    return sorted(groups)


def hdf5_labels(path: Path, split: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Check the simulator schema of group ``split`` of ``path``: (labels (N,) in CLASS_NAMES order, (H, W))."""
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
