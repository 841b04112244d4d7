"""A real ``prefect server`` on a free loopback port for the end-to-end tests, and helpers to poll it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
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
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    # The browser UI calls the API at PREFECT_UI_API_URL (default: port 4200).
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": api,
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 300, "the Prefect server")
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def post(api: str, path: str, body: Any) -> Any:
    """POST JSON to the Prefect API and return the decoded answer."""
    response = httpx.post(f"{api}{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


@dataclass(frozen=True)
class Receiver:
    """A running ``retrainer webhook``: its base URL, its log and the environment it runs in."""

    url: str
    log: Path
    env: dict[str, str]


@contextmanager
def start_receiver(root: Path, env: dict[str, str], *flags: str) -> Iterator[Receiver]:
    """Run ``retrainer webhook`` on a free loopback port in ``root`` until the block ends."""
    port = free_port()
    log = root / "webhook.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "retrainer"), "webhook", "--port", str(port), *flags],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 120, "the webhook receiver")
            yield Receiver(url, log, env)
        finally:
            process.terminate()
            process.wait(timeout=30)
