"""End to end: the ``retrainer`` command against a real ``prefect server`` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrainer.synth import make_batch
from tests.conftest import Project

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on a free loopback port with its own PREFECT_HOME, torn down after."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "the Prefect server")
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _run(project: Project, api: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_LOGGING_LEVEL": "WARNING"}
    return subprocess.run(
        [str(BIN / "retrainer"), *args], env=env, cwd=project.root, capture_output=True, text=True, timeout=300
    )


def _post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


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

    runs = _post(prefect_api, "/flow_runs/filter", {"sort": "START_TIME_ASC"})
    assert [r["state_name"] for r in runs] == ["Accepted", "Quarantined", "Promoted"]

    def all_four_events() -> list[dict[str, Any]] | None:
        body = {"filter": {"event": {"prefix": ["retrainer."]}}, "limit": 50}
        found: list[dict[str, Any]] = _post(prefect_api, "/events/filter", body)["events"]
        return found if len(found) >= 4 else None

    events = _wait_for(all_four_events, 30, "retrainer events")
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

    artifacts = _post(prefect_api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["decision-churn"]}}})
    assert len(artifacts) == 1 and "Retrain decision" in artifacts[0]["data"]
    assert artifacts[0]["flow_run_id"] == runs[-1]["id"]
