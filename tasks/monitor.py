"""Monitor tasks: choose the window, check it against the champion's reference, judge the incident."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from retrainer import events
from retrainer.config import ModelConfig
from retrainer.model.registry import VersionInfo
from retrainer.monitor.announce import incident_events
from retrainer.monitor.check import CheckResult, DriftCheck, check_champion, replaced_champions
from retrainer.monitor.incidents import Assessment, assess
from retrainer.monitor.performance import BASELINE_CHAMPIONS
from retrainer.monitor.record import check_markdown, log_check
from retrainer.monitor.reference import champion_reference
from retrainer.monitor.window import Window, next_window, traffic_window
from tasks._common import artifact_key, registry_task, store_task, workspace


@store_task("choose-window")
def choose_window(model: str, config: ModelConfig, batch_id: str | None, kind: str = "labelled") -> Window | None:
    """The batches to check (``batch_id`` alone when given); ``None`` when nothing is new.

    ``kind`` ``inference`` checks the model's inference traffic instead of its labelled batches.
    """
    ws = workspace()
    if kind == "inference":
        return traffic_window(ws.data(model).traffic, config.drift.window, batch_id)
    return next_window(ws.store(model), ws.incidents(model), config.drift.window, batch_id)


@registry_task("load-reference")
def load_reference(model: str, config: ModelConfig, champion: VersionInfo) -> pl.DataFrame:
    """The champion's reference sample; built from its recorded training batches if it has none yet.

    Versions registered by retrainer store their sample when registered; a champion registered
    otherwise (or before drift monitoring) gets one on its first check, stored on its run.
    """
    ws = workspace()
    return champion_reference(ws.store(model), ws.registry, config, champion)


@registry_task("read-earlier-champions")
def earlier_champions(model: str, champion: VersionInfo) -> list[VersionInfo]:
    """The champions ``champion`` replaced (``BASELINE_CHAMPIONS`` - 1 at most): their holdout figures join the bar."""
    ws = workspace()
    return replaced_champions(ws.registry, ws.history(model), champion, BASELINE_CHAMPIONS - 1)


@task(name="check-drift", cache_policy=NO_CACHE)
def check_drift(
    model: str,
    config: ModelConfig,
    champion: VersionInfo,
    reference: pl.DataFrame,
    window: Window,
    earlier: list[VersionInfo],
) -> CheckResult:
    """Read the window once, predict it with the champion, and compare both with the reference.

    The champion's labelled performance is judged against the best holdout figure of it and the
    ``earlier`` champions (see ``retrainer.monitor.performance.performance_baseline``).
    """
    ws = workspace()
    store = ws.store(model) if window.labelled else ws.data(model).traffic
    return check_champion(store, ws.registry, config, champion, reference, window, None, earlier)


@registry_task("record-check")
def record_check(result: CheckResult) -> str:
    """Log the check as an MLflow monitoring run with the Evidently HTML and JSON; return the HTML's URI."""
    return log_check(workspace().registry, result)


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
