"""Markdown renderings of decisions and ingests for Prefect artifacts (pure text, no Prefect)."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrainer.judgement import Judgement


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    if not np.isfinite(value):
        return "undefined"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def decision_markdown(
    decision_line: str, judgement: Judgement | None, lineage: dict[str, Any], links: dict[str, str]
) -> str:
    """The decision record: outcome, every rule, champion vs challenger per metric and slice, lineage."""
    parts = [f"# Retrain decision\n\n**{decision_line}**\n"]
    if judgement is not None:
        parts += [_rules(judgement), _metrics(judgement), _slices(judgement)]
        parts += [f"- note: {note}" for note in judgement.notes]
    parts.append(_lineage(lineage))
    if links:
        parts.append("## Links\n\n" + "\n".join(f"- [{label}]({url})" for label, url in links.items()))
    return "\n\n".join(part for part in parts if part)


def _rules(judgement: Judgement) -> str:
    rows = [f"| {'✅' if r.passed else '❌'} | `{r.name}` | {r.detail} |" for r in judgement.rules]
    header = "## Rules\n\n| | rule | detail |\n|---|---|---|"
    return "\n".join([header, *rows])


def _metrics(judgement: Judgement) -> str:
    header = (
        f"## Champion vs challenger on {judgement.holdout_rows} holdout rows\n\n"
        "| metric | champion | challenger | improvement | lower bound |\n|---|---|---|---|---|"
    )
    rows = [
        f"| {'**' + m.metric + '**' if m.metric == judgement.primary else m.metric} | {_number(m.champion)} | "
        f"{_number(m.challenger)} | {_number(m.improvement, signed=True)} | {_number(m.lower_bound, signed=True)} |"
        for m in judgement.metrics
    ]
    return "\n".join([header, *rows])


def _slices(judgement: Judgement) -> str:
    if not judgement.slices:
        return ""
    header = (
        f"## Slices ({judgement.primary})\n\n"
        "| slice | rows | champion | challenger | change | judged |\n|---|---|---|---|---|---|"
    )
    rows = [
        f"| {s.column}={s.value} | {s.rows} | {_number(s.champion)} | {_number(s.challenger)} | "
        f"{_number(s.improvement, signed=True)} | {'yes' if s.judged else 'no'} |"
        for s in judgement.slices
    ]
    return "\n".join([header, *rows])


def _lineage(lineage: dict[str, Any]) -> str:
    rows = [f"| {key} | `{value}` |" for key, value in lineage.items()]
    return "\n".join(["## Data lineage\n\n| | |\n|---|---|", *rows])
