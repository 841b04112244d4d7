"""``retrainer up`` / ``retrainer down``: a local Prefect server (and optionally the MLflow UI) in the background.

``make demo`` also serves the deployments in the background here, so that ``retrainer down`` stops
everything a ``KEEP=1`` demo left running.

The server keeps its SQLite database under ``<RETRAINER_HOME>/prefect``, listens on loopback only,
sends no analytics, and is started in its own session so that it outlives the command. Each
process is remembered by a pid file next to its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retrainer.config import Settings
from retrainer.errors import RetrainerError

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
STARTUP_SECONDS = 300.0
STOP_SECONDS = 30.0


@dataclass(frozen=True)
class Service:
    """One background process: its name, pid file and log."""

    name: str
    directory: Path

    @property
    def pid_file(self) -> Path:
        """Where the pid of the running process is kept."""
        return self.directory / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        """The process's combined output."""
        return self.directory / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the process if it is still alive."""
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text(encoding="utf-8").split()[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def start(self, command: list[str], env: dict[str, str]) -> int:
        """Start ``command`` detached from this process; return its pid."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own executables, arguments built here
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid_file.write_text(f"{process.pid}\n", encoding="utf-8")
        return process.pid

    def stop(self) -> bool:
        """Stop the process group (TERM, then KILL after a grace period); False when none ran."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)
        return True


def services(settings: Settings) -> tuple[Service, Service, Service]:
    """The Prefect server, MLflow UI and ``retrainer serve`` services of a state directory."""
    directory = settings.state_dir / "prefect"
    return Service("prefect-server", directory), Service("mlflow-ui", directory), Service("serve", directory)


def up(settings: Settings, port: int, mlflow_port: int | None = None) -> dict[str, str]:
    """Start what is not running yet and wait until the Prefect API answers; return the URLs.

    Raises:
        RetrainerError: the server did not become healthy in time (its log is named).
    """
    prefect, mlflow, _ = services(settings)
    api = f"http://{HOST}:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect.directory),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "PREFECT_UI_API_URL": api,
    }
    env.pop("PREFECT_API_URL", None)
    if prefect.pid() is None:
        prefect.start([str(BIN / "prefect"), "server", "start", "--host", HOST, "--port", str(port)], env)
    _wait_healthy(api, prefect)
    urls = {"prefect_ui": f"http://{HOST}:{port}", "prefect_api": api}
    if mlflow_port is not None:
        if mlflow.pid() is None:
            command = [str(BIN / "mlflow"), "ui", "--backend-store-uri", settings.mlflow_uri]
            mlflow.start([*command, "--host", HOST, "--port", str(mlflow_port)], env)
        urls["mlflow_ui"] = f"http://{HOST}:{mlflow_port}"
    return urls


def _wait_healthy(api: str, service: Service) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if _healthy(f"{api}/health"):
            return
        if service.pid() is None:
            break
        time.sleep(0.5)
    raise RetrainerError(f"the Prefect server did not become healthy; see {service.log}")


def serve_in_background(settings: Settings, api: str) -> int:
    """Run ``retrainer serve`` against ``api`` in the background (stopped by :func:`down`); return its pid."""
    serving = services(settings)[2]
    if (pid := serving.pid()) is not None:
        return pid
    return serving.start([str(BIN / "retrainer"), "serve"], {**os.environ, "PREFECT_API_URL": api})


def down(settings: Settings) -> list[str]:
    """Stop every background service of the state directory (serving first); return those stopped."""
    return [service.name for service in reversed(services(settings)) if service.stop()]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - our own loopback server
            return bool(answer.status == 200)
    except OSError:
        return False
