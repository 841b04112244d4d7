"""A retrain killed with SIGKILL on a real Prefect server frees its slot and its in-flight marker in seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx

from retrainer.data.synth import make_batch
from retrainer.monitor.incidents import IncidentBook, IncidentState
from tests.conftest import Project
from tests.e2e.conftest import BIN, wait_for

ROWS = 6000


def _env(api: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api, "PREFECT_LOGGING_LEVEL": "WARNING"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "retrainer"), *args], env=env, capture_output=True, text=True, timeout=600)


def _book(project: Project) -> IncidentBook:
    return project.workspace().incidents("churn")


def _holding(book: IncidentBook, pid: int) -> IncidentState | None:
    """The state once the retrain of process ``pid`` holds the slot and is in flight."""
    state = book.read()
    held = state.slot is not None and state.slot.pid == pid and state.retrain_in_flight_since is not None
    return state if held else None


def test_killed_retrain_frees_its_slot_and_marker_within_seconds(project: Project, prefect_api: str) -> None:
    env = _env(prefect_api)
    calm = [project.file(f"d{d}", make_batch(ROWS, seed=d, day=d)) for d in range(3)]
    assert _cli(env, "ingest", "--model", "churn", *calm).returncode == 0
    first = _cli(env, "retrain", "--model", "churn", "--reason", "initial")
    assert first.returncode == 0, first.stderr
    shifted = [project.file(f"s{d}", make_batch(ROWS, seed=d, day=d, shift=0.8)) for d in range(3, 5)]
    assert _cli(env, "ingest", "--model", "churn", *shifted).returncode == 0

    book = _book(project)
    doomed = subprocess.Popen([str(BIN / "retrainer"), "retrain", "--model", "churn", "--reason", "doomed"], env=env)
    held = wait_for(lambda: _holding(book, doomed.pid), 120, "the doomed retrain to hold the slot")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    killed_at = time.monotonic()

    # A drift check right after the kill is not absorbed by the dead retrain: it opens an incident.
    check = _cli(env, "monitor", "--model", "churn", "--json")
    summary = json.loads(check.stdout)
    assert summary["action"] == "Incident", summary
    checked_after = time.monotonic() - killed_at

    # The next retrain takes the slot at once (the dead lease would hold it >= 60 s, the old one 600 s).
    started = time.monotonic()
    following = subprocess.Popen([str(BIN / "retrainer"), "retrain", "--model", "churn", "--reason", "next"], env=env)
    wait_for(lambda: _holding(book, following.pid), 60, "the next retrain to take the slot")
    slot_after = time.monotonic() - started
    assert following.wait(timeout=300) == 0
    assert slot_after < 30, slot_after

    run = httpx.get(f"{prefect_api}/flow_runs/{held.slot.flow_run_id}", timeout=10).json()  # type: ignore[union-attr]
    assert run["state"]["type"] == "CRASHED", run["state"]
    after = book.read()
    assert after.slot is None and after.retrain_in_flight_since is None
    print(f"drift check done {checked_after:.1f} s after the kill; next retrain held the slot after {slot_after:.1f} s")
