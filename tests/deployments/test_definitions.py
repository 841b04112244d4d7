"""Deployments: one definition of triggers and schedules, the same in prefect.yaml and in serve."""

from __future__ import annotations

import re
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from deployments.definitions import (
    RETRAIN_COALESCE_SECONDS,
    deployments,
    schedule_specs,
    serve_limit,
    trigger_specs,
    triggers,
)
from deployments.notify_on_promotion import BODY, SUBJECT, trigger_spec
from deployments.prefect_yaml import render
from retrainer import events
from retrainer.config import load_project, parse_project
from retrainer.data.synth import demo_config
from retrainer.monitor.performance import Performance

ROOT = Path(__file__).resolve().parents[2]


def test_committed_prefect_yaml_is_rendered_from_the_definitions_and_the_example_config() -> None:
    project = load_project(ROOT / "retrainer.example.yaml")
    assert (ROOT / "prefect.yaml").read_text(encoding="utf-8") == render(project, version("prefect"))
    assert load_project(ROOT / "retrainer.example.yaml") == parse_project(demo_config(), "demo")


def test_served_deployments_carry_exactly_the_rendered_triggers_and_schedules() -> None:
    project = parse_project(demo_config(), "demo")
    served = {d.flow_name: d for d in deployments(project)}
    rendered = {d["entrypoint"].rsplit(":", 1)[1]: d for d in yaml.safe_load(render(project, "3"))["deployments"]}
    assert set(served) == set(rendered) == {"ingest", "observe", "label", "monitor", "retrain", "rollback"}
    for name, deployment in served.items():
        as_served = [_trigger_fields(t) for t in deployment.triggers]
        assert as_served == rendered[name].get("triggers", []), name
    [schedule] = served["monitor"].schedules
    assert schedule.parameters == {"model": "churn"} and schedule.slug == "monitor-churn"
    assert schedule.schedule.cron == "0 * * * *"


def test_a_storm_is_stopped_on_the_server_before_a_process_starts() -> None:
    config = demo_config()
    config["models"]["fraud"] = dict(config["models"]["churn"])  # type: ignore[index]
    project = parse_project(config, "two models")
    served = {d.flow_name: d for d in deployments(project)}
    retrain_triggers = served["retrain"].triggers
    # Alerts and new data coalesce; a join of labels never does (the one that brings enough must start a run).
    alerts = [t for t in retrain_triggers if t.name != "retrain-on-joined-labels"]
    [joined] = [t for t in retrain_triggers if t.name == "retrain-on-joined-labels"]
    assert alerts and all(t.within == timedelta(seconds=RETRAIN_COALESCE_SECONDS) for t in alerts)
    assert joined.within == timedelta(0)
    assert all(t.for_each == {"prefect.resource.id"} and t.threshold == 1 for t in retrain_triggers)
    options = served["retrain"].concurrency_options
    assert served["retrain"].concurrency_limit == 2
    assert options is not None and options.collision_strategy.value == "ENQUEUE"
    [rendered] = [d for d in yaml.safe_load(render(project, "3"))["deployments"] if "retrain" in d["entrypoint"]]
    assert rendered["concurrency_limit"] == {"limit": 2, "collision_strategy": "ENQUEUE"}
    assert serve_limit(project) == 6 and "--limit 6" in render(project, "3")


def _trigger_fields(trigger: Any) -> dict[str, Any]:
    within = trigger.within.total_seconds() if isinstance(trigger.within, timedelta) else trigger.within
    return {
        "type": "event",
        "name": trigger.name,
        "enabled": trigger.enabled,
        "match": trigger.match.model_dump(),
        "expect": sorted(trigger.expect),
        "for_each": sorted(trigger.for_each),
        "posture": trigger.posture.value,
        "threshold": trigger.threshold,
        "within": int(within),
        "parameters": trigger.parameters,
    }


def test_every_model_event_that_should_start_work_has_exactly_one_trigger() -> None:
    by_event: dict[tuple[str, str | None], list[str]] = {}
    for flow_name, specs in trigger_specs().items():
        for spec in specs:
            key = (spec["expect"][0], spec["match"].get(events.NEW_DATA_ACTION))
            by_event.setdefault(key, []).append(flow_name)
    assert by_event == {
        (events.DATA_ARRIVED, "ingest"): ["ingest"],
        (events.DATA_ARRIVED, "observe"): ["observe"],
        (events.DATA_ARRIVED, "label"): ["label"],
        (events.DATA_ARRIVED, "monitor"): ["monitor"],
        (events.DATA_ARRIVED, "retrain"): ["retrain"],
        (events.DATA_OBSERVED, "monitor"): ["monitor"],
        (events.LABELS_JOINED, "monitor"): ["monitor"],
        (events.LABELS_JOINED, "retrain"): ["retrain"],
        (events.DRIFT_DETECTED, None): ["retrain"],
        (events.PERFORMANCE_DEGRADED, None): ["retrain"],
    }


def test_schedules_follow_each_models_automation_config() -> None:
    config = demo_config()
    churn = config["models"]["churn"]  # type: ignore[index]
    config["models"]["fraud"] = {**churn, "automation": {"monitor_cron": None}}  # type: ignore[index]
    config["models"]["ads"] = {**churn, "automation": {"monitor_cron": None, "monitor_interval_seconds": 30}}  # type: ignore[index]
    specs = {s["slug"]: s for s in schedule_specs(parse_project(config, "test"))}
    assert set(specs) == {"monitor-churn", "monitor-ads"}
    assert specs["monitor-ads"]["interval"] == 30 and specs["monitor-churn"]["cron"] == "0 * * * *"


def _performance(degraded: bool = True) -> Performance:
    return Performance("roc_auc", 0.7, 0.8, -0.1, 0.02, degraded, 300, 200)


def _made_events() -> dict[str, events.Event]:
    """One event of each constructor, as the producers make them."""
    from retrainer.cycle.plan import Trigger

    batch: dict[str, Any] = {
        "batch_id": "b1",
        "sha256": "0" * 64,
        "rows": 10,
        "time_min": None,
        "time_max": None,
        "source": "/a.csv",
    }
    evidence = events.DriftEvidence(check_id="c1", drift_share=0.5, drift_detected=True)
    joined: dict[str, Any] = {
        "model": "churn",
        "batch_id": "j1",
        "rows": 10,
        "label_files": ["l1"],
        "inference_batches": ["t1"],
        "pending_rows": 0,
        "lag_median_seconds": 60.0,
        "lag_max_seconds": 90.0,
    }
    incident = {"model": "churn", "incident_key": "churn:v1:c1", "reason": "drift incident churn:v1:c1"}
    decided: dict[str, Any] = {
        "model": "churn",
        "version": "2",
        "champion_before": "1",
        "reasons": ["better"],
        "trigger": Trigger(),
    }
    return {
        "files_landed": events.files_landed(model="churn", files=["/a.csv"], source="airflow", notice_id="n1"),
        "files_landed/inference": events.files_landed(
            model="churn", files=["/a.csv"], source="airflow", notice_id="n2", kind="inference"
        ),
        "files_landed/labels": events.files_landed(
            model="churn", files=["/a.csv"], source="airflow", notice_id="n3", kind="labels"
        ),
        "data_observed": events.data_observed(model="churn", **batch),
        "labels_joined/monitor": events.labels_joined(**joined, waiting_incident=None),
        "labels_joined/retrain": events.labels_joined(**joined, waiting_incident="churn:v1:c1"),
        "data_arrived/monitor": events.data_arrived(model="churn", **batch, retrain_directly=False),
        "data_arrived/retrain": events.data_arrived(model="churn", **batch, retrain_directly=True),
        "data_rejected": events.data_rejected(model="churn", source="/a.csv", violations=[], quarantined=None),
        "drift_detected": events.drift_detected(**incident, evidence=evidence),
        "drift_detected/alert": events.drift_detected(**incident, evidence=evidence, source="ci"),
        "performance_degraded": events.performance_degraded(**incident, evidence=evidence, performance=_performance()),
        "promoted": events.model_decided(**decided, outcome="Promoted", champion_after="2"),
        "rejected": events.model_decided(**decided, outcome="Rejected", champion_after="1"),
        "rolled_back": events.rolled_back(model="churn", from_version="2", to_version="1", reason="canary"),
    }


def _fires(trigger: Any, event: events.Event) -> bool:
    """What Prefect checks before a reactive trigger fires: the event name and the resource labels."""
    from prefect.events.schemas.events import Resource, matches

    return any(matches(e, event.name) for e in trigger.expect) and trigger.match.matches(Resource(event.resource))


def _payload_paths(templates: list[str]) -> set[tuple[str, ...]]:
    return {tuple(m.split(".")) for t in templates for m in re.findall(r"event\.payload\.([A-Za-z_.]+)", t)}


def _has(payload: dict[str, Any], path: tuple[str, ...]) -> bool:
    value: Any = payload
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def test_triggers_match_on_the_shared_pattern() -> None:
    for specs in trigger_specs().values():
        for spec in specs:
            assert spec["match"]["prefect.resource.id"] == events.MODEL_RESOURCE_PATTERN, spec["name"]
    assert trigger_spec()["match"] == events.model_resources_match()


def test_each_constructed_event_starts_exactly_the_deployment_meant_for_it() -> None:
    flows = ("ingest", "observe", "label", "monitor", "retrain", "rollback")
    served = {t.name: t for flow_name in flows for t in triggers(flow_name)}
    fired = {label: sorted(n for n, t in served.items() if _fires(t, e)) for label, e in _made_events().items()}
    assert fired == {
        "files_landed": ["ingest-on-data-notice"],
        "files_landed/inference": ["observe-on-data-notice"],
        "files_landed/labels": ["label-on-data-notice"],
        "data_observed": ["monitor-on-traffic"],
        "labels_joined/monitor": ["monitor-on-joined-labels"],
        "labels_joined/retrain": ["retrain-on-joined-labels"],
        "data_arrived/monitor": ["monitor-on-new-data"],
        "data_arrived/retrain": ["retrain-on-new-data"],
        "data_rejected": [],
        "drift_detected": ["retrain-on-drift"],
        "drift_detected/alert": ["retrain-on-drift"],
        "performance_degraded": ["retrain-on-degraded-performance"],
        "promoted": [],
        "rejected": [],
        "rolled_back": [],
    }


def test_every_payload_field_a_trigger_reads_is_in_the_events_it_fires_on() -> None:
    served = [t for flow_name in ("ingest", "observe", "label", "monitor", "retrain") for t in triggers(flow_name)]
    made = _made_events().values()
    for trigger in served:
        wanted = _payload_paths([str(v) for v in trigger.parameters.values()])
        for event in (e for e in made if _fires(trigger, e)):
            assert [p for p in wanted if not _has(event.payload, p)] == [], (trigger.name, event.name)


def test_the_promotion_notification_reads_only_fields_a_promotion_carries() -> None:
    from prefect.events.schemas.automations import EventTrigger

    notify = EventTrigger(**{k: v for k, v in trigger_spec().items() if k != "type"})
    fired = [label for label, e in _made_events().items() if _fires(notify, e)]
    assert fired == ["promoted"]
    promoted = _made_events()["promoted"]
    wanted = _payload_paths([SUBJECT, BODY])
    assert wanted == {("champion_after",), ("champion_before",), ("trigger", "reason"), ("reasons",)}
    assert [p for p in wanted if not _has(promoted.payload, p)] == []
