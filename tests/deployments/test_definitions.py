"""Deployments: one definition of triggers and schedules, the same in prefect.yaml and in serve."""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from deployments.definitions import deployments, schedule_specs, trigger_specs
from deployments.prefect_yaml import render
from retrainer import events
from retrainer.config import load_project, parse_project
from retrainer.data.synth import demo_config

ROOT = Path(__file__).resolve().parents[2]


def test_committed_prefect_yaml_is_rendered_from_the_definitions_and_the_example_config() -> None:
    project = load_project(ROOT / "retrainer.example.yaml")
    assert (ROOT / "prefect.yaml").read_text(encoding="utf-8") == render(project, version("prefect"))
    assert load_project(ROOT / "retrainer.example.yaml") == parse_project(demo_config(), "demo")


def test_served_deployments_carry_exactly_the_rendered_triggers_and_schedules() -> None:
    project = parse_project(demo_config(), "demo")
    served = {d.flow_name: d for d in deployments(project)}
    rendered = {d["entrypoint"].rsplit(":", 1)[1]: d for d in yaml.safe_load(render(project, "3"))["deployments"]}
    assert set(served) == set(rendered) == {"ingest", "monitor", "retrain", "rollback"}
    for name, deployment in served.items():
        as_served = [_trigger_fields(t) for t in deployment.triggers]
        assert as_served == rendered[name].get("triggers", []), name
    [schedule] = served["monitor"].schedules
    assert schedule.parameters == {"model": "churn"} and schedule.slug == "monitor-churn"
    assert schedule.schedule.cron == "0 * * * *"


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
        (events.DATA_ARRIVED, "monitor"): ["monitor"],
        (events.DATA_ARRIVED, "retrain"): ["retrain"],
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
