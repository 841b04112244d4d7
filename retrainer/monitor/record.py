"""The record of a drift check: its MLflow monitoring run, and markdown for its Prefect run (no Prefect)."""

from __future__ import annotations

from retrainer.markdown import number, table
from retrainer.model.registry import Registry
from retrainer.monitor.check import CheckResult, DriftCheck, check_metrics
from retrainer.monitor.incidents import Assessment
from retrainer.monitor.performance import Performance

SUMMARY_ARTIFACT = "drift/summary.json"
REPORT_JSON_ARTIFACT = "drift/report.json"
REPORT_HTML_ARTIFACT = "drift/report.html"

_ENGINES = {
    "polars": "exact scores on every row (polars); the Evidently report draws a sample of the most drifted columns",
    "evidently": "Evidently",
}


def log_check(registry: Registry, result: CheckResult) -> str:
    """Record a check as a finished MLflow monitoring run of its model.

    The run is named by the check id, with the engine and row counts as params, the champion
    version, batch ids and check id as tags, :func:`~retrainer.monitor.check.check_metrics` as
    metrics, and the JSON summary, Evidently's JSON snapshot and its HTML page as artifacts.

    Returns:
        The URI of the stored HTML report.

    Raises:
        RegistryError: the registry fails (``TransientRegistryError`` when worth retrying).
    """
    check = result.check
    params = {"engine": check.engine, "reference_rows": check.reference_rows, "current_rows": check.current_rows}
    tags = {
        "retrainer.champion_version": check.champion_version,
        "retrainer.batch_ids": ",".join(check.batch_ids),
        "retrainer.check_id": check.check_id,
        "retrainer.window_kind": check.window_kind,
    }
    run_id = registry.start_run(check.model, check.check_id, params, tags, purpose="monitoring")
    registry.log_metrics(run_id, check_metrics(check))
    registry.log_dict(run_id, check.summary(), SUMMARY_ARTIFACT)
    registry.log_text(run_id, result.report.snapshot_json, REPORT_JSON_ARTIFACT)
    report_uri = registry.log_text(run_id, result.report.html, REPORT_HTML_ARTIFACT)
    registry.end_run(run_id)
    return report_uri


def check_markdown(check: DriftCheck, assessment: Assessment, report_uri: str) -> str:
    """The drift check record: verdict, incident action, top drifted columns, prediction and performance."""
    verdict = "drift detected" if check.drift_detected else "no dataset drift"
    head = (
        f"# Drift check of {check.model} v{check.champion_version}\n\n"
        f"**{assessment.action.value}: {assessment.reason}**\n\n"
        f"- dataset: {verdict}, {check.drift_share:.0%} of features drifted\n"
        f"- window: {', '.join(check.batch_ids)} ({check.current_rows} rows) vs {check.reference_rows} reference rows\n"
        f"- data: {_kind(check)}{_lag(check)}\n"
        f"- statistics: {_ENGINES[check.engine]}\n"
        f"- incident: {assessment.incident.key if assessment.incident else '—'}\n"
        f"- [Evidently report]({report_uri})"
    )
    top = [[c.column, c.method, number(c.score), number(c.threshold), c.note or ""] for c in check.top_drifted()]
    parts = [head]
    if top:
        parts.append(table("Top drifted columns", ["column", "method", "score", "threshold", "note"], top))
    if check.prediction is not None:
        p = check.prediction
        rows = [[p.method, number(p.score), number(p.threshold), "yes" if p.drifted else "no"]]
        parts.append(table("Champion prediction drift", ["method", "score", "threshold", "drifted"], rows))
    if check.performance is not None:
        q = check.performance
        rows = [
            [
                q.metric,
                str(q.rows),
                number(q.window),
                number(q.holdout),
                number(q.change, signed=True),
                _degraded(q),
            ]
        ]
        columns = ["metric", "labelled rows", "window", "holdout", "change", "degraded"]
        parts.append(table("Champion performance on the window", columns, rows))
    return "\n\n".join(parts)


def _kind(check: DriftCheck) -> str:
    if check.labelled:
        return "labelled batches"
    return "unlabelled inference traffic (drift of features and predictions; performance is judged when labels join)"


def _lag(check: DriftCheck) -> str:
    lag = check.label_lag_seconds
    if lag is None:
        return ""
    return f"; labels joined late, median label lag {lag / 86_400:.1f} days"


def _degraded(performance: Performance) -> str:
    if performance.change is None:
        return "not judged: no holdout figure"
    if performance.rows < performance.min_rows:
        return f"not judged: fewer than {performance.min_rows} labelled rows"
    return str(performance.degraded)
