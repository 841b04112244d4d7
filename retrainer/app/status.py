"""``retrainer status``: what is serving, on what data, and the latest decisions. No Prefect needed."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from retrainer.data.traffic import traffic_summary
from retrainer.model.registry import CHALLENGER, CHAMPION, RegistryReader, VersionInfo
from retrainer.monitor.incidents import IncidentState
from retrainer.workspace import Workspace

if TYPE_CHECKING:
    from retrainer.cycle.decide import Reconciliation


def model_status(workspace: Workspace, model: str, decisions: int = 10) -> dict[str, Any]:
    """Return the model's status as a JSON-ready dict.

    Keys: ``model``, ``tracking_uri``, ``champion`` (``version``, ``model_uri``, ``version_uri``,
    ``run_id``, ``training_batches``, ``holdout_batches``, ``holdout_metrics``; or ``None`` before the
    first promotion), ``challenger`` (same shape or ``None``), ``batches`` (accepted count and ids),
    ``quarantined`` (count), ``drift`` (``last_check``: id, time, champion version, batches, alarming,
    drift share, or ``None``; ``open_incident``: key, opened at, retrain started at, or ``None``;
    ``last_closed_incident``: key, closed at, resolution, or ``None``;
    ``retrain_in_flight_since``), ``decisions`` (newest first: version, outcome, reasons, at, trigger),
    ``traffic`` (inference batches and rows, labelled rows and share, labels waiting and expired,
    the latest join's label lag in seconds, quarantined traffic and label files; see
    ``retrainer.data.traffic.traffic_summary``),
    ``repaired`` (what reconciling an interrupted promotion or rollback repaired first, one line each)
    and ``unannounced`` (versions whose change is recorded but whose event the next retrain or
    rollback emits).
    """
    workspace.model(model)
    history = workspace.history(model)
    repaired = _reconcile(workspace, model) if history.intents() else None
    registry = workspace.registry.reader()
    store = workspace.store(model)
    manifest = store.manifest()
    entries = list(reversed(history.entries()))[:decisions]
    return {
        "model": model,
        "tracking_uri": workspace.registry.tracking_uri,
        "champion": _version_status(registry, registry.alias(model, CHAMPION), CHAMPION),
        "challenger": _version_status(registry, registry.alias(model, CHALLENGER), CHALLENGER),
        "batches": {"accepted": len(manifest.batches), "ids": [b.batch_id for b in manifest.batches]},
        "quarantined": store.quarantined(),
        "drift": _drift_status(workspace.incidents(model).read()),
        "traffic": traffic_summary(workspace.data(model)),
        "decisions": [
            {
                k: v
                for k, v in asdict(e).items()
                if k in {"at", "action", "version", "outcome", "reasons", "replaced", "trigger"}
            }
            for e in entries
        ],
        "repaired": repaired.notes if repaired else [],
        "unannounced": [intent.version for intent in repaired.unannounced] if repaired else [],
    }


def _reconcile(workspace: Workspace, model: str) -> Reconciliation:
    # Imported here: only a half-done change costs the decision code and a full registry (MLflow).
    from retrainer.cycle.decide import reconcile

    return reconcile(workspace.registry, workspace.history(model), model)


def _version_status(registry: RegistryReader, found: VersionInfo | None, alias: str) -> dict[str, Any] | None:
    if found is None:
        return None
    run_tags, run_metrics = registry.run_details(found.run_id) if found.run_id else ({}, {})
    holdout = {k.removeprefix("holdout_"): v for k, v in run_metrics.items() if k.startswith("holdout_")}
    return {
        "version": found.version,
        "model_uri": f"models:/{found.model}@{alias}",
        "version_uri": found.uri,
        "run_id": found.run_id,
        "outcome": found.tags.get("retrainer.outcome"),
        "training_batches": _split_ids(run_tags.get("retrainer.training_batches")),
        "holdout_batches": _split_ids(run_tags.get("retrainer.holdout_batches")),
        "holdout_metrics": holdout,
    }


def _drift_status(state: IncidentState) -> dict[str, Any]:
    last = state.checks[-1] if state.checks else None
    incident = state.open
    closed = state.closed[-1] if state.closed else None
    return {
        "last_check": asdict(last) if last else None,
        "last_closed_incident": (
            {"key": closed.key, "closed_at": closed.closed_at, "resolution": closed.resolution} if closed else None
        ),
        "open_incident": (
            {"key": incident.key, "opened_at": incident.opened_at, "retrain_started_at": incident.retrain_started_at}
            if incident
            else None
        ),
        "retrain_in_flight_since": state.retrain_in_flight_since,
    }


def _split_ids(value: str | None) -> list[str]:
    return [part for part in (value or "").split(",") if part]


def render_text(status: dict[str, Any]) -> str:
    """Human-readable status."""
    lines = [*status["repaired"], f"model        {status['model']}", f"tracking     {status['tracking_uri']}"]
    champion = status["champion"]
    if champion is None:
        lines.append("champion     none yet (the first retrain that meets the floors becomes champion)")
    else:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(champion["holdout_metrics"].items()))
        lines += [
            f"champion     v{champion['version']}  {champion['model_uri']}  ({champion['version_uri']})",
            f"  trained on {len(champion['training_batches'])} batch(es): {', '.join(champion['training_batches'])}",
            f"  holdout    {', '.join(champion['holdout_batches'])}  {metrics}",
        ]
    lines.append(f"batches      {status['batches']['accepted']} accepted, {status['quarantined']} quarantined")
    lines.append(_drift_line(status["drift"]))
    if status["traffic"]["inference_batches"] or status["traffic"]["pending_labels"]:
        lines.append(_traffic_line(status["traffic"]))
    lines.append("decisions (newest first):")
    for decision in status["decisions"] or []:
        reason = decision["trigger"].get("reason", "")
        lines.append(f"  {decision['at']}  v{decision['version']:<4} {decision['outcome']:<11} {reason}")
        lines += [f"      - {reason}" for reason in decision["reasons"]]
    if not status["decisions"]:
        lines.append("  none yet")
    return "\n".join(lines)


def _drift_line(drift: dict[str, Any]) -> str:
    last, incident, closed = drift["last_check"], drift["open_incident"], drift["last_closed_incident"]
    if last is None and closed is not None:
        return f"drift        no check since incident {closed['key']} closed ({closed['resolution']})"
    if last is None:
        return "drift        not checked yet"
    seen = "alarming" if last["alarming"] else "calm"
    line = f"drift        last check {last['at']:%Y-%m-%d %H:%M} {seen} (share {last['drift_share']:.0%})"
    return line + (f"; open incident {incident['key']}" if incident else "; no open incident")


def _traffic_line(traffic: dict[str, Any]) -> str:
    share = traffic["labelled_share"]
    lag = traffic["label_lag_seconds"]
    line = (
        f"traffic      {traffic['inference_batches']} inference batch(es), {traffic['inference_rows']:,} rows,"
        f" {share:.0%} labelled"
        if share is not None
        else "traffic      no inference batch yet"
    )
    line += f"; {traffic['pending_labels']:,} label(s) waiting for their rows"
    if lag and lag.get("median") is not None:
        line += f"; label lag median {lag['median'] / 86_400:.1f} d"
    return line


def render_json(status: dict[str, Any]) -> str:
    """Status as one JSON document."""
    return json.dumps(status, indent=2, sort_keys=True, default=str)
