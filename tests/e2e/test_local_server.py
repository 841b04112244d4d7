"""``retrainer up`` / ``retrainer down``: a local Prefect server in the background, on loopback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, free_port

pytestmark = pytest.mark.e2e


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RETRAINER_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([str(BIN / "retrainer"), *args], env=env, capture_output=True, text=True, timeout=300)


def test_up_starts_a_loopback_server_once_and_down_stops_it(tmp_path: Path) -> None:
    home, port = tmp_path / "state", free_port()
    try:
        started = _cli(home, "up", "--port", str(port))
        assert started.returncode == 0, started.stderr
        assert f"Prefect UI   http://127.0.0.1:{port}" in started.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200
        assert (home / "prefect" / "prefect.db").exists()
        pid = (home / "prefect" / "prefect-server.pid").read_text().strip()

        again = _cli(home, "up", "--port", str(port))
        assert again.returncode == 0 and (home / "prefect" / "prefect-server.pid").read_text().strip() == pid
    finally:
        stopped = _cli(home, "down")
    assert stopped.returncode == 0 and "prefect-server" in stopped.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
    assert _cli(home, "down").stdout.strip() == "stopped: nothing was running"
