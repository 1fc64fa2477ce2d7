"""The up-front data scan: what checking every image of a dataset found, and :func:`check_data` for a whole path.

Every :class:`~d4lenspinn.data.datasets.LensingImageDataset` reads and checks all its images when it is built
(readable, real numeric dtype, shape ``(H, W)`` or ``(1, H, W)``, the same size as the rest, finite pixels; unknown
class folders too) and summarises the result in a :class:`ScanReport`. ``check_data(path)`` runs the same scan over
every split of a folder or HDF5 file without building anything else; ``d4lenspinn check-data PATH`` prints it::

    from d4lenspinn.data.scan import check_data

    report = check_data("data/model_i")     # train/ and val/ (or the class folders of the root), or an .h5 file
    print(report)                           # one line per split, then the first bad files and the count of the rest
    report.ok, report.bad                   # False, ("data/model_i/train/no/x.npy: ... NaN/inf pixels ...", ...)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..classes import CLASS_ALIASES

__all__ = ["MAX_LISTED", "ScanReport", "check_data", "split_names"]

MAX_LISTED = 10
"""How many bad files an error, a warning or a printed report names; the rest are counted."""


@dataclass(frozen=True)
class ScanReport:
    """What a scan of ``source`` found: ``bad`` holds one ``"path: reason"`` per problem, files first in order.

    ``n_files`` counts the image files (or HDF5 rows) read; ``bad`` may also name folders (an unknown class folder)
    or, from :func:`check_data`, a split whose layout could not be read at all. ``parts`` are the per-split reports
    a combined report was made of.
    """

    source: str
    n_files: int
    bad: tuple[str, ...] = ()
    image_shape: tuple[int, int] | None = None
    class_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    parts: tuple[ScanReport, ...] = ()

    @property
    def n_bad(self) -> int:
        return len(self.bad)

    @property
    def ok(self) -> bool:
        return not self.bad

    @property
    def files_per_s(self) -> float:
        return self.n_files / self.seconds if self.seconds > 0 else float("nan")

    def lines(self, limit: int | None = MAX_LISTED) -> list[str]:
        """The first ``limit`` problems (all for ``None`` or 0), indented, and ``... and N more``."""
        shown = self.bad if not limit else self.bad[:limit]
        lines = [f"  {problem}" for problem in shown]
        if len(self.bad) > len(shown):
            lines.append(f"  ... and {len(self.bad) - len(shown)} more")
        return lines

    def listing(self, limit: int | None = MAX_LISTED) -> str:
        """``N problem(s) in SOURCE (M files checked):`` and :meth:`lines`; ``""`` when nothing is bad."""
        if self.ok:
            return ""
        head = f"{self.n_bad} problem(s) in {self.source} ({self.n_files} files checked):"
        return "\n".join([head, *self.lines(limit)])

    def summary(self) -> str:
        """One line: files, bad, image size, class counts, time and files/s."""
        size = "-" if self.image_shape is None else "x".join(map(str, self.image_shape))
        counts = " ".join(f"{name}={n}" for name, n in self.class_counts.items()) or "-"
        return (
            f"{self.source}: {self.n_files} files, {self.n_bad} bad, images {size}, classes {counts}, "
            f"{self.seconds:.2f} s ({self.files_per_s:.0f} files/s)"
        )

    def format(self, limit: int | None = MAX_LISTED) -> str:
        """The printed report: a summary line per part (and the total), then the listing or ``all good``."""
        rows = [part.summary() for part in self.parts] + [self.summary()]
        return "\n".join([*rows, self.listing(limit) if not self.ok else "all files good"])

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def combine(cls, source: str, reports: Iterable[ScanReport]) -> ScanReport:
        """One report over ``reports`` (their counts added, problems concatenated); they become its parts."""
        reports = tuple(reports)
        counts: dict[str, int] = {}
        for report in reports:
            for name, n in report.class_counts.items():
                counts[name] = counts.get(name, 0) + n
        shapes = {r.image_shape for r in reports if r.image_shape is not None}
        return cls(
            source=source,
            n_files=sum(r.n_files for r in reports),
            bad=tuple(problem for r in reports for problem in r.bad),
            image_shape=shapes.pop() if len(shapes) == 1 else None,
            class_counts=counts,
            seconds=sum(r.seconds for r in reports),
            parts=reports,
        )


def split_names(path: Path) -> list[str | None]:
    """The split folders of ``path`` (``[None]`` when it holds the class folders itself) or groups of an HDF5 file."""
    from .datasets import DataError, _is_hdf5_path

    if _is_hdf5_path(path):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                groups = [name for name in f if isinstance(f[name], h5py.Group) and "images" in f[name]]
        except OSError as exc:
            raise DataError(f"{path}: could not be opened as HDF5 ({exc})") from exc
        if not groups:
            raise DataError(f"{path}: no group holding 'images' (expected 'train' and 'val')")
        return sorted(groups)
    if not path.is_dir():
        raise DataError(f"{path}: dataset folder does not exist")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    if any(p.name in CLASS_ALIASES for p in folders):
        return [None]
    splits = [p.name for p in folders if any(q.is_dir() and q.name in CLASS_ALIASES for q in p.iterdir())]
    if not splits:
        raise DataError(
            f"{path}: expected split folders (train/, val/) or class folders {sorted(CLASS_ALIASES)}; "
            f"found {[p.name for p in folders]}"
        )
    return splits


def check_data(
    path: str | os.PathLike,
    splits: Sequence[str] | None = None,
    *,
    allow_pickle: bool = True,
    progress: bool = False,
) -> ScanReport:
    """Scan every image of ``path`` (a DeepLense-layout folder or a simulator ``.h5`` file) without loading it.

    Args:
        path: ``ROOT`` with ``train/``, ``val/``, ... split folders, ``ROOT`` holding the class folders itself, or
            an HDF5 file.
        splits: split folders / HDF5 groups to scan; default: every one present.
        allow_pickle: read pickled object ``.npy`` files (DeepLense Model II axions); otherwise they are bad.
        progress: show a progress bar per split.

    Returns:
        The combined :class:`ScanReport`, one part per split. Later splits are checked against the image size of
        the first, as :func:`~d4lenspinn.data.datasets.load_splits` does for the official test set. A split whose
        layout cannot be read (missing or empty class folders) is one problem of the report, not an exception.

    Raises:
        DataError: ``path`` does not exist or holds no split or class folder at all.
    """
    from .datasets import DataError, LensingImageDataset

    path = Path(path)
    names = list(splits) if splits else split_names(path)
    reports: list[ScanReport] = []
    shape: tuple[int, int] | None = None
    for split in names:
        where = str(path if split is None else (f"{path}:/{split}" if path.is_file() else path / split))
        try:
            dataset = LensingImageDataset.from_path(
                path, split, check=False, cache=False, allow_pickle=allow_pickle, image_shape=shape
            )
        except DataError as exc:
            reports.append(ScanReport(source=where, n_files=0, bad=(str(exc),)))
            continue
        report = dataset.scan(progress=progress)
        shape = shape or report.image_shape
        reports.append(report)
    return ScanReport.combine(str(path), reports)
