"""The decision record of a retrain, as markdown for its Prefect run (pure text, no Prefect)."""

from __future__ import annotations

from typing import Any

from retrainer.cycle.plan import Trigger
from retrainer.cycle.refit import RefitCheck
from retrainer.cycle.windows import WindowChoice
from retrainer.judge.policy import Judgement
from retrainer.markdown import number, table


def decision_markdown(
    decision_line: str,
    judgement: Judgement | None,
    lineage: dict[str, Any],
    links: dict[str, str],
    trigger: Trigger | None = None,
    windows: WindowChoice | None = None,
    refit: RefitCheck | None = None,
    labels: str | None = None,
) -> str:
    """The decision record: outcome, trigger and drift evidence, every rule, metrics, slices, windows, lineage.

    ``labels`` says, for an incident of unlabelled traffic, how much of its window was labelled.
    """
    parts = [f"# Retrain decision\n\n**{decision_line}**"]
    if trigger is not None:
        parts += [_trigger(trigger), _evidence(trigger.event_payload)]
    if labels is not None:
        parts.append(f"## Labels\n\n{labels}.")
    if judgement is not None:
        parts += [_rules(judgement), _metrics(judgement), _slices(judgement)]
    if windows is not None:
        parts.append(_windows(windows, lineage))
    if refit is not None:
        parts.append(f"## Refit\n\n{refit.note}.")
    if judgement is not None:
        parts += [f"- note: {note}" for note in judgement.notes]
    parts.append(_lineage(lineage))
    if links:
        parts.append("## Links\n\n" + "\n".join(f"- [{label}]({url})" for label, url in links.items()))
    return "\n\n".join(part for part in parts if part)


def _trigger(trigger: Trigger) -> str:
    rows = [
        ["reason", trigger.reason],
        ["event", f"`{trigger.event_name}`" if trigger.event_name else "—"],
        ["event id", f"`{trigger.event_id}`" if trigger.event_id else "—"],
        ["incident", f"`{trigger.incident_key}`" if trigger.incident_key else "—"],
        ["answers", _answers(trigger)],
        ["flow run", f"`{trigger.flow_run_id}`" if trigger.flow_run_id else "—"],
        ["actor", trigger.actor],
    ]
    return table("Trigger", ["", ""], rows)


def _answers(trigger: Trigger) -> str:
    if not trigger.answers:
        return "—"
    sample = ", ".join(f"`{key}`" for key in trigger.answers_sample)
    more = ", …" if trigger.answers > len(trigger.answers_sample) else ""
    return f"{trigger.answers} alert{'s' if trigger.answers != 1 else ''}: {sample}{more}"


def _evidence(payload: dict[str, Any]) -> str:
    """Drift evidence carried by a ``drift.detected`` / ``performance.degraded`` payload, if any."""
    if "drift_share" not in payload:
        return ""
    lines = [f"## Drift evidence\n\n- drift share {payload['drift_share']:.0%} of features"]
    if payload.get("report_uri"):
        lines.append(f"- [Evidently report]({payload['report_uri']})")
    if payload.get("batch_ids"):
        lines.append(f"- window: {', '.join(payload['batch_ids'])}")
    top = [[c.get("column"), c.get("method"), number(c.get("score"))] for c in payload.get("top_columns", [])]
    columns = table("Top drifted columns", ["column", "method", "score"], top) if top else ""
    return "\n".join(lines) + ("\n\n" + columns if columns else "")


def _rules(judgement: Judgement) -> str:
    # Words, not emoji: headless browsers and terminals without an emoji font show blank boxes.
    rows = [["pass" if r.passed else "**FAIL**", f"`{r.name}`", r.detail] for r in judgement.rules]
    return table("Rules", ["result", "rule", "detail"], rows)


def _metrics(judgement: Judgement) -> str:
    rows = [
        [
            f"**{m.metric}**" if m.metric == judgement.primary else m.metric,
            number(m.champion),
            number(m.challenger),
            number(m.improvement, signed=True),
            number(m.lower_bound, signed=True),
            m.bound_method or "—",
        ]
        for m in judgement.metrics
    ]
    title = f"Champion vs challenger on {judgement.holdout_rows} holdout rows"
    return table(title, ["metric", "champion", "challenger", "improvement", "lower bound", "bound by"], rows)


def _slices(judgement: Judgement) -> str:
    if not judgement.slices:
        return ""
    rows = [
        [
            f"{s.column}={s.value}",
            s.rows,
            number(s.champion),
            number(s.challenger),
            number(s.improvement, signed=True),
            "yes" if s.judged else "no",
        ]
        for s in judgement.slices
    ]
    columns = ["slice", "rows", "champion", "challenger", "change", "judged"]
    return table(f"Slices ({judgement.primary})", columns, rows)


def _windows(choice: WindowChoice, lineage: dict[str, Any]) -> str:
    rows = [
        [
            f"**{s.name}**" if i == choice.chosen else s.name,
            s.rows if s.rows is not None else "its own retrain's",
            number(s.value),
            number(s.improvement, signed=True),
            number(s.lower_bound, signed=True),
            "yes" if s.promotes else "no",
        ]
        for i, s in enumerate(choice.scores)
    ]
    columns = ["window", "training rows", "primary", "improvement", "lower bound", "passes"]
    title = f"Candidates: training windows and earlier champions (bounds at {choice.confidence:.2%})"
    return table(title, columns, rows) + "\n\n" + _unseen(lineage)


def _unseen(lineage: dict[str, Any]) -> str:
    """What "judged on unseen rows" means for this decision."""
    batches = ", ".join(lineage.get("holdout_batches", []))
    if lineage.get("holdout_is_row_split"):
        return (
            f"Judged on unseen rows: a seeded share of the rows of {batches}; no candidate (window or earlier"
            " champion) trained on them."
        )
    share = lineage.get("holdout_share_of_holdout_batches", 1.0)
    return (
        f"Judged on unseen rows: the latest {share:.0%} of the rows of {batches} (by time); no candidate (window"
        " or earlier champion) trained on them."
    )


def _lineage(lineage: dict[str, Any]) -> str:
    return table("Data lineage", ["", ""], [[key, f"`{value}`"] for key, value in lineage.items()])
