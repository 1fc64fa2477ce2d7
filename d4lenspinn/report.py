"""Markdown tables for reports and benchmark output.

Example::

    print(markdown_table(["model", "macro AUC"], [["d4_cnn", "0.967"], ["resnet18", "0.954"]]))
    # | model | macro AUC |
    # |---|---:|
    # | d4_cnn | 0.967 |
    # | resnet18 | 0.954 |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]

_SEPARATORS = {"l": "---", "r": "---:"}


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A markdown table: one header line, the alignment line, one line per row (cells as ``str(cell)``).

    ``align`` has one letter per column, ``l`` (left) or ``r`` (right); by default the first column is left-aligned
    and the others right-aligned (labels, then numbers). Raises ``ValueError`` when a row or ``align`` does not have
    one entry per header.
    """
    headers = [str(header) for header in headers]
    align = align if align is not None else "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or set(align) - set(_SEPARATORS):
        raise ValueError(f"align must hold one of 'l' or 'r' per column ({len(headers)}), got {align!r}")
    lines = [_line(headers), "|" + "|".join(_SEPARATORS[letter] for letter in align) + "|"]
    for number, row in enumerate(rows):
        cells = [str(cell) for cell in row]
        if len(cells) != len(headers):
            raise ValueError(f"row {number} has {len(cells)} cells but the table has {len(headers)} columns: {cells}")
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
