"""End to end: the ``retrainer`` command against a real ``prefect server`` process."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from deployments.definitions import DEPLOYMENT, schedule_specs, trigger_specs
from deployments.prefect_yaml import WORK_POOL
from retrainer.config import load_project
from retrainer.data.synth import make_batch
from retrainer.events import event_id_for
from tests.conftest import Project
from tests.e2e.conftest import BIN, post, wait_for

pytestmark = pytest.mark.e2e


def _run(project: Project, api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run(
        [str(BIN / "retrainer"), *args], env=env, cwd=project.root, capture_output=True, text=True, timeout=300
    )


def test_cli_flows_events_and_artifacts_reach_a_real_server(project: Project, prefect_api: str) -> None:
    files = [project.file(f"day{d}", make_batch(4000, seed=d, day=d)) for d in range(2)]
    ingested = _run(project, prefect_api, "ingest", "--model", "churn", *files)
    assert ingested.returncode == 0, ingested.stderr
    bad = project.file("bad", make_batch(300, seed=5).drop("churned"))
    refused = _run(project, prefect_api, "ingest", "--model", "churn", bad)
    assert refused.returncode == 2 and "missing_column" in refused.stderr
    retrained = _run(project, prefect_api, "retrain", "--model", "churn", "--reason", "e2e")
    assert retrained.returncode == 0, retrained.stderr
    assert retrained.stdout.startswith("Promoted:")

    runs = post(prefect_api, "/flow_runs/filter", {"sort": "START_TIME_ASC"})
    assert [r["state_name"] for r in runs] == ["Accepted", "Quarantined", "Promoted"]

    def all_four_events() -> list[dict[str, Any]] | None:
        body = {"filter": {"event": {"prefix": ["retrainer."]}}, "limit": 50}
        found: list[dict[str, Any]] = post(prefect_api, "/events/filter", body)["events"]
        return found if len(found) >= 4 else None

    events = wait_for(all_four_events, 30, "retrainer events")
    names = sorted(e["event"] for e in events)
    assert names == [
        "retrainer.data.arrived",
        "retrainer.data.arrived",
        "retrainer.data.rejected",
        "retrainer.model.promoted",
    ]
    assert {e["resource"]["prefect.resource.id"] for e in events} == {"retrainer.model.churn"}
    batch_ids = {b.batch_id for b in project.workspace().store("churn").manifest().batches}
    assert {e["payload"]["batch_id"] for e in events if e["event"] == "retrainer.data.arrived"} == batch_ids

    artifacts = post(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["decision-churn"]}}})
    assert len(artifacts) == 1 and "Retrain decision" in artifacts[0]["data"]
    assert artifacts[0]["flow_run_id"] == runs[-1]["id"]


def test_drift_incident_is_announced_once_on_a_real_server(project: Project, prefect_api: str) -> None:
    files = [project.file(f"day{d}", make_batch(4000, seed=d, day=d)) for d in range(2)]
    assert _run(project, prefect_api, "ingest", "--model", "churn", *files).returncode == 0
    assert _run(project, prefect_api, "retrain", "--model", "churn").returncode == 0
    shifted_file = project.file("shifted", make_batch(4000, seed=7, day=2, shift=0.8))
    assert _run(project, prefect_api, "ingest", "--model", "churn", shifted_file).returncode == 0
    shifted = project.workspace().store("churn").manifest().batches[-1].batch_id

    checked = _run(project, prefect_api, "monitor", "--model", "churn", "--batch", shifted, "--json")
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout.strip().splitlines()[-1])
    key = summary["incident"]
    assert summary["action"] == "Incident" and key.startswith("churn:v2:check-")
    again = _run(project, prefect_api, "monitor", "--model", "churn", "--batch", shifted, "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["action"] == "Attached", again.stderr

    def drift_events() -> list[dict[str, Any]] | None:
        body = {"filter": {"event": {"name": ["retrainer.drift.detected"]}}, "limit": 50}
        found: list[dict[str, Any]] = post(prefect_api, "/events/filter", body)["events"]
        return found or None

    time.sleep(3)  # let a (wrong) second event arrive before counting
    [event] = wait_for(drift_events, 30, "the drift event")
    assert event["id"] == str(event_id_for(f"retrainer.drift.detected:{key}"))
    assert event["resource"]["prefect.resource.id"] == "retrainer.model.churn"
    assert {"prefect.resource.id": f"retrainer.incident.{key}", "prefect.resource.role": "incident"} in event["related"]
    payload = event["payload"]
    assert payload["incident_key"] == key and payload["champion_version"] == "2"
    assert payload["batch_ids"] == [shifted] and payload["drift_share"] == summary["drift_share"]
    assert payload["top_columns"] and all(c["column"] in summary["columns"] for c in payload["top_columns"])
    report = Path(payload["report_uri"].removeprefix("file://")).read_text(encoding="utf-8")
    assert report.lstrip().startswith("<") and "<div id='retrainer-verdict'" in report
    assert f"retrainer {payload['check_id']}: churn, champion v2, batches {shifted}" in report
    assert "Dataset drift detected: " in report

    record = post(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["drift-churn"]}}})
    assert len(record) == 2 and all("Top drifted columns" in r["data"] for r in record)
    # Prefect stores a link artifact as markdown: "[text](uri)".
    # The server returns artifacts in no particular order; the event names the opening check's report.
    links = post(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["drift-report-churn"]}}})
    assert len(links) == 2
    assert [f"]({payload['report_uri']})" in link["data"] for link in links].count(True) == 1


def _prefect(api: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    repo_root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        env=env,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _changed_files(repo_root: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo_root, capture_output=True, text=True).stdout


def test_prefect_deploy_all_from_the_repo_root_creates_what_the_definitions_say(
    prefect_api: str, tmp_path: Path
) -> None:
    repo_root = Path(__file__).resolve().parents[2]
    before = _changed_files(repo_root)
    created = _prefect(prefect_api, tmp_path, "work-pool", "create", WORK_POOL, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = _prefect(prefect_api, tmp_path, "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert _changed_files(repo_root) == before, "prefect deploy must not write into the repository"

    flows = {f["id"]: f["name"] for f in post(prefect_api, "/flows/filter", {})}
    deployments = {flows[d["flow_id"]]: d for d in post(prefect_api, "/deployments/filter", {})}
    assert sorted(deployments) == ["ingest", "label", "monitor", "observe", "retrain", "rollback"]
    assert {d["name"] for d in deployments.values()} == {DEPLOYMENT}
    assert {d["work_pool_name"] for d in deployments.values()} == {WORK_POOL}

    project = load_project(repo_root / "retrainer.example.yaml")
    [schedule] = deployments["monitor"]["schedules"]
    [expected_schedule] = schedule_specs(project)
    assert schedule["schedule"]["cron"] == expected_schedule["cron"]
    assert schedule["parameters"] == expected_schedule["parameters"] and schedule["active"]

    automations = {a["name"]: a for a in post(prefect_api, "/automations/filter", {})}
    for flow_name, specs in trigger_specs().items():
        for spec in specs:
            automation = automations.pop(spec["name"])
            [action] = automation["actions"]
            assert action["type"] == "run-deployment"
            assert action["deployment_id"] == deployments[flow_name]["id"]
            assert action["parameters"] == spec["parameters"]
            trigger = automation["trigger"]
            assert trigger["expect"] == spec["expect"] and trigger["for_each"] == spec["for_each"]
            assert trigger["match"] == spec["match"] and trigger["posture"] == "Reactive"
    assert not automations, f"automations nobody defined: {sorted(automations)}"
