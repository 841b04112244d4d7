"""Traffic and label tasks: observe an inference file, keep a label file, join the labels; announce each."""

from __future__ import annotations

import math

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from retrainer import events
from retrainer.config import ModelConfig
from retrainer.data.ingest import IngestOutcome, IngestReport
from retrainer.data.store import BatchRecord
from retrainer.data.traffic import JoinReport, join_labels, label_file, mark_announced, observe_file
from retrainer.monitor.incidents import waiting_for_labels
from tasks._common import artifact_key, store_task, workspace
from tasks.ingest import rejected_event


@store_task("observe-file", task_run_name="observe-{source}")
def observe_one(model: str, config: ModelConfig, source: str) -> IngestOutcome:
    """Check the inference file ``source`` against ``model``'s contract (no target); store or quarantine it."""
    return observe_file(workspace().data(model), config, source)


@store_task("label-file", task_run_name="label-{source}")
def label_one(model: str, config: ModelConfig, source: str) -> IngestOutcome:
    """Check the label file ``source`` whole; keep it for joining, or quarantine it whole."""
    return label_file(workspace().data(model), config, source)


@store_task("join-labels")
def join_waiting_labels(model: str, config: ModelConfig) -> JoinReport:
    """Join every waiting label whose inference row is stored into a new labelled batch; expire the overdue."""
    report = join_labels(workspace().data(model), config)
    print(f"{model}: {report.joined_rows} label(s) joined, {report.pending_rows} waiting for their rows")
    return report


@task(name="describe-observed", cache_policy=NO_CACHE)
def observe_events(model: str, outcomes: list[IngestOutcome]) -> list[events.Event]:
    """One ``data.observed`` or ``data.rejected`` event per inference file."""
    return [_observed(model, o) if o.accepted is not None else rejected_event(model, o) for o in outcomes]


def _observed(model: str, outcome: IngestOutcome) -> events.Event:
    batch = outcome.accepted
    if batch is None:
        raise ValueError("an accepted outcome is needed")
    return events.data_observed(
        model=model,
        batch_id=batch.batch_id,
        sha256=batch.sha256,
        rows=batch.rows,
        time_min=batch.time_min,
        time_max=batch.time_max,
        source=batch.source,
    )


@task(name="describe-labels", cache_policy=NO_CACHE)
def label_events(model: str, outcomes: list[IngestOutcome]) -> list[events.Event]:
    """A ``data.rejected`` event per refused label file (accepted files are announced when they join)."""
    return [rejected_event(model, o) for o in outcomes if o.accepted is None]


@task(name="describe-join", cache_policy=NO_CACHE)
def join_events(model: str, report: JoinReport) -> list[events.Event]:
    """``labels.joined`` for each unannounced joined batch, naming the open traffic incident, if any.

    Besides this run's batch, a batch whose event an interrupted run never sent is announced now.
    """
    if not report.unannounced:
        return []
    waiting = waiting_for_labels(workspace().incidents(model).read())
    return [_joined(model, batch, report.pending_rows, waiting) for batch in report.unannounced]


def _joined(model: str, batch: BatchRecord, pending_rows: int, waiting: str | None) -> events.Event:
    lag = batch.lineage.get("label_lag_seconds", {})
    return events.labels_joined(
        model=model,
        batch_id=batch.batch_id,
        rows=batch.rows,
        label_files=[f["batch_id"] for f in batch.lineage.get("label_files", [])],
        inference_batches=list(batch.lineage.get("inference_batches", [])),
        pending_rows=pending_rows,
        lag_median_seconds=_finite(lag.get("median")),
        lag_max_seconds=_finite(lag.get("max")),
        waiting_incident=waiting,
    )


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


@store_task("mark-joins-announced")
def mark_joins_announced(model: str, report: JoinReport) -> None:
    """Record that the joined batches' ``labels.joined`` events were sent (call after emitting them)."""
    mark_announced(workspace().data(model), [b.batch_id for b in report.unannounced])


@task(name="publish-file-report", cache_policy=NO_CACHE)
def publish_file_report(model: str, kind: str, outcomes: list[IngestOutcome], joined: JoinReport) -> IngestReport:
    """Table artifact: one row per file, plus the join; returns the files' summary."""
    rows = [
        {
            "file": str(o.source),
            "result": "accepted" if o.ok else ("quarantined" if o.quarantined else "refused"),
            "batch_id": o.accepted.batch_id if o.accepted else "",
            "rows": o.accepted.rows if o.accepted else 0,
            "detail": str(o.error) if o.error else "",
        }
        for o in outcomes
    ]
    rows.append(
        {
            "file": "(join)",
            "result": joined.summary,
            "batch_id": joined.batch.batch_id if joined.batch else "",
            "rows": joined.joined_rows,
            "detail": f"label lag {joined.lag.text}" if joined.lag else "",
        }
    )
    create_table_artifact(rows, key=artifact_key(kind, model), description=f"{kind} files for {model}")
    return IngestReport.of(outcomes)
