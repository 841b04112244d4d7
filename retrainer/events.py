"""The event vocabulary shared by flows, triggers, the webhook receiver and tests.

Every event is emitted on the resource ``retrainer.model.<name>``; numbers travel in the payload,
because Prefect resource labels must be strings. This module is Prefect-free: it only names and
shapes events; ``tasks.emit`` (flows) and ``deployments.event_sink`` (the webhook receiver) hand them to Prefect.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

DATA_ARRIVED = "retrainer.data.arrived"
DATA_REJECTED = "retrainer.data.rejected"
DRIFT_DETECTED = "retrainer.drift.detected"
PERFORMANCE_DEGRADED = "retrainer.performance.degraded"
MODEL_PROMOTED = "retrainer.model.promoted"
MODEL_REJECTED = "retrainer.model.rejected"
MODEL_ROLLED_BACK = "retrainer.model.rolled_back"

ALL_EVENTS = (
    DATA_ARRIVED,
    DATA_REJECTED,
    DRIFT_DETECTED,
    PERFORMANCE_DEGRADED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_ROLLED_BACK,
)

# Resource label of ``data.arrived`` that tells the deployment triggers what the new data starts:
# files that landed are ingested; an accepted batch is monitored, or retrained on directly.
NEW_DATA_ACTION = "retrainer.on_new_data"
INGEST, MONITOR, RETRAIN = "ingest", "monitor", "retrain"

# How many of the most drifted columns a drift event carries.
TOP_COLUMNS = 5

_NAMESPACE = uuid.UUID("5b0c0f3e-6a53-4d53-9a8e-6f1d2a7c9e10")


def model_resource_id(model: str) -> str:
    """Return the resource id every event about ``model`` is emitted on."""
    return f"retrainer.model.{model}"


def event_id_for(key: str) -> uuid.UUID:
    """Return a deterministic event id for a stable ``key`` so that repeats collapse on the server."""
    return uuid.uuid5(_NAMESPACE, key)


@dataclass(frozen=True)
class Event:
    """One retrainer event, ready to hand to any emitter.

    Attributes:
        name: One of the names in :data:`ALL_EVENTS`.
        model: Model the event is about; becomes the resource.
        payload: JSON-serialisable details (numbers allowed).
        key: Stable de-duplication key; the event id is derived from it.
        related: Extra related resources, each a dict of string labels.
        labels: Extra string labels of the model resource, for triggers to match on.
    """

    name: str
    model: str
    payload: dict[str, Any]
    key: str
    related: list[dict[str, str]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> uuid.UUID:
        """Deterministic id derived from :attr:`key`."""
        return event_id_for(f"{self.name}:{self.key}")

    @property
    def resource(self) -> dict[str, str]:
        """Prefect resource labels."""
        return {
            "prefect.resource.id": model_resource_id(self.model),
            "prefect.resource.name": self.model,
            "retrainer.model": self.model,
            **self.labels,
        }


def incident_resource(key: str) -> dict[str, str]:
    """The related resource naming the drift incident an event is about."""
    return {"prefect.resource.id": f"retrainer.incident.{key}", "prefect.resource.role": "incident"}


def source_resource(source: str) -> dict[str, str]:
    """The related resource naming who sent a message from outside (the webhook)."""
    return {"prefect.resource.id": f"retrainer.source.{source}", "prefect.resource.role": "source"}


def drift_payload(
    *,
    incident_key: str,
    reason: str,
    drift_share: float,
    drift_detected: bool,
    top_columns: list[dict[str, Any]],
    prediction_drift: float | None,
    report_uri: str | None,
    champion_version: str | None,
    batch_ids: list[str],
    check_id: str,
) -> dict[str, Any]:
    """The payload of ``drift.detected`` (and the base of ``performance.degraded``), wherever it is emitted.

    Args:
        incident_key: The incident the event opens; the retrain it starts answers it.
        reason: Sentence shown as the retrain's reason.
        drift_share: Share of drifted features.
        drift_detected: The dataset verdict.
        top_columns: The most drifted columns, each ``{"column", "score", "method"}``.
        prediction_drift: Drift score of the champion's predictions, when measured.
        report_uri: Where the drift report is, if anywhere.
        champion_version: The champion the drift was measured against, when known.
        batch_ids: The checked window's batches (empty for outside alerts).
        check_id: The check (or outside alert) that opened the incident.
    """
    return {
        "incident_key": incident_key,
        "reason": reason,
        "drift_share": drift_share,
        "drift_detected": drift_detected,
        "top_columns": top_columns,
        "prediction_drift": prediction_drift,
        "report_uri": report_uri,
        "champion_version": champion_version,
        "batch_ids": batch_ids,
        "check_id": check_id,
    }
