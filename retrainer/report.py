"""Markdown renderings of decisions and drift checks for Prefect artifacts (pure text, no Prefect)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retrainer.incidents import Assessment
from retrainer.judgement import Judgement
from retrainer.monitoring import DriftCheck, Performance
from retrainer.retraining import Trigger

_ENGINES = {
    "polars": "exact scores on every row (polars); the Evidently report draws a sample of the most drifted columns",
    "evidently": "Evidently",
}


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    if not np.isfinite(value):
        return "undefined"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def decision_markdown(
    decision_line: str,
    judgement: Judgement | None,
    lineage: dict[str, Any],
    links: dict[str, str],
    trigger: Trigger | None = None,
) -> str:
    """The decision record: outcome, trigger and drift evidence, every rule, metrics and slices, lineage."""
    parts = [f"# Retrain decision\n\n**{decision_line}**"]
    if trigger is not None:
        parts += [_trigger(trigger), _evidence(trigger.event_payload)]
    if judgement is not None:
        parts += [_rules(judgement), _metrics(judgement), _slices(judgement)]
        parts += [f"- note: {note}" for note in judgement.notes]
    parts.append(_lineage(lineage))
    if links:
        parts.append("## Links\n\n" + "\n".join(f"- [{label}]({url})" for label, url in links.items()))
    return "\n\n".join(part for part in parts if part)


def _table(title: str, columns: list[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _trigger(trigger: Trigger) -> str:
    rows = [
        ["reason", trigger.reason],
        ["event", f"`{trigger.event_name}`" if trigger.event_name else "—"],
        ["event id", f"`{trigger.event_id}`" if trigger.event_id else "—"],
        ["incident", f"`{trigger.incident_key}`" if trigger.incident_key else "—"],
        ["flow run", f"`{trigger.flow_run_id}`" if trigger.flow_run_id else "—"],
        ["actor", trigger.actor],
    ]
    return _table("Trigger", ["", ""], rows)


def _evidence(payload: dict[str, Any]) -> str:
    """Drift evidence carried by a ``drift.detected`` / ``performance.degraded`` payload, if any."""
    if "drift_share" not in payload:
        return ""
    lines = [f"## Drift evidence\n\n- drift share {payload['drift_share']:.0%} of features"]
    if payload.get("report_uri"):
        lines.append(f"- [Evidently report]({payload['report_uri']})")
    if payload.get("batch_ids"):
        lines.append(f"- window: {', '.join(payload['batch_ids'])}")
    top = [[c.get("column"), c.get("method"), _number(c.get("score"))] for c in payload.get("top_columns", [])]
    table = _table("Top drifted columns", ["column", "method", "score"], top) if top else ""
    return "\n".join(lines) + ("\n\n" + table if table else "")


def _rules(judgement: Judgement) -> str:
    # Words, not emoji: headless browsers and terminals without an emoji font show blank boxes.
    rows = [["pass" if r.passed else "**FAIL**", f"`{r.name}`", r.detail] for r in judgement.rules]
    return _table("Rules", ["result", "rule", "detail"], rows)


def _metrics(judgement: Judgement) -> str:
    rows = [
        [
            f"**{m.metric}**" if m.metric == judgement.primary else m.metric,
            _number(m.champion),
            _number(m.challenger),
            _number(m.improvement, signed=True),
            _number(m.lower_bound, signed=True),
            m.bound_method or "—",
        ]
        for m in judgement.metrics
    ]
    title = f"Champion vs challenger on {judgement.holdout_rows} holdout rows"
    return _table(title, ["metric", "champion", "challenger", "improvement", "lower bound", "bound by"], rows)


def _slices(judgement: Judgement) -> str:
    if not judgement.slices:
        return ""
    rows = [
        [
            f"{s.column}={s.value}",
            s.rows,
            _number(s.champion),
            _number(s.challenger),
            _number(s.improvement, signed=True),
            "yes" if s.judged else "no",
        ]
        for s in judgement.slices
    ]
    columns = ["slice", "rows", "champion", "challenger", "change", "judged"]
    return _table(f"Slices ({judgement.primary})", columns, rows)


def _lineage(lineage: dict[str, Any]) -> str:
    return _table("Data lineage", ["", ""], [[key, f"`{value}`"] for key, value in lineage.items()])


def check_markdown(check: DriftCheck, assessment: Assessment, report_uri: str) -> str:
    """The drift check record: verdict, incident action, top drifted columns, prediction and performance."""
    verdict = "drift detected" if check.drift_detected else "no dataset drift"
    head = (
        f"# Drift check of {check.model} v{check.champion_version}\n\n"
        f"**{assessment.action.value}: {assessment.reason}**\n\n"
        f"- dataset: {verdict}, {check.drift_share:.0%} of features drifted\n"
        f"- window: {', '.join(check.batch_ids)} ({check.current_rows} rows) vs {check.reference_rows} reference rows\n"
        f"- statistics: {_ENGINES[check.engine]}\n"
        f"- incident: {assessment.incident.key if assessment.incident else '—'}\n"
        f"- [Evidently report]({report_uri})"
    )
    top = [[c.column, c.method, _number(c.score), _number(c.threshold), c.note or ""] for c in check.top_drifted()]
    parts = [head]
    if top:
        parts.append(_table("Top drifted columns", ["column", "method", "score", "threshold", "note"], top))
    if check.prediction is not None:
        p = check.prediction
        rows = [[p.method, _number(p.score), _number(p.threshold), "yes" if p.drifted else "no"]]
        parts.append(_table("Champion prediction drift", ["method", "score", "threshold", "drifted"], rows))
    if check.performance is not None:
        q = check.performance
        rows = [
            [
                q.metric,
                str(q.rows),
                _number(q.window),
                _number(q.holdout),
                _number(q.change, signed=True),
                _degraded(q),
            ]
        ]
        columns = ["metric", "labelled rows", "window", "holdout", "change", "degraded"]
        parts.append(_table("Champion performance on the window", columns, rows))
    return "\n\n".join(parts)


def _degraded(performance: Performance) -> str:
    if performance.change is None:
        return "not judged: no holdout figure"
    if performance.rows < performance.min_rows:
        return f"not judged: fewer than {performance.min_rows} labelled rows"
    return str(performance.degraded)
