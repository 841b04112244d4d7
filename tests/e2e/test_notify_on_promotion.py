"""The example automation: a promotion event reaches a webhook through a real Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.conftest import BIN, post, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A loopback HTTP endpoint that records the JSON bodies posted to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


def test_promotion_event_posts_a_notification(prefect_api: str, webhook: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    command = [str(BIN / "python"), "-m", "deployments.notify_on_promotion", "--url", url]
    created = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "retrainer.model.promoted",
        "resource": {"prefect.resource.id": "retrainer.model.churn", "prefect.resource.name": "churn"},
        "payload": {
            "champion_after": "3",
            "champion_before": "2",
            "reasons": ["improvement:roc_auc"],
            "trigger": {"reason": "drift"},
        },
        "related": [],
    }
    post(prefect_api, "/events", [event])
    [message] = wait_for(lambda: list(received), 60, "the webhook notification")
    assert message["text"].startswith("retrainer promoted churn: churn: v3 replaces v2 (drift)")
