"""Registry tasks retry transient failures only, within a time budget (real Prefect engine, real MLflow)."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import State, flow

from retrainer.errors import ConfigError, RegistryError, RetrainerError, TransientRegistryError
from retrainer.model.registry.client import Registry
from tasks._common import outage_budget_seconds, registry_task
from tests.conftest import Project

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run_failing_once(error: RetrainerError) -> tuple[State, int]:
    attempts: list[int] = []

    @registry_task("fails-once")
    def fails_once() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise error
        return "done"

    @flow
    def calls_it() -> str:
        return fails_once()

    state = calls_it(return_state=True)
    return state, len(attempts)


def test_transient_registry_error_is_retried() -> None:
    state, attempts = _run_failing_once(TransientRegistryError("registry busy"))
    assert state.is_completed()
    assert state.result() == "done"
    assert attempts == 2


def test_final_registry_error_is_not_retried() -> None:
    state, attempts = _run_failing_once(RegistryError("no such version"))
    assert state.is_failed()
    assert attempts == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _mlflow_defaults_in_force(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP retry variables unset for the test (and restored after it)."""
    for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "BACKOFF_JITTER", "TIMEOUT"):
        monkeypatch.setenv(f"MLFLOW_HTTP_REQUEST_{name}", "0")
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}")


def test_an_unreachable_tracking_server_fails_the_run_within_the_budget_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mlflow_defaults_in_force(monkeypatch)
    monkeypatch.setenv("RETRAINER_OUTAGE_BUDGET_SECONDS", "8")
    uri = f"http://127.0.0.1:{_closed_port()}"
    attempts: list[float] = []

    @registry_task("reach-the-registry")
    def reach() -> str:
        attempts.append(time.monotonic())
        return Registry(uri, tmp_path / "artifacts", tmp_path).experiment_id("churn")

    @flow
    def needs_the_registry() -> str:
        return reach()

    started = time.monotonic()
    state = needs_the_registry(return_state=True)
    elapsed = time.monotonic() - started
    print(f"\nunreachable MLflow: failed after {elapsed:.1f} s and {len(attempts)} attempts (budget 8 s)")
    assert state.is_failed() and elapsed < 30
    assert len(attempts) >= 2, "a transient error is retried while the budget lasts"
    assert f"MLflow at {uri} is unreachable" in str(state.message)


def test_the_outage_budget_must_be_a_positive_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAINER_OUTAGE_BUDGET_SECONDS", "soon")
    with pytest.raises(ConfigError, match="RETRAINER_OUTAGE_BUDGET_SECONDS='soon'"):
        outage_budget_seconds()


def test_a_locked_sqlite_store_fails_with_a_domain_error_naming_the_store(
    tmp_path: Path, mlflow_template: Path
) -> None:
    store = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, store)
    registry = Registry(f"sqlite:///{store}", tmp_path / "artifacts", tmp_path)
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientRegistryError) as raised:
            registry.experiment_id("churn")
    finally:
        holder.close()
    assert f"the MLflow store {store} is locked by another process" in str(raised.value)
    assert "OperationalError" not in str(raised.value)


def test_a_failed_flow_command_prints_one_line_and_a_traceback_only_with_debug(project: Project) -> None:
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_closed_port()}",
        "RETRAINER_OUTAGE_BUDGET_SECONDS": "3",
    }
    command = [str(Path(sys.executable).parent / "retrainer"), "rollback", "--model", "churn", "--reason", "outage"]
    quiet = subprocess.run(command, env=env, cwd=project.root, capture_output=True, text=True, timeout=300)
    loud = subprocess.run(
        [command[0], "--debug", *command[1:]], env=env, cwd=project.root, capture_output=True, text=True, timeout=300
    )
    assert quiet.returncode == loud.returncode == 1
    output = quiet.stdout + quiet.stderr
    tracebacks = (loud.stdout + loud.stderr).count("Traceback")
    print(f"\nCLI on an outage: {len(output.splitlines())} lines, {tracebacks} tracebacks with --debug:\n{output}")
    [line] = output.strip().splitlines()
    assert line.startswith("Failed: ") and f"MLflow at {env['MLFLOW_TRACKING_URI']} is unreachable" in line
    assert "Traceback" in loud.stdout + loud.stderr
