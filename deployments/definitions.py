"""The deployments, their triggers and schedules: defined once, here.

``retrainer serve`` serves them from one process; ``prefect.yaml`` declares the same for
``prefect deploy --all`` (a test renders this module and compares it with that file).

Every trigger is one automation for all models: it matches ``retrainer.model.*`` resources
(``events.model_resources_match()``) and runs once per event (``for_each`` the resource), taking the
model from the event's resource name.

* ``retrainer.data.arrived`` from a new-data notice (the webhook) runs the ingest, the observe or
  the label flow on the notice's files (by the notice's ``kind``); from the ingest flow it runs the
  monitor, or the retrain directly for models whose automation config says ``retrain_on_new_data``
  (the event's ``retrainer.on_new_data`` label says which);
* ``retrainer.data.observed`` (an inference batch stored) runs the monitor on that batch of traffic;
* ``retrainer.labels.joined`` runs the monitor on the joined batch, or the retrain when a retrain
  waits for labels to answer an incident (the event's label says which);
* ``retrainer.drift.detected`` and ``retrainer.performance.degraded`` run the retrain with the
  incident key and the event id, which the retrain uses to refuse duplicates;
* each model's monitor runs on its own schedule (``automation.monitor_cron`` or
  ``automation.monitor_interval_seconds``).

Storms are stopped on the server, before any process starts: each retrain trigger fires at most
once per model per ``RETRAIN_COALESCE_SECONDS`` (later events in that window are recorded by the
server but start nothing), the retrain deployment runs at most as many flow runs as there are
models (further runs wait as ``AwaitingConcurrencySlot``, without a process), and ``retrainer
serve`` or a worker runs at most :func:`serve_limit` flow runs at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from retrainer import events
from retrainer.config import ProjectConfig
from retrainer.monitor.incidents import COALESCE_SECONDS

if TYPE_CHECKING:
    from prefect.schedules import Schedule

DEPLOYMENT = "default"
TAGS = ["retrainer"]
MODEL_FROM_EVENT = "{{ event.resource.name }}"
# A storm of distinct alerts for one model starts one retrain, not one per alert; the retrain answers
# the window's alerts, and its own dedupe (incident, event id, cooldown) decides about later ones.
RETRAIN_COALESCE_SECONDS = COALESCE_SECONDS


def trigger_specs() -> dict[str, list[dict[str, Any]]]:
    """Trigger definitions per flow name, as plain data (the shape ``prefect.yaml`` uses)."""
    incident = {
        "model": MODEL_FROM_EVENT,
        "reason": "{{ event.event }} {{ event.payload.incident_key }}",
        "event_id": "{{ event.id|string }}",
        "incident_key": "{{ event.payload.incident_key }}",
        "event_name": "{{ event.event }}",
        "event_payload": "{{ event.payload }}",
    }
    landed = {"model": MODEL_FROM_EVENT, "files": "{{ event.payload.files }}"}
    one_batch = {"model": MODEL_FROM_EVENT, "batch_id": "{{ event.payload.batch_id }}"}
    return {
        "ingest": [_spec("ingest-on-data-notice", events.DATA_ARRIVED, landed, events.INGEST)],
        "observe": [_spec("observe-on-data-notice", events.DATA_ARRIVED, landed, events.OBSERVE)],
        "label": [_spec("label-on-data-notice", events.DATA_ARRIVED, landed, events.LABEL)],
        "monitor": [
            _spec("monitor-on-new-data", events.DATA_ARRIVED, {"model": MODEL_FROM_EVENT}, events.MONITOR),
            _spec("monitor-on-traffic", events.DATA_OBSERVED, {**one_batch, "kind": "inference"}, events.MONITOR),
            _spec("monitor-on-joined-labels", events.LABELS_JOINED, one_batch, events.MONITOR),
        ],
        "retrain": [
            _spec("retrain-on-drift", events.DRIFT_DETECTED, incident, within=RETRAIN_COALESCE_SECONDS),
            _spec(
                "retrain-on-degraded-performance",
                events.PERFORMANCE_DEGRADED,
                incident,
                within=RETRAIN_COALESCE_SECONDS,
            ),
            _spec(
                "retrain-on-new-data",
                events.DATA_ARRIVED,
                {
                    "model": MODEL_FROM_EVENT,
                    "reason": "new data {{ event.payload.batch_id }}",
                    "event_id": "{{ event.id|string }}",
                    "event_name": "{{ event.event }}",
                    "event_payload": "{{ event.payload }}",
                },
                events.RETRAIN,
                within=RETRAIN_COALESCE_SECONDS,
            ),
            # Not coalesced: every join may be the one that brings enough labels (repeats end Duplicate).
            _spec(
                "retrain-on-joined-labels",
                events.LABELS_JOINED,
                {**incident, "reason": "labels joined for {{ event.payload.incident_key }}"},
                events.RETRAIN,
            ),
        ],
    }


def _spec(
    name: str, event: str, parameters: dict[str, str], new_data_action: str | None = None, within: int = 0
) -> dict[str, Any]:
    """One reactive trigger per model resource; with ``within`` > 0 it fires at most once per window."""
    match = events.model_resources_match()
    if new_data_action is not None:
        match[events.NEW_DATA_ACTION] = new_data_action
    return {
        "type": "event",
        "name": name,
        "enabled": True,
        "match": match,
        "expect": [event],
        "for_each": ["prefect.resource.id"],
        "posture": "Reactive",
        "threshold": 1,
        "within": within,
        "parameters": dict(parameters),
    }


def triggers(flow_name: str) -> list[Any]:
    """The triggers of one flow's deployment as ``DeploymentEventTrigger`` objects."""
    from prefect.events import DeploymentEventTrigger

    made = []
    for spec in trigger_specs().get(flow_name, []):
        fields = {k: v for k, v in spec.items() if k != "type"}
        made.append(DeploymentEventTrigger(**{**fields, "within": timedelta(seconds=fields["within"])}))
    return made


def schedule_specs(project: ProjectConfig) -> list[dict[str, Any]]:
    """One monitor schedule per model, as plain data (the shape ``prefect.yaml`` uses)."""
    specs = []
    for name, model in sorted(project.models.items()):
        automation = model.automation
        when: dict[str, Any]
        if automation.monitor_interval_seconds:
            when = {"interval": automation.monitor_interval_seconds}
        elif automation.monitor_cron:
            when = {"cron": automation.monitor_cron}
        else:
            continue
        specs.append(
            {**when, "timezone": automation.timezone, "slug": f"monitor-{name}", "parameters": {"model": name}}
        )
    return specs


def schedules(project: ProjectConfig) -> list[Schedule]:
    """The monitor's schedules as Prefect objects."""
    from prefect.schedules import Cron, Interval

    made: list[Schedule] = []
    for spec in schedule_specs(project):
        common = {"timezone": spec["timezone"], "slug": spec["slug"], "parameters": spec["parameters"]}
        if "interval" in spec:
            made.append(Interval(timedelta(seconds=spec["interval"]), **common))
        else:
            made.append(Cron(spec["cron"], **common))
    return made


def serve_limit(project: ProjectConfig) -> int:
    """Most flow runs one ``retrainer serve`` process (or one worker) runs at once.

    Each run is a process importing MLflow, LightGBM and Evidently (a few hundred MB): two per model
    (a retrain and a monitor or ingest) plus two spare keep a host's memory bounded in any storm.
    """
    return 2 + 2 * len(project.models)


def retrain_concurrency(project: ProjectConfig) -> dict[str, Any]:
    """The retrain deployment's concurrency rule, as plain data (the shape ``prefect.yaml`` uses).

    As many retrains at once as there are models; each takes its model's single-flight slot, so a
    model never runs two. Runs over the limit wait on the server (``ENQUEUE``) without a process.
    """
    return {"limit": max(1, len(project.models)), "collision_strategy": "ENQUEUE"}


def deployments(project: ProjectConfig) -> list[Any]:
    """Every deployment (``RunnerDeployment``) with its triggers and schedules, ready to serve."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    from flows.ingest import ingest
    from flows.label import label
    from flows.monitor import monitor
    from flows.observe import observe
    from flows.retrain import retrain
    from flows.rollback import rollback

    limit = ConcurrencyLimitConfig(**retrain_concurrency(project))
    return [
        ingest.to_deployment(name=DEPLOYMENT, tags=TAGS, triggers=triggers("ingest")),
        observe.to_deployment(name=DEPLOYMENT, tags=TAGS, triggers=triggers("observe")),
        label.to_deployment(name=DEPLOYMENT, tags=TAGS, triggers=triggers("label")),
        monitor.to_deployment(name=DEPLOYMENT, tags=TAGS, triggers=triggers("monitor"), schedules=schedules(project)),
        retrain.to_deployment(name=DEPLOYMENT, tags=TAGS, triggers=triggers("retrain"), concurrency_limit=limit),
        rollback.to_deployment(name=DEPLOYMENT, tags=TAGS),
    ]
