"""Markdown tables: the one formatter behind every table vant prints or writes."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def fmt(value, spec: str = ".1f", sign: bool = False) -> str:
    """A number as text (``+`` for positive values with ``sign``); empty for None and NaN."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return f"{value:+{spec}}" if sign else f"{value:{spec}}"


def markdown(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A Markdown table. ``align`` has one letter per column, ``l`` or ``r`` (default: the first
    column left, the others right); cells are used as given (format numbers with :func:`fmt`)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} letters for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for row in rows:
        cells = ["" if c is None else str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"a row has {len(cells)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
