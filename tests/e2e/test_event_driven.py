"""Event-driven retraining on a real ``prefect server``: triggers, schedules, dedupe and single flight."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from retrainer.config import load_settings
from retrainer.data.store import BatchStore
from retrainer.data.synth import demo_config, make_batch
from retrainer.workspace import Workspace
from tests.conftest import Project
from tests.e2e.conftest import BIN, post, start_receiver, wait_for

pytestmark = pytest.mark.e2e


def _event(name: str, key: str, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": name,
        "resource": {
            "prefect.resource.id": "retrainer.model.churn",
            "prefect.resource.name": "churn",
            "retrainer.model": "churn",
        },
        "payload": {"incident_key": key, "drift_share": 0.9},
        "related": [],
    }


def _environment(project: Project, api: str) -> dict[str, str]:
    """This process's environment pointed at ``project`` and the server at ``api``."""
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "RETRAINER_CONFIG": str(project.config_path),
        "RETRAINER_HOME": str(project.home),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _cli(project: Project, api: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "retrainer"), *args]
    env = _environment(project, api)
    return subprocess.run(command, env=env, cwd=project.root, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Project]:
    """A project whose deployments ``retrainer serve`` serves against the real server."""
    root = tmp_path_factory.mktemp("served")
    config = demo_config()
    config["models"]["churn"]["automation"] = {"monitor_cron": None, "monitor_interval_seconds": 30}  # type: ignore[index]
    config["webhook"] = {"landing_roots": [str(root / "incoming")]}
    project = Project(root, config)
    project.home.mkdir()
    env = _environment(project, prefect_api)
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "retrainer"), "serve"], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: len(post(prefect_api, "/deployments/filter", {})) >= 6, 300, "served deployments")
        time.sleep(3)  # automations reach the trigger service asynchronously
        yield project
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _runs(api: str, flow: str) -> list[dict[str, Any]]:
    flows = {f["id"]: f["name"] for f in post(api, "/flows/filter", {})}
    runs = post(api, "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_ASC", "limit": 200})
    return [r for r in runs if flows.get(r["flow_id"]) == flow]


def _finished(api: str, flow: str, count: int, timeout: float) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        runs = [r for r in _runs(api, flow) if r["state_type"] in {"COMPLETED", "FAILED", "CRASHED"}]
        return runs if len(runs) >= count else None

    found: list[dict[str, Any]] = wait_for(done, timeout, f"{count} finished {flow} run(s)")
    return found


def _work_span(api: str, run_id: str) -> tuple[str, str]:
    """Start of the first and end of the last task run of a flow run (the work done under the slot)."""

    def recorded() -> list[dict[str, Any]] | None:
        # A task run's end time can reach the server a moment after its flow run's final state.
        tasks = post(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})
        names = ("claim-retrain", "plan-training-data", "publish-decision")
        working = [t for t in tasks if t["name"].startswith(names)]
        return working if working and all(t["start_time"] and t["end_time"] for t in working) else None

    working = wait_for(recorded, 30, f"the task runs of {run_id} to be recorded")
    return min(t["start_time"] for t in working), max(t["end_time"] for t in working)


def test_schedule_new_data_and_drift_events_drive_the_flows(served: Project, prefect_api: str) -> None:
    scheduled = _finished(prefect_api, "monitor", 1, 150)
    assert scheduled[0]["auto_scheduled"] and scheduled[0]["state_name"] == "NoChampion"

    files = [served.file(f"day{d}", make_batch(4000, seed=d, day=d)) for d in range(3)]
    assert _cli(served, prefect_api, "ingest", "--model", "churn", *files).returncode == 0
    by_event = lambda: [r for r in _runs(prefect_api, "monitor") if not r["auto_scheduled"]]  # noqa: E731
    wait_for(lambda: len(by_event()) >= 3, 120, "three monitors started by data.arrived")
    first = _cli(served, prefect_api, "retrain", "--model", "churn", "--reason", "bootstrap")
    assert first.returncode == 0 and first.stdout.startswith("Promoted"), first.stderr

    storm_id = str(uuid.uuid4())
    sent = datetime.now(UTC)
    _post_events(prefect_api, [_event("retrainer.drift.detected", "churn:v1:storm", storm_id) for _ in range(20)])
    _finished(prefect_api, "retrain", 2, 240)
    [started] = [r for r in _runs(prefect_api, "retrain") if r["parameters"].get("event_id") == storm_id]
    latency = datetime.fromisoformat(started["start_time"]) - sent
    print(f"\nevent emitted -> retrain flow running: {latency.total_seconds():.1f} s")
    time.sleep(10)  # a duplicate run would have been created by now
    storm_runs = [r for r in _runs(prefect_api, "retrain") if r["parameters"].get("incident_key") == "churn:v1:storm"]
    assert len(storm_runs) == 1, [r["state_name"] for r in storm_runs]
    assert storm_runs[0]["parameters"]["event_id"] == storm_id
    assert storm_runs[0]["state_name"] in {"Promoted", "Rejected"}

    _post_events(
        prefect_api,
        [_event("retrainer.drift.detected", "churn:v2:a"), _event("retrainer.performance.degraded", "churn:v2:b")],
    )
    _finished(prefect_api, "retrain", 4, 300)
    pair = [
        r for r in _runs(prefect_api, "retrain") if r["parameters"].get("incident_key") in {"churn:v2:a", "churn:v2:b"}
    ]
    assert len(pair) == 2 and all(r["state_type"] == "COMPLETED" for r in pair), [r["state_name"] for r in pair]
    # The retrain that takes the slot first answers both alerts; the other one, once it has the slot, is a duplicate.
    assert sorted(r["state_name"] == "Duplicate" for r in pair) == [False, True], [r["state_name"] for r in pair]
    (start_a, end_a), (start_b, end_b) = (_work_span(prefect_api, r["id"]) for r in pair)
    assert end_a <= start_b or end_b <= start_a, "two retrains of one model worked at the same time"

    again = _event("retrainer.drift.detected", "churn:v2:a")
    _post_events(prefect_api, [again])
    repeat = wait_for(
        lambda: [
            r
            for r in _runs(prefect_api, "retrain")
            if r["parameters"].get("event_id") == again["id"] and r["state_type"] == "COMPLETED"
        ],
        180,
        "the repeated incident's run",
    )
    assert repeat[0]["state_name"] == "Duplicate"


def _post_events(api: str, batch: list[dict[str, Any]]) -> None:
    post(api, "/events", batch)


def test_a_signed_data_notice_runs_the_ingest_and_then_the_monitor(served: Project, prefect_api: str) -> None:
    secret = "the-shared-secret-of-this-test"  # noqa: S105 (a test secret)
    env = {**_environment(served, prefect_api), "RETRAINER_WEBHOOK_SECRET": secret}
    landed = served.file("landed", make_batch(3000, seed=21, day=9))
    monitors_before = {r["id"] for r in _runs(prefect_api, "monitor")}
    with start_receiver(served.root, env) as receiver:
        command = [str(BIN / "retrainer"), "send", "--url", receiver.url, "--source", "airflow"]
        sent = subprocess.run([*command, "data", "--model", "churn", landed], env=env, capture_output=True, text=True)
    assert sent.returncode == 0, sent.stderr

    def ingest_of_the_notice() -> list[dict[str, Any]]:
        runs = _runs(prefect_api, "ingest")
        return [r for r in runs if r["parameters"].get("files") == [landed] and r["state_type"] == "COMPLETED"]

    [ingest] = wait_for(ingest_of_the_notice, 180, "the ingest started by the notice")
    assert ingest["parameters"]["model"] == "churn" and ingest["state_name"] == "Accepted"
    assert _store(served).manifest().batches[-1].source == landed

    def new_monitors() -> list[dict[str, Any]]:
        runs = _runs(prefect_api, "monitor")
        return [r for r in runs if r["id"] not in monitors_before and not r["auto_scheduled"]]

    assert wait_for(new_monitors, 120, "the monitor started by the ingested batch")


def test_unlabelled_traffic_and_its_late_labels_drive_the_flows_through_notices(
    served: Project, prefect_api: str
) -> None:
    secret = "the-shared-secret-of-this-test"  # noqa: S105 (a test secret)
    env = {**_environment(served, prefect_api), "RETRAINER_WEBHOOK_SECRET": secret}
    if not _store(served).manifest().batches:  # run alone: bootstrap a champion
        files = [served.file(f"boot{d}", make_batch(4000, seed=d, day=d)) for d in range(3)]
        assert _cli(served, prefect_api, "ingest", "--model", "churn", *files).returncode == 0
        assert _cli(served, prefect_api, "retrain", "--model", "churn", "--reason", "bootstrap").returncode == 0
    drifted = make_batch(3000, seed=31, day=10, shift=1.0).with_row_index("request_id", offset=7_000_000)
    traffic = served.file("traffic-day10", drifted.drop("churned"))
    labels = served.file("labels-day12", drifted.select("request_id", "churned"))

    def send(kind: str, path: str) -> None:
        with start_receiver(served.root, env) as receiver:
            command = [str(BIN / "retrainer"), "send", "--url", receiver.url, "--source", "gateway"]
            sent = subprocess.run(
                [*command, "data", "--model", "churn", "--kind", kind, path], env=env, capture_output=True, text=True
            )
        assert sent.returncode == 0, sent.stderr

    send("inference", traffic)
    [observed] = wait_for(
        lambda: [r for r in _runs(prefect_api, "observe") if r["state_type"] == "COMPLETED"], 180, "the observe run"
    )
    assert observed["state_name"] == "Accepted" and observed["parameters"]["files"] == [traffic]
    [checked] = wait_for(
        lambda: [
            r
            for r in _runs(prefect_api, "monitor")
            if r["parameters"].get("kind") == "inference" and r["state_name"] and r["state_type"] == "COMPLETED"
        ],
        180,
        "the monitor started by data.observed",
    )
    assert checked["state_name"] == "Incident", checked["state_message"]
    waiting = wait_for(
        lambda: [r for r in _runs(prefect_api, "retrain") if r["state_name"] == "WaitingForLabels"],
        240,
        "the retrain that waits for labels",
    )
    incident = waiting[0]["parameters"]["incident_key"]

    send("labels", labels)
    wait_for(lambda: [r for r in _runs(prefect_api, "label") if r["state_name"] == "Accepted"], 180, "the label run")
    [answered] = wait_for(
        lambda: [
            r
            for r in _runs(prefect_api, "retrain")
            if r["parameters"].get("event_name") == "retrainer.labels.joined" and r["state_type"] == "COMPLETED"
        ],
        300,
        "the retrain started by labels.joined",
    )
    assert answered["parameters"]["incident_key"] == incident
    assert answered["state_name"] in {"Promoted", "Rejected"}, answered["state_message"]
    joined = [b for b in _store(served).manifest().batches if b.origin == "joined"]
    assert [b.rows for b in joined] == [3000]


def _store(served: Project) -> BatchStore:
    return Workspace(load_settings(home=served.home)).store("churn")
