"""What checking every image of a dataset found: :class:`ScanReport` (made by
:meth:`~d4lenspinn.data.datasets.LensingImageDataset.scan` and :func:`~d4lenspinn.data.scan.check_data`).

    report.ok, report.n_bad, report.bad     # False, 3, ("data/model_i/train/no/x.npy: ... NaN/inf pixels ...", ...)
    print(report)                           # one line per split, then the first bad files and the count of the rest
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MAX_LISTED", "ScanReport"]

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
    bad_items: tuple[int, ...] = ()  # positions of the bad images in the scanned dataset (empty when combined)

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
