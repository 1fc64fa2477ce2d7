"""A plain markdown table (the same output as ``d4lenspinn.report.markdown_table`` with its default alignment)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Header line, alignment line (first column left, the others right), one line per row; cells as ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
