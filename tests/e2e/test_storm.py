"""An alert storm through the real receiver to a real server under ``retrainer serve`` stays bounded.

100 distinct signed drift alerts in 10 s: every one is accepted and reaches the server as an event,
yet at most one retrain runs for the model, and the processes and memory of ``retrainer serve`` stay
within its limit, because the storm is stopped on the server before a flow-run process starts. Every
alert is still recorded: the one retrain reads the storm's events back from the server and records
all 100 incident keys in the model's incident book as answered by it (its last read waits for the
trigger's coalescing window to close).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployments.definitions import RETRAIN_COALESCE_SECONDS, serve_limit
from retrainer.config import load_settings, parse_project
from retrainer.data.synth import demo_config, make_batch
from retrainer.inbound import sender
from retrainer.workspace import Workspace
from tests.conftest import Project
from tests.e2e.conftest import BIN, post, start_receiver, wait_for

pytestmark = pytest.mark.e2e

ALERTS = 100
SPREAD_SECONDS = 10.0
SECRET = "the-shared-secret-of-the-storm"  # noqa: S105 (a test secret)
# Far beyond a bounded serve (its limit is 4 for one model): the sampler stops the storm here so a
# regression cannot take the machine down with it.
RUNAWAY_PROCESSES = 12


@dataclass
class Sampler:
    """Samples the process tree under one pid (count and summed RSS) until stopped."""

    root: int
    peak_processes: int = 0
    peak_rss_mb: float = 0.0
    runaway: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            tree = _descendants(self.root)
            self.peak_processes = max(self.peak_processes, len(tree))
            self.peak_rss_mb = max(self.peak_rss_mb, sum(_rss_mb(p) for p in [self.root, *tree]))
            if len(tree) > RUNAWAY_PROCESSES:
                self.runaway = True
                for pid in tree:  # only the flow runs our own `retrainer serve` started
                    _kill(pid)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        found.setdefault(parent, []).append(int(entry.name))
    return found


def _descendants(root: int) -> list[int]:
    children, found, todo = _children(), [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _environment(project: Project, api: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_API_URL": api,
        "RETRAINER_CONFIG": str(project.config_path),
        "RETRAINER_HOME": str(project.home),
        "RETRAINER_WEBHOOK_SECRET": SECRET,
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _config() -> dict[str, Any]:
    config = demo_config()
    config["models"]["churn"]["automation"] = {"monitor_cron": None}  # type: ignore[index]
    # The receiver must take the whole storm: the test is about what happens after a 202.
    config["webhook"] = {"requests_per_minute": 6000, "burst": 2 * ALERTS}
    return config


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Project:
    """A project with accepted data, ingested before anything is served (so no event starts work)."""
    project = Project(tmp_path_factory.mktemp("storm"), _config())
    project.home.mkdir()
    files = [project.file(f"day{d}", make_batch(3000, seed=d, day=d)) for d in range(2)]
    done = subprocess.run(
        [str(BIN / "retrainer"), "ingest", "--model", "churn", *files],
        env=_environment(project, prefect_api),
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return project


@pytest.fixture
def serving(project: Project, prefect_api: str) -> Iterator[Sampler]:
    """``retrainer serve`` running for ``project``, its process tree sampled until the test ends."""
    log = (project.root / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "retrainer"), "serve"],
        env=_environment(project, prefect_api),
        cwd=project.root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sampler = Sampler(process.pid)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(post(prefect_api, "/deployments/filter", {})) >= 6, 300, "served deployments")
        time.sleep(3)  # automations reach the trigger service asynchronously
        yield sampler
    finally:
        sampler.stop()
        thread.join()
        for pid in _descendants(process.pid):
            _kill(pid)
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _retrain_runs(api: str) -> list[dict[str, Any]]:
    flows = {f["id"]: f["name"] for f in post(api, "/flows/filter", {})}
    runs = post(api, "/flow_runs/filter", {"limit": 200})
    return [r for r in runs if flows.get(r["flow_id"]) == "retrain"]


def _alerts_on_server(api: str, since: datetime) -> int:
    window = {"since": since.isoformat(), "until": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}
    body = {"filter": {"occurred": window, "event": {"name": ["retrainer.drift.detected"]}}}
    counts = post(api, "/events/count-by/event", body)
    return sum(int(c["count"]) for c in counts)


def _send_storm(url: str) -> list[int]:
    """Each alert's answer (a 202 means the server confirmed the event)."""
    statuses, start = [], time.monotonic()
    for i in range(ALERTS):
        time.sleep(max(0.0, start + i * SPREAD_SECONDS / ALERTS - time.monotonic()))
        alert = sender.drift_alert("churn", source="storm", drift_share=0.9, columns=["tenure"], alert_id=f"a{i}")
        statuses.append(sender.post(f"{url}/hooks/drift", alert, SECRET, timeout=30).status)
    return statuses


def test_a_storm_of_distinct_alerts_runs_one_retrain_within_bounded_processes_and_memory(
    project: Project, prefect_api: str, serving: Sampler
) -> None:
    sent_at = datetime.now(UTC) - timedelta(seconds=5)
    with start_receiver(project.root, _environment(project, prefect_api)) as receiver:
        started = time.monotonic()
        statuses = _send_storm(receiver.url)
        spent = time.monotonic() - started
    assert statuses == [202] * ALERTS, sorted(set(statuses))
    assert wait_for(lambda: _alerts_on_server(prefect_api, sent_at) >= ALERTS, 60, "every alert on the server")

    def finished() -> list[dict[str, Any]] | None:
        runs = _retrain_runs(prefect_api)
        return runs if runs and all(r["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} for r in runs) else None

    wait_for(finished, 600, "the storm's retrains to finish")
    time.sleep(RETRAIN_COALESCE_SECONDS + 5)  # a run the storm still caused would exist by now
    runs = _retrain_runs(prefect_api)
    limit = serve_limit(parse_project(_config(), "storm"))
    book = Workspace.open(load_settings(home=project.home, config=project.config_path)).incidents("churn").read()
    answered_by = {key: a.flow_run_id for a in book.attachments for key in a.incident_keys}
    print(
        f"\nstorm: {ALERTS} alerts in {spent:.1f} s, {_alerts_on_server(prefect_api, sent_at)} events on the server;"
        f" retrains run: {len(runs)} ({', '.join(r['state_name'] for r in runs)});"
        f" serve's processes peak {serving.peak_processes} (limit {limit} runs), RSS peak {serving.peak_rss_mb:.0f} MB;"
        f" alerts recorded as answered: {len(answered_by)} by {len(set(answered_by.values()))} retrain(s)"
    )
    assert not serving.runaway, f"more than {RUNAWAY_PROCESSES} processes under retrainer serve"
    assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED", [r["state_name"] for r in runs]
    assert runs[0]["parameters"]["incident_key"].startswith("churn:")
    # The retrain answers its whole coalescing window: every alert of the storm is attached to it.
    storm_keys = [f"churn:alert:storm:a{i}" for i in range(ALERTS)]
    missing = [key for key in storm_keys if answered_by.get(key) != runs[0]["id"]]
    assert not missing, f"{len(missing)} alerts not recorded as answered by the retrain: {missing[:5]}"
    assert set(storm_keys) <= set(book.answered_incidents)
    # One flow run at a time may be a process plus its own helper children; never one per alert.
    assert serving.peak_processes <= 2 * limit
    assert serving.peak_rss_mb < 600 * limit
