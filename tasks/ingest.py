"""Ingest tasks: check and store one file; report the batch's fate."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from retrainer import events
from retrainer.config import ModelConfig
from retrainer.data.ingest import IngestOutcome, IngestReport, ingest_file
from tasks._common import artifact_key, store_task, workspace


@store_task("ingest-file", task_run_name="ingest-{source}")
def ingest_one(model: str, config: ModelConfig, source: str) -> IngestOutcome:
    """Check ``source`` against ``model``'s contract; store it or quarantine it."""
    return ingest_file(workspace().store(model), config, source)


@task(name="describe-ingest", cache_policy=NO_CACHE)
def ingest_events(model: str, config: ModelConfig, outcomes: list[IngestOutcome]) -> list[events.Event]:
    """One ``data.arrived`` or ``data.rejected`` event per file.

    ``data.arrived`` carries the label ``retrainer.on_new_data`` (``monitor`` or ``retrain``, from the
    model's automation config) so that one static trigger per deployment serves every model.
    """
    retrain_directly = config.automation.retrain_on_new_data
    return [_event(model, outcome, retrain_directly) for outcome in outcomes]


def _event(model: str, outcome: IngestOutcome, retrain_directly: bool) -> events.Event:
    if outcome.accepted is not None:
        batch = outcome.accepted
        return events.data_arrived(
            model=model,
            batch_id=batch.batch_id,
            sha256=batch.sha256,
            rows=batch.rows,
            time_min=batch.time_min,
            time_max=batch.time_max,
            source=batch.source,
            retrain_directly=retrain_directly,
        )
    return rejected_event(model, outcome)


def rejected_event(model: str, outcome: IngestOutcome) -> events.Event:
    """``data.rejected`` for a file that was refused, naming every broken rule and its quarantined copy."""
    return events.data_rejected(
        model=model,
        source=outcome.source,
        violations=outcome.error.violations if outcome.error else [],
        quarantined=outcome.quarantined,
    )


@task(name="publish-ingest-report", cache_policy=NO_CACHE)
def publish_ingest_report(model: str, outcomes: list[IngestOutcome]) -> IngestReport:
    """Table artifact: one row per file with its batch id or its rejection reasons; returns the summary."""
    rows = [
        {
            "file": str(o.source),
            "result": _result(o),
            "batch_id": o.accepted.batch_id if o.accepted else "",
            "rows": o.accepted.rows if o.accepted else 0,
            "detail": str(o.error) if o.error else "",
        }
        for o in outcomes
    ]
    create_table_artifact(rows, key=artifact_key("ingest", model), description=f"Ingested files for {model}")
    return IngestReport.of(outcomes)


def _result(outcome: IngestOutcome) -> str:
    if outcome.ok:
        return "accepted"
    if outcome.missing:
        return "missing"
    return "quarantined" if outcome.quarantined else "refused"
