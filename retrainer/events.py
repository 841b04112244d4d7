"""The event vocabulary shared by flows, triggers, the webhook receiver and tests.

Every event is emitted on the resource ``retrainer.model.<name>``; numbers travel in the payload,
because Prefect resource labels must be strings. This module is Prefect-free: it only names and
shapes events; ``tasks.emit`` (flows) and ``deployments.event_sink`` (the webhook receiver) hand them to Prefect.

Each event has one constructor here that decides its name, resource labels, related resources,
payload and de-duplication key: :func:`data_arrived`, :func:`files_landed`, :func:`data_observed`,
:func:`labels_joined`, :func:`data_rejected`, :func:`drift_detected`, :func:`performance_degraded`,
:func:`model_decided` and :func:`rolled_back`.
Producers call them; triggers match on :func:`model_resources_match` and the name constants below.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from retrainer.errors import Violation

DATA_ARRIVED = "retrainer.data.arrived"
DATA_OBSERVED = "retrainer.data.observed"
LABELS_JOINED = "retrainer.labels.joined"
DATA_REJECTED = "retrainer.data.rejected"
DRIFT_DETECTED = "retrainer.drift.detected"
PERFORMANCE_DEGRADED = "retrainer.performance.degraded"
MODEL_PROMOTED = "retrainer.model.promoted"
MODEL_REJECTED = "retrainer.model.rejected"
MODEL_ROLLED_BACK = "retrainer.model.rolled_back"

ALL_EVENTS = (
    DATA_ARRIVED,
    DATA_OBSERVED,
    LABELS_JOINED,
    DATA_REJECTED,
    DRIFT_DETECTED,
    PERFORMANCE_DEGRADED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_ROLLED_BACK,
)

# The events that open (or, from outside, raise) a drift incident: what a retrain answers.
INCIDENT_EVENTS = (DRIFT_DETECTED, PERFORMANCE_DEGRADED)

# Resource label of ``data.arrived`` that tells the deployment triggers what the new data starts:
# files that landed are ingested (labelled files), observed (inference traffic) or labelled (label
# files); an accepted batch is monitored, or retrained on directly. Joined labels (``labels.joined``)
# are monitored, or retrained on when a retrain waits for them.
NEW_DATA_ACTION = "retrainer.on_new_data"
INGEST, OBSERVE, LABEL, MONITOR, RETRAIN = "ingest", "observe", "label", "monitor", "retrain"
# What a data notice's ``kind`` names, and the action its landed files start.
FILE_KINDS = {"labelled": INGEST, "inference": OBSERVE, "labels": LABEL}

# How many of the most drifted columns a drift event carries.
TOP_COLUMNS = 5

# The retrain outcome announced as ``model.promoted`` (``retrainer.cycle.decide.Outcome.PROMOTED``);
# every other outcome is announced as ``model.rejected``.
PROMOTED_OUTCOME = "Promoted"

_NAMESPACE = uuid.UUID("5b0c0f3e-6a53-4d53-9a8e-6f1d2a7c9e10")


def model_resource_id(model: str) -> str:
    """Return the resource id every event about ``model`` is emitted on."""
    return f"retrainer.model.{model}"


# The resource id pattern a trigger matches to hear the events of every model.
MODEL_RESOURCE_PATTERN = model_resource_id("*")


def model_resources_match() -> dict[str, str]:
    """Return a fresh trigger ``match`` that selects the events of every model (``retrainer.model.*``)."""
    return {"prefect.resource.id": MODEL_RESOURCE_PATTERN}


def event_id_for(key: str) -> uuid.UUID:
    """Return a deterministic event id for a stable ``key`` so that repeats collapse on the server."""
    return uuid.uuid5(_NAMESPACE, key)


@dataclass(frozen=True)
class Event:
    """One retrainer event, ready to hand to any emitter.

    Build it with the constructor of its name (:func:`data_arrived` and the others), never by hand.

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


# --- what the constructors read from the core's own types (matched by shape: this module imports none) ---


class ScoredColumn(Protocol):
    """A drifted column as a drift event lists it (the monitor's ``ColumnDrift``, an alert's ``DriftedColumn``)."""

    @property
    def column(self) -> str:
        """Column name."""

    @property
    def score(self) -> float | None:
        """The drift method's score, when there is one."""

    @property
    def method(self) -> str | None:
        """The drift method (or rule) that judged the column, when known."""


class MeasuredPerformance(Protocol):
    """The champion's labelled performance on a window (the monitor's ``Performance``)."""

    @property
    def metric(self) -> str:
        """Name of the primary metric."""

    @property
    def window(self) -> float:
        """The metric on the window's labelled rows."""

    @property
    def holdout(self) -> float | None:
        """The champion's own holdout figure, when it was judged."""

    @property
    def change(self) -> float | None:
        """Sign-adjusted change from the holdout figure (negative is worse)."""

    @property
    def tolerance(self) -> float:
        """How far the metric may fall before it counts as degraded."""

    @property
    def degraded(self) -> bool:
        """The verdict."""

    @property
    def rows(self) -> int:
        """Labelled rows in the window."""

    @property
    def min_rows(self) -> int:
        """Labelled rows needed before the window is judged."""


class RetrainTrigger(Protocol):
    """Why a retrain ran (``retrainer.cycle.plan.Trigger``), as a decision event records it."""

    @property
    def reason(self) -> str:
        """Free-text reason."""

    @property
    def event_id(self) -> str | None:
        """Id of the triggering event, if any."""

    @property
    def incident_key(self) -> str | None:
        """The incident the retrain answers, if any."""

    @property
    def event_name(self) -> str | None:
        """Name of the triggering event, if any."""

    @property
    def event_payload(self) -> Mapping[str, Any]:
        """Payload of the triggering event (empty without one)."""

    @property
    def flow_run_id(self) -> str | None:
        """The Prefect flow run of the retrain."""

    @property
    def actor(self) -> str:
        """Who (which user and host) ran it."""

    @property
    def answers(self) -> int:
        """How many alerts the retrain answers (its own trigger and those coalesced into it)."""

    @property
    def answers_sample(self) -> Sequence[str]:
        """The first few incident keys it answers."""


@dataclass(frozen=True, kw_only=True)
class DriftEvidence:
    """What a drift check (or an outside alert) measured; the body of both incident events.

    Attributes:
        check_id: The check (or outside alert) that opened the incident.
        drift_share: Share of drifted features.
        drift_detected: The dataset verdict.
        top_columns: The drifted columns, most drifted first; an event carries the first :data:`TOP_COLUMNS`.
        prediction_drift: Drift score of the champion's predictions, when measured.
        report_uri: Where the drift report is, if anywhere.
        champion_version: The champion the drift was measured against, when known.
        batch_ids: The checked window's batches (empty for outside alerts).
        window_kind: ``labelled`` or ``inference`` (unlabelled traffic: no performance was measured).
    """

    check_id: str
    drift_share: float
    drift_detected: bool
    top_columns: Sequence[ScoredColumn] = ()
    prediction_drift: float | None = None
    report_uri: str | None = None
    champion_version: str | None = None
    batch_ids: Sequence[str] = ()
    window_kind: str = "labelled"


# --- one constructor per event ---


def data_arrived(
    *,
    model: str,
    batch_id: str,
    sha256: str,
    rows: int,
    time_min: str | None,
    time_max: str | None,
    source: str,
    retrain_directly: bool,
) -> Event:
    """``data.arrived`` for a batch the ingest accepted into ``model``'s store.

    The resource carries :data:`NEW_DATA_ACTION` = ``retrain`` when ``retrain_directly`` (the retrain
    deployment runs on the batch), ``monitor`` otherwise (the monitor deployment checks it). Keyed by the
    batch, so announcing the same batch again yields the same event id.

    Args:
        model: The model the batch belongs to.
        batch_id: The accepted batch's id.
        sha256: Content hash of the batch.
        rows: Row count.
        time_min: Earliest event time in the batch, if it has a time column.
        time_max: Latest event time in the batch, if it has a time column.
        source: The file the batch came from.
        retrain_directly: The model's ``automation.retrain_on_new_data``.

    Returns:
        The event; payload keys ``batch_id``, ``sha256``, ``rows``, ``time_min``, ``time_max``, ``source``.
    """
    payload = _batch_payload(batch_id, sha256, rows, time_min, time_max, source)
    labels = {NEW_DATA_ACTION: RETRAIN if retrain_directly else MONITOR}
    return Event(DATA_ARRIVED, model, payload, key=f"{model}:{batch_id}", labels=labels)


def _batch_payload(
    batch_id: str, sha256: str, rows: int, time_min: str | None, time_max: str | None, source: str
) -> dict[str, Any]:
    """What an event about a stored batch says of it (``data.arrived``, ``data.observed``)."""
    return {
        "batch_id": batch_id,
        "sha256": sha256,
        "rows": rows,
        "time_min": time_min,
        "time_max": time_max,
        "source": source,
    }


def files_landed(*, model: str, files: Sequence[str], source: str, notice_id: str, kind: str = "labelled") -> Event:
    """``data.arrived`` for files an outside system says have landed, not yet checked against the contract.

    The resource carries :data:`NEW_DATA_ACTION` by ``kind`` (:data:`FILE_KINDS`): ``ingest`` for
    labelled files (the ingest deployment runs on them and announces each accepted batch with
    :func:`data_arrived`), ``observe`` for inference traffic, ``label`` for label files. Related to the
    sender as a source resource; keyed by sender and notice, so a re-sent notice yields the same event id.

    Args:
        model: The model the files are for.
        files: Absolute paths of the files, in the notice's order.
        source: Who sent the notice.
        notice_id: The notice's id (the sender's, or the digest of its content).
        kind: ``labelled``, ``inference`` or ``labels``.

    Returns:
        The event; payload keys ``files``, ``source``, ``notice_id``, ``kind``.
    """
    payload = {"files": list(files), "source": source, "notice_id": notice_id, "kind": kind}
    return Event(
        DATA_ARRIVED,
        model,
        payload,
        key=f"{model}:notice:{source}:{notice_id}",
        related=[source_resource(source)],
        labels={NEW_DATA_ACTION: FILE_KINDS[kind]},
    )


def data_observed(
    *, model: str, batch_id: str, sha256: str, rows: int, time_min: str | None, time_max: str | None, source: str
) -> Event:
    """``data.observed`` for an unlabelled inference batch stored in ``model``'s traffic.

    The monitor deployment checks the batch for drift. Keyed by the batch.

    Returns:
        The event; payload keys ``batch_id``, ``sha256``, ``rows``, ``time_min``, ``time_max``,
        ``source`` and ``kind`` (``inference``).
    """
    payload = {**_batch_payload(batch_id, sha256, rows, time_min, time_max, source), "kind": "inference"}
    return Event(DATA_OBSERVED, model, payload, key=f"{model}:observed:{batch_id}", labels={NEW_DATA_ACTION: MONITOR})


def labels_joined(
    *,
    model: str,
    batch_id: str,
    rows: int,
    label_files: Sequence[str],
    inference_batches: Sequence[str],
    pending_rows: int,
    lag_median_seconds: float | None,
    lag_max_seconds: float | None,
    waiting_incident: str | None,
) -> Event:
    """``labels.joined`` for late labels joined to their inference rows as a new labelled batch.

    The resource carries :data:`NEW_DATA_ACTION` = ``retrain`` when a retrain waits for labels to
    answer ``waiting_incident`` (the retrain deployment runs for it), ``monitor`` otherwise (the
    monitor judges the champion's performance on the joined rows). Keyed by the joined batch.

    Returns:
        The event; payload keys ``batch_id``, ``rows``, ``label_files``, ``inference_batches``,
        ``pending_rows``, ``lag_median_seconds``, ``lag_max_seconds`` and ``incident_key`` (the
        waiting incident, or None).
    """
    payload = {
        "batch_id": batch_id,
        "rows": rows,
        "label_files": list(label_files),
        "inference_batches": list(inference_batches),
        "pending_rows": pending_rows,
        "lag_median_seconds": lag_median_seconds,
        "lag_max_seconds": lag_max_seconds,
        "incident_key": waiting_incident,
    }
    related = [incident_resource(waiting_incident)] if waiting_incident else []
    action = RETRAIN if waiting_incident else MONITOR
    return Event(
        LABELS_JOINED,
        model,
        payload,
        key=f"{model}:joined:{batch_id}",
        related=related,
        labels={NEW_DATA_ACTION: action},
    )


# Bounds of a ``data.rejected`` payload: 20 × 500 characters keeps it near 10 KB, under Prefect's limit.
MAX_VIOLATIONS = 20
MAX_VIOLATION_CHARS = 500


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


def data_rejected(*, model: str, source: str, violations: Sequence[Violation], quarantined: str | None) -> Event:
    """``data.rejected`` for a file that broke ``model``'s data contract (or could not be read).

    Keyed by the file and its quarantined copy.

    Args:
        model: The model the file was for.
        source: The rejected file.
        violations: Every broken rule, each rendered against ``source`` in the payload.
        quarantined: Where the file was kept, or ``None`` when it could not be read.

    Returns:
        The event; payload keys ``source`` (str), ``violations`` (list of str), ``quarantined`` (str or None).
        The payload stays far below Prefect's event size limit whatever the file held: at most
        :data:`MAX_VIOLATIONS` violations (then one line counting the rest), each cut to
        :data:`MAX_VIOLATION_CHARS` characters; the quarantined reason file has them all.
    """
    rendered = [_cut(v.render(str(source)), MAX_VIOLATION_CHARS) for v in violations[:MAX_VIOLATIONS]]
    if len(violations) > MAX_VIOLATIONS:
        rendered.append(f"… and {len(violations) - MAX_VIOLATIONS} more violation(s)")
    payload = {
        "source": _cut(str(source), MAX_VIOLATION_CHARS),
        "violations": rendered,
        "quarantined": str(quarantined) if quarantined else None,
    }
    return Event(DATA_REJECTED, model, payload, key=f"{model}:{source}:{quarantined}")


def drift_detected(
    *, model: str, incident_key: str, reason: str, evidence: DriftEvidence, source: str | None = None
) -> Event:
    """``drift.detected`` for a newly opened drift incident; it starts a retrain.

    Related to the incident (and to ``source``, for an outside alert); keyed by the incident, so
    repeats collapse into one event.

    Args:
        model: The drifted model.
        incident_key: The incident the event opens; the retrain it starts answers it.
        reason: Sentence shown as the retrain's reason.
        evidence: What was measured; its dataset verdict must be drift.
        source: Who sent the alert, for drift reported from outside; ``None`` for the monitor's own.

    Returns:
        The event; payload as :func:`_drift_payload`.

    Raises:
        ValueError: ``evidence.drift_detected`` is false (there is no drift to announce).
    """
    if not evidence.drift_detected:
        raise ValueError(f"{incident_key}: the evidence shows no dataset drift; nothing to announce")
    related = [incident_resource(incident_key)]
    if source is not None:
        related.append(source_resource(source))
    payload = _incident_payload(incident_key, reason, evidence)
    return Event(DRIFT_DETECTED, model, payload, key=incident_key, related=related)


def performance_degraded(
    *, model: str, incident_key: str, reason: str, evidence: DriftEvidence, performance: MeasuredPerformance
) -> Event:
    """``performance.degraded`` for a newly opened incident whose labelled performance fell; it starts a retrain.

    Related to the incident; keyed by it, so repeats collapse (its id differs from the same incident's
    ``drift.detected``, whose name differs).

    Args:
        model: The model whose performance fell.
        incident_key: The incident the event opens.
        reason: Sentence shown as the retrain's reason.
        evidence: The drift the same check measured (drifted or not).
        performance: The labelled performance; its verdict must be degraded.

    Returns:
        The event; payload as :func:`_drift_payload` plus ``performance``: ``metric``, ``window``,
        ``holdout``, ``change``, ``tolerance``, ``degraded``, ``rows``, ``min_rows``.

    Raises:
        ValueError: ``performance.degraded`` is false.
    """
    if not performance.degraded:
        raise ValueError(f"{incident_key}: the performance is not degraded; nothing to announce")
    payload = {
        **_incident_payload(incident_key, reason, evidence),
        "performance": {
            "metric": performance.metric,
            "window": performance.window,
            "holdout": performance.holdout,
            "change": performance.change,
            "tolerance": performance.tolerance,
            "degraded": performance.degraded,
            "rows": performance.rows,
            "min_rows": performance.min_rows,
        },
    }
    return Event(PERFORMANCE_DEGRADED, model, payload, key=incident_key, related=[incident_resource(incident_key)])


def model_decided(
    *,
    model: str,
    version: str,
    outcome: str,
    champion_before: str | None,
    champion_after: str | None,
    reasons: Sequence[str],
    trigger: RetrainTrigger,
) -> Event:
    """``model.promoted`` when ``outcome`` is :data:`PROMOTED_OUTCOME`, ``model.rejected`` for any other outcome.

    Emitted once per retrain decision; keyed by model and version (so one version's promotion and
    rejection would have different ids, and a repeat of either the same).

    Args:
        model: The retrained model.
        version: The challenger version that was decided on.
        outcome: How the retrain ended (a ``retrainer.cycle.decide.Outcome`` value).
        champion_before: The champion the challenger was judged against, if any.
        champion_after: The champion once the decision took effect.
        reasons: Every reason of the decision.
        trigger: Why the retrain ran.

    Returns:
        The event; payload keys ``version``, ``outcome``, ``champion_before``, ``champion_after``,
        ``reasons`` and ``trigger`` (``reason``, ``event_id``, ``incident_key``, ``event_name``,
        ``event_payload``, ``flow_run_id``, ``actor``, ``answers``, ``answers_sample``).
    """
    name = MODEL_PROMOTED if outcome == PROMOTED_OUTCOME else MODEL_REJECTED
    payload = {
        "version": version,
        "outcome": str(outcome),
        "champion_before": champion_before,
        "champion_after": champion_after,
        "reasons": list(reasons),
        "trigger": {
            "reason": trigger.reason,
            "event_id": trigger.event_id,
            "incident_key": trigger.incident_key,
            "event_name": trigger.event_name,
            "event_payload": copy.deepcopy(dict(trigger.event_payload)),
            "flow_run_id": trigger.flow_run_id,
            "actor": trigger.actor,
            "answers": trigger.answers,
            "answers_sample": list(trigger.answers_sample),
        },
    }
    return Event(name, model, payload, key=f"{model}:v{version}")


def rolled_back(*, model: str, from_version: str, to_version: str, reason: str) -> Event:
    """``model.rolled_back`` for a completed rollback of ``@champion``.

    Keyed by both versions and the reason.

    Args:
        model: The model rolled back.
        from_version: The champion before the rollback.
        to_version: The champion after it.
        reason: Why (given by whoever rolled back).

    Returns:
        The event; payload keys ``from_version``, ``to_version``, ``reason``.
    """
    payload = {"from_version": from_version, "to_version": to_version, "reason": reason}
    return Event(MODEL_ROLLED_BACK, model, payload, key=f"{model}:{from_version}->{to_version}:{reason}")


def _incident_payload(incident_key: str, reason: str, evidence: DriftEvidence) -> dict[str, Any]:
    return _drift_payload(
        incident_key=incident_key,
        reason=reason,
        drift_share=evidence.drift_share,
        drift_detected=evidence.drift_detected,
        top_columns=[
            {"column": c.column, "score": c.score, "method": c.method} for c in evidence.top_columns[:TOP_COLUMNS]
        ],
        prediction_drift=evidence.prediction_drift,
        report_uri=evidence.report_uri,
        champion_version=evidence.champion_version,
        batch_ids=list(evidence.batch_ids),
        check_id=evidence.check_id,
        window_kind=evidence.window_kind,
    )


def _drift_payload(
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
    window_kind: str,
) -> dict[str, Any]:
    """The payload of ``drift.detected`` (and the base of ``performance.degraded``), wherever it is emitted.

    Built only by :func:`drift_detected` and :func:`performance_degraded`.

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
        window_kind: ``labelled`` or ``inference``.
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
        "window_kind": window_kind,
    }
