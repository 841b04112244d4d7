"""End to end: the ``retrainer`` command against a real ``prefect server`` process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deployments import work_pools
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


REPO_ROOT = Path(__file__).resolve().parents[2]
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# Settings a worker's machine might carry that would point the runs away from the test's own state.
STORE_SETTINGS = ("MLFLOW_TRACKING_URI", "RETRAINER_TRACKING_URI", "RETRAINER_METADATA_URL", "RETRAINER_DATA_URL")


def _prefect(api: str, home: Path, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    return subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _changed_files(repo_root: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo_root, capture_output=True, text=True).stdout


def test_prefect_deploy_all_from_the_repo_root_creates_what_the_definitions_say(
    prefect_api: str, tmp_path: Path
) -> None:
    repo_root = REPO_ROOT
    before = _changed_files(repo_root)
    created = _prefect(prefect_api, tmp_path, "work-pool", "create", WORK_POOL, "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = _prefect(prefect_api, tmp_path, "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert _changed_files(repo_root) == before, "prefect deploy must not write into the repository"

    flows = {f["id"]: f["name"] for f in post(prefect_api, "/flows/filter", {})}
    in_pool = {"work_pools": {"name": {"any_": [WORK_POOL]}}}
    deployments = {flows[d["flow_id"]]: d for d in post(prefect_api, "/deployments/filter", in_pool)}
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

    # A worker on another machine: the package installed, an empty directory, no checkout at the repo's path.
    elsewhere = tmp_path / "worker-machine"
    elsewhere.mkdir()
    with _worker(prefect_api, tmp_path, elsewhere):
        # A busy SQLite server answers 503 now and then: retry, the idempotency key keeps it one run.
        body = {"parameters": {"model": "no-such-model", "reason": "e2e"}, "idempotency_key": "e2e-elsewhere"}
        path = f"/deployments/{deployments['rollback']['id']}/create_flow_run"
        run = wait_for(lambda: post(prefect_api, path, body), 60, "the rollback run to be created")
        done = wait_for(lambda: _final(prefect_api, run["id"]), 180, "the rollback run on the worker")
    # The flow ran from the installed package and failed on the domain, not on finding its code.
    assert done["state_type"] == "FAILED", done["state"]
    assert "unknown model 'no-such-model'" in done["state"]["message"]
    # The worker's console carries the run's output (the API receives the run's logs only eventually).
    console = (tmp_path / "worker.log").read_text(encoding="utf-8")
    assert "Executing deployment step: set_working_directory" in console and "Beginning flow run" in console
    assert "Downloading flow code" not in console
    assert list(elsewhere.iterdir()) == [], "the run must not copy code into the worker's directory"


@contextmanager
def _worker(api: str, home: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``prefect worker start --pool retrainer --limit 1`` in ``cwd``, with absolute retrainer settings."""
    env = {k: v for k, v in os.environ.items() if k not in STORE_SETTINGS}
    env |= {
        "PREFECT_API_URL": api,
        "PREFECT_HOME": str(home / "worker-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",  # the tests' WARNING would keep the run's steps off the console
        "RETRAINER_CONFIG": str(REPO_ROOT / "retrainer.example.yaml"),
        "RETRAINER_HOME": str(home / "worker-state"),
    }
    with (home / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", WORK_POOL, "--limit", "1"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            # The worker ignores SIGTERM for a long while; SIGINT stops an idle one at once.
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=10)


def _final(api: str, flow_run_id: str) -> dict[str, Any] | None:
    run: dict[str, Any] = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
    return run if run["state_type"] in FINAL else None


@pytest.mark.parametrize("pool_type", work_pools.CONTAINER_POOL_TYPES)
def test_container_pools_accept_the_rendered_job_variables_and_add_the_secrets_per_run(
    prefect_api: str, tmp_path: Path, pool_type: work_pools.ContainerPoolType
) -> None:
    pool, secrets, variables = f"retrainer-{pool_type}", _secret_values(), _variable_values()
    _create_secrets_and_variables(prefect_api, secrets, variables)
    template = tmp_path / "template.json"
    template.write_text(work_pools.render(pool_type), encoding="utf-8")
    created = _prefect(
        prefect_api, tmp_path, "work-pool", "create", pool, "--type", pool_type, "--base-job-template", str(template)
    )
    assert created.returncode == 0, created.stdout + created.stderr

    # The committed example, in its own pool and under its own name, deployed from a directory without the code.
    example = yaml.safe_load((REPO_ROOT / "deployments" / "examples" / f"prefect.{pool_type}.yaml").read_text())
    for entry in example["deployments"]:
        entry["name"], entry["work_pool"]["name"] = pool_type, pool
        entry.pop("triggers", None)  # no automations or scheduled runs next to the process pool's
        entry.pop("schedules", None)
    project = tmp_path / "project"
    project.mkdir()
    (project / "prefect.yaml").write_text(yaml.safe_dump(example, sort_keys=False), encoding="utf-8")
    deployed = _prefect(prefect_api, tmp_path, "deploy", "--all", cwd=project)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr  # the server validated the job variables

    stored = post(prefect_api, "/deployments/filter", {"work_pools": {"name": {"any_": [pool]}}})
    assert len(stored) == len(example["deployments"])
    rendered = {e["entrypoint"]: e["work_pool"]["job_variables"] for e in example["deployments"]}
    assert all(d["job_variables"] == rendered[d["entrypoint"]] for d in stored)
    assert not any(value in json.dumps(stored) for value in secrets.values()), "a secret was stored in a deployment"

    [retrain] = [d for d in stored if d["entrypoint"] == "flows.retrain:retrain"]
    env = _env_of_a_run(prefect_api, pool, retrain["id"])
    assert env["RETRAINER_CONFIG"] == "/app/retrainer.yaml"  # the deployment's own
    assert env["AWS_SECRET_ACCESS_KEY"] == secrets["retrainer-s3-secret"]  # the pool's, resolved for the run
    assert env["RETRAINER_METADATA_URL"] == secrets["retrainer-metadata-url"]
    assert env["RETRAINER_DATA_URL"] == variables["retrainer_data_url"]


def _secret_values() -> dict[str, str]:
    return {name: f"value-of-{name}" for name in work_pools.references()["secret"]}


def _variable_values() -> dict[str, str]:
    return {name: f"value-of-{name}" for name in work_pools.references()["variable"]}


def _create_secrets_and_variables(api: str, secrets: dict[str, str], variables: dict[str, str]) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.variables import Variable

    with temporary_settings({PREFECT_API_URL: api}):
        for name, value in secrets.items():
            Secret(value=value).save(name, overwrite=True)
        for name, value in variables.items():
            Variable.set(name, value, overwrite=True)


def _env_of_a_run(api: str, pool_name: str, deployment_id: str) -> dict[str, str | None]:
    """The environment a worker of the pool gives a run of the deployment (the worker's own resolution step)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.base import BaseJobConfiguration

    async def resolve() -> dict[str, str | None]:
        async with get_client() as client:
            pool = await client.read_work_pool(pool_name)
            deployment = await client.read_deployment(deployment_id)
            values = deployment.job_variables or {}
            configuration: BaseJobConfiguration = await BaseJobConfiguration.from_template_and_values(
                pool.base_job_template, values, client=client
            )
            return dict(configuration.env)

    with temporary_settings({PREFECT_API_URL: api}):
        return asyncio.run(resolve())
