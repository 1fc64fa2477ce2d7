"""The DeepLense folder layout: ``ROOT/<split>/<class>/*.npy`` or ``ROOT/<class>/*.npy``, and the splits of a source.

Class folders are ``no``, ``sphere``, ``vort`` (Common Test I, our simulator) or ``no_sub``, ``cdm``, ``axion``
(DeepLense Model II/III) (:data:`~d4lenspinn.classes.CLASS_ALIASES`). Folders starting with ``.`` or ``_`` are
never listed. No torch and no image is read here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..classes import CLASS_ALIASES, CLASS_NAMES
from .formats import DataError, hdf5_image_groups, is_hdf5_path

__all__ = ["index_folder", "split_names", "subfolders"]

logger = logging.getLogger(__name__)


def subfolders(path: Path) -> list[Path]:
    """The folders directly under ``path``, sorted, without hidden (``.``) or private (``_``) ones."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _existing_folder(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: dataset folder does not exist")
    if not path.is_dir():
        raise DataError(f"{path}: is a file; expected a dataset folder (or an .h5/.hdf5 file)")
    return path


def split_names(path: Path) -> list[str | None]:
    """The split folders of ``path`` (``[None]`` when it holds the class folders itself) or groups of an HDF5 file."""
    if is_hdf5_path(path):
        return hdf5_image_groups(path)
    folders = subfolders(_existing_folder(path))
    if any(p.name in CLASS_ALIASES for p in folders):
        return [None]
    splits = [p.name for p in folders if any(q.name in CLASS_ALIASES for q in subfolders(p))]
    if not splits:
        raise DataError(
            f"{path}: expected split folders (train/, val/) or class folders {sorted(CLASS_ALIASES)}; "
            f"found {[p.name for p in folders]}"
        )
    return splits


def index_folder(root: Path, split: str | None) -> tuple[list[tuple[Path, int]], list[str], Path]:
    """``(file, label)`` for every ``.npy`` under the class folders of ``root/split`` (or of ``root``), the
    unknown class folders found there (as problems ``"folder: reason"``) and the folder that was indexed.

    A missing, empty or duplicated class folder raises :class:`~d4lenspinn.data.formats.DataError` at once."""
    _existing_folder(root)
    base = root / split if split is not None and (root / split).is_dir() else root
    folders = subfolders(base)
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
