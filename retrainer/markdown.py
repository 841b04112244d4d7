"""Markdown pieces shared by the records shown in Prefect (pure text, no Prefect)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def number(value: float | None, signed: bool = False) -> str:
    """A metric as text: four decimals (signed on request), a dash when absent."""
    if value is None:
        return "—"
    if not np.isfinite(value):
        return "undefined"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def table(title: str, columns: list[str], rows: Sequence[Sequence[object]]) -> str:
    """A titled markdown table of ``rows`` under the header ``columns``."""
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
