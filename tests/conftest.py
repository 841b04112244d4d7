"""Shared fixtures: an isolated retrainer workspace per test, real MLflow on SQLite, Prefect harness."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from retrainer.workspace import Workspace

# Set before anything imports Prefect or MLflow: no telemetry, no network, no progress bars, and a
# Prefect home of this test process's own (results, profiles), so parallel workers never share one.
os.environ.update(
    {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_HOME": tempfile.mkdtemp(prefix="retrainer-tests-prefect-"),
    }
)
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite database, copied per test (creating one costs ~2 s)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


class Project:
    """A retrainer workspace in a temp dir: config file, state dir and a folder of incoming files."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.home = root / ".retrainer"
        self.incoming = root / "incoming"
        self.incoming.mkdir(parents=True)
        self.config_path = root / "retrainer.yaml"
        self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        """(Re)write the YAML config."""
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    def file(self, name: str, frame: pl.DataFrame) -> str:
        """Write ``frame`` as an incoming Parquet file and return its path."""
        path = self.incoming / f"{name}.parquet"
        frame.write_parquet(path)
        return str(path)

    def workspace(self) -> Workspace:
        """Open the workspace this project's environment describes."""
        return Workspace.open()


@pytest.fixture
def project(tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """An isolated workspace with the demo model config; env points every command at it."""
    from retrainer.data.synth import demo_config

    made = Project(tmp_path, demo_config())
    made.home.mkdir()
    shutil.copy(mlflow_template, made.home / "mlflow.db")
    monkeypatch.setenv("RETRAINER_CONFIG", str(made.config_path))
    monkeypatch.setenv("RETRAINER_HOME", str(made.home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield made


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session (starting one costs 10–15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
