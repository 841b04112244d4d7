"""Monitor tasks: choose the window, check it against the champion's reference, judge the incident."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from retrainer import events
from retrainer.config import ModelConfig
from retrainer.data.contract import schema_for
from retrainer.data.features import FeatureSpec
from retrainer.errors import RegistryError
from retrainer.model.registry import VersionInfo
from retrainer.monitor.check import (
    REFERENCE_ARTIFACT,
    CheckResult,
    DriftCheck,
    Window,
    check_window,
    holdout_figure,
    incident_events,
    reference_batches,
    reference_rows,
    reference_sample,
    select_window,
)
from retrainer.monitor.incidents import Assessment, assess
from retrainer.monitor.record import check_markdown
from tasks._common import artifact_key, registry_task, store_reference, workspace


@task(name="choose-window")
def choose_window(model: str, config: ModelConfig, batch_id: str | None) -> Window | None:
    """The batches to check (``batch_id`` alone when given); ``None`` when nothing is new."""
    ws = workspace()
    last_checked = ws.incidents(model).read().last_checked_batch
    return select_window(ws.store(model).manifest(), config.drift.window, last_checked, batch_id)


@registry_task("load-reference")
def load_reference(model: str, config: ModelConfig, champion: VersionInfo) -> pl.DataFrame:
    """The champion's reference sample; built from its recorded training batches if it has none yet.

    Versions registered by retrainer store their sample when registered; a champion registered
    otherwise (or before drift monitoring) gets one on its first check, stored on its run.
    """
    if champion.run_id is None:
        raise RegistryError(f"{model} v{champion.version} has no tracking run: no reference sample")
    registry = workspace().registry
    if not registry.has_artifact(champion.run_id, REFERENCE_ARTIFACT):
        return _bootstrap_reference(model, config, champion, champion.run_id)
    with tempfile.TemporaryDirectory() as scratch:
        return pl.read_parquet(registry.download(champion.run_id, REFERENCE_ARTIFACT, Path(scratch)))


def _bootstrap_reference(model: str, config: ModelConfig, champion: VersionInfo, run_id: str) -> pl.DataFrame:
    ws = workspace()
    store = ws.store(model)
    manifest = store.manifest()
    batches = reference_batches(manifest, ws.registry.run_details(run_id)[0], champion.version)
    schema = schema_for(config, [], manifest.features)
    rows = reference_rows(store.read(batches, [*schema.features, schema.target]), config.drift)
    predictions = ws.registry.predict(model, champion.version, rows.select(schema.features).to_pandas())
    sample = reference_sample(rows, FeatureSpec.build(config, schema), predictions)
    store_reference(ws.registry, run_id, sample)
    return sample


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    model: str, config: ModelConfig, champion: VersionInfo, reference: pl.DataFrame, window: Window
) -> CheckResult:
    """Read the window once, predict it with the champion, and compare both with the reference."""
    ws = workspace()
    store = ws.store(model)
    schema = schema_for(config, [], store.manifest().features)
    stored = set().union(*(b.columns for b in window.batches))
    current = store.read(window.batches, [c for c in [*schema.features, schema.target] if c in stored])
    predictions = ws.registry.predict(model, champion.version, current.select(schema.features).to_pandas())
    figure = holdout_figure(champion.tags, config.primary_metric)
    return check_window(model, config, schema, champion.version, reference, window, current, predictions, figure)


@registry_task("record-check")
def record_check(result: CheckResult) -> str:
    """Log the check as an MLflow monitoring run with the Evidently HTML and JSON; return the HTML's URI."""
    check, registry = result.check, workspace().registry
    params = {"engine": check.engine, "reference_rows": check.reference_rows, "current_rows": check.current_rows}
    tags = {
        "retrainer.champion_version": check.champion_version,
        "retrainer.batch_ids": ",".join(check.batch_ids),
        "retrainer.check_id": check.check_id,
    }
    run_id = registry.start_run(check.model, check.check_id, params, tags, purpose="monitoring")
    registry.log_metrics(run_id, _check_metrics(check))
    registry.log_dict(run_id, check.summary(), "drift/summary.json")
    registry.log_text(run_id, result.report.snapshot_json, "drift/report.json")
    report_uri = registry.log_text(run_id, result.report.html, "drift/report.html")
    registry.end_run(run_id)
    return report_uri


def _check_metrics(check: DriftCheck) -> dict[str, float]:
    metrics = {"drift_share": check.drift_share, "drifted_columns": float(sum(c.drifted for c in check.columns))}
    metrics.update({f"drift_score.{c.column}": c.score for c in check.columns if c.score is not None})
    if check.prediction is not None and check.prediction.score is not None:
        metrics["prediction_drift_score"] = check.prediction.score
    if check.performance is not None:
        metrics[f"window_{check.performance.metric}"] = check.performance.window
    return metrics


@task(name="assess-incident")
def assess_incident(model: str, config: ModelConfig, check: DriftCheck) -> Assessment:
    """Apply the incident rules to the check and persist the model's incident state."""
    policy, now = config.drift.incident, datetime.now(UTC)
    return workspace().incidents(model).update(lambda state: assess(state, check.record(), policy, now))


@task(name="publish-check", cache_policy=NO_CACHE)
def publish_check(check: DriftCheck, assessment: Assessment, report_uri: str) -> None:
    """Markdown record of the check and a link to the Evidently report in the Prefect UI."""
    message = f"{check.model}: {assessment.action.value} — {assessment.reason}"
    create_markdown_artifact(
        check_markdown(check, assessment, report_uri), key=artifact_key("drift", check.model), description=message
    )
    create_link_artifact(
        report_uri,
        link_text=f"Evidently drift report ({check.check_id})",
        key=artifact_key("drift-report", check.model),
        description="Evidently HTML report stored with the MLflow monitoring run",
    )


@task(name="describe-incident", cache_policy=NO_CACHE)
def incident_announcements(check: DriftCheck, assessment: Assessment, report_uri: str) -> list[events.Event]:
    """``drift.detected`` / ``performance.degraded`` when the check opened an incident; nothing otherwise."""
    return incident_events(check, assessment, report_uri)
