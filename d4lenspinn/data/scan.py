"""The up-front data scan of a whole path: :func:`check_data` (``d4lenspinn check-data PATH``).

Every :class:`~d4lenspinn.data.datasets.LensingImageDataset` reads and checks all its images when it is built
(readable, real numeric dtype, shape ``(H, W)`` or ``(1, H, W)``, the same size as the rest, finite pixels within
float32's range; unknown class folders too) and summarises the result in a
:class:`~d4lenspinn.data.scan_report.ScanReport`. ``check_data(path)`` runs the same scan over every split of a
folder or HDF5 file without building anything else; object ``.npy`` files are read as every reader reads them,
through the restricted unpickler (:mod:`d4lenspinn.data.npy`: numpy arrays and numbers only)::

    from d4lenspinn.data.scan import check_data

    report = check_data("data/model_i")     # train/ and val/ (or the class folders of the root), or an .h5 file
    print(report)                           # one line per split, then the first bad files and the count of the rest
    report.ok, report.bad                   # False, ("data/model_i/train/no/x.npy: ... NaN/inf pixels ...", ...)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .datasets import LensingImageDataset
from .formats import DataError
from .layout import split_names
from .scan_report import ScanReport

__all__ = ["check_data"]


def check_data(path: str | os.PathLike, splits: Sequence[str] | None = None, *, progress: bool = False) -> ScanReport:
    """Scan every image of ``path`` (a DeepLense-layout folder or a simulator ``.h5`` file) without loading it.

    Args:
        path: ``ROOT`` with ``train/``, ``val/``, ... split folders, ``ROOT`` holding the class folders itself, or
            an HDF5 file.
        splits: split folders / HDF5 groups to scan; default: every one present.
        progress: show a progress bar per split.

    Returns:
        The combined :class:`ScanReport`, one part per split. Later splits are checked against the image size of
        the first, as :func:`~d4lenspinn.data.splits.load_splits` does for the official test set. A split whose
        layout cannot be read (missing or empty class folders) is one problem of the report, not an exception.

    Raises:
        DataError: ``path`` does not exist or holds no split or class folder at all.
    """
    path = Path(path)
    names = list(splits) if splits else split_names(path)
    reports: list[ScanReport] = []
    shape: tuple[int, int] | None = None
    for split in names:
        where = str(path if split is None else (f"{path}:/{split}" if path.is_file() else path / split))
        try:
            dataset = LensingImageDataset.from_path(path, split, check=False, cache=False, image_shape=shape)
        except DataError as exc:
            reports.append(ScanReport(source=where, n_files=0, bad=(str(exc),)))
            continue
        report = dataset.scan(progress=progress)
        shape = shape or report.image_shape
        reports.append(report)
    return ScanReport.combine(str(path), reports)
