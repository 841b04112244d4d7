"""The webhook app in process, through FastAPI's test client and an in-memory event sink (no Prefect).

Every answer the receiver gives is checked against what reached the sink: 202 exactly when one
event was delivered, and nothing delivered on a refusal. ``tests/e2e/test_webhook.py`` runs the
same receiver as a real process against a real Prefect server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retrainer import events
from retrainer.config import parse_project
from retrainer.data.synth import demo_config
from retrainer.inbound.gate import MAX_BODY_BYTES, SIGNATURE_HEADER, Gate, RateLimiter, sign
from retrainer.inbound.http import MemorySink, create_app

SECRET = "a-shared-secret-for-the-tests-only"  # noqa: S105 (a test secret)
JSON = {"Content-Type": "application/json"}


LANDING = "/data/landing"


@contextmanager
def _client(sink: MemorySink, per_minute: int = 1_000, burst: int = 1_000, **webhook: Any) -> Iterator[TestClient]:
    project = parse_project({**demo_config(), "webhook": {"landing_roots": [LANDING], **webhook}}, "test")
    gate = Gate(SECRET, 300, RateLimiter(per_minute, burst))
    with TestClient(create_app(project, gate, sink.opened)) as client:
        yield client


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
def client(sink: MemorySink) -> Iterator[TestClient]:
    with _client(sink) as running:
        yield running


def _body(**fields: Any) -> bytes:
    return json.dumps({"model": "churn", "source": "nightly", "drift_share": 0.7, **fields}).encode()


def _signed(body: bytes, at: int | None = None, secret: str = SECRET) -> dict[str, str]:
    return {**JSON, SIGNATURE_HEADER: sign(secret, body, int(time.time()) if at is None else at)}


def test_a_signed_drift_alert_is_delivered_once_and_answered_202(client: TestClient, sink: MemorySink) -> None:
    body = _body(alert_id="a-1", drifted_columns=["tenure"])
    answer = client.post("/hooks/drift", content=body, headers=_signed(body))
    assert answer.status_code == 202
    [event] = sink.events
    assert event.name == events.DRIFT_DETECTED and event.model == "churn"
    assert answer.json() == {"event_id": str(event.id), "event": event.name, "resource": "retrainer.model.churn"}
    assert event.payload["drift_share"] == 0.7
    assert event.payload["incident_key"] == "churn:alert:nightly:a-1"


def test_a_signed_data_notice_becomes_files_landed_for_the_ingest(client: TestClient, sink: MemorySink) -> None:
    body = json.dumps({"model": "churn", "source": "etl", "files": [f"{LANDING}/day1.parquet"]}).encode()
    answer = client.post("/hooks/data", content=body, headers=_signed(body))
    assert answer.status_code == 202
    [event] = sink.events
    assert event.name == events.DATA_ARRIVED
    assert event.resource[events.NEW_DATA_ACTION] == events.INGEST


@pytest.mark.parametrize(
    ("name", "status", "rule"),
    [
        ("unsigned", 401, "missing_signature"),
        ("wrong secret", 401, "bad_signature"),
        ("tampered", 401, "bad_signature"),
        ("stale", 401, "stale_signature"),
        ("too large", 413, "body_too_large"),
        ("not json", 415, "not_json"),
        ("unknown model", 404, "unknown_model"),
        ("malformed", 422, "malformed_json"),
        ("invalid", 422, "invalid_body"),
    ],
)
def test_each_refusal_has_its_status_and_rule_and_delivers_nothing(
    client: TestClient, sink: MemorySink, name: str, status: int, rule: str
) -> None:
    body, now = _body(), int(time.time())
    requests = {
        "unsigned": (body, JSON),
        "wrong secret": (body, _signed(body, secret="some-other-secret-value")),  # noqa: S106
        "tampered": (body + b" ", _signed(body)),
        "stale": (body, _signed(body, at=now - 301)),
        "too large": (b" " * (MAX_BODY_BYTES + 1), JSON),
        "not json": (body, {"Content-Type": "text/plain"}),
        "unknown model": (b := _body(model="nope"), _signed(b)),
        "malformed": (b'{"model": "churn", ', _signed(b'{"model": "churn", ')),
        "invalid": (b := _body(drift_share=3), _signed(b)),
    }
    content, headers = requests[name]
    answer = client.post("/hooks/drift", content=content, headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (status, rule)
    assert sink.events == []


def test_a_replayed_signature_is_refused_after_the_first_delivery(client: TestClient, sink: MemorySink) -> None:
    body = _body(alert_id="once")
    headers = _signed(body)
    assert client.post("/hooks/drift", content=body, headers=headers).status_code == 202
    again = client.post("/hooks/drift", content=body, headers=headers)
    assert (again.status_code, again.json()["error"]) == (409, "replayed_signature")
    assert len(sink.events) == 1


def test_a_source_past_its_rate_is_refused_429(sink: MemorySink) -> None:
    statuses = []
    with _client(sink, per_minute=1, burst=2) as client:
        for n in range(4):
            body = _body(alert_id=f"burst-{n}")
            statuses.append(client.post("/hooks/drift", content=body, headers=_signed(body)).status_code)
    assert statuses == [202, 202, 429, 429]
    assert len(sink.events) == 2


def test_an_unreachable_sink_answers_503_so_the_sender_retries(client: TestClient, sink: MemorySink) -> None:
    sink.failing = True
    body = _body(alert_id="lost")
    answer = client.post("/hooks/drift", content=body, headers=_signed(body))
    assert (answer.status_code, answer.json()["error"]) == (503, "sink_unavailable")
    assert sink.events == []


def test_health_answers_without_naming_models(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "signed": True}


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/dev/zero", "'/dev/zero' is not under any of webhook.landing_roots"),
        ("/etc/shadow", "'/etc/shadow' is not under any of webhook.landing_roots"),
        (f"{LANDING}/../../etc/shadow", "'..' components"),
        ("\\\\fileserver\\share\\day1.parquet", "POSIX path"),
        (f"{LANDING}-elsewhere/day1.parquet", "is not under any of webhook.landing_roots"),
    ],
)
def test_a_data_notice_outside_the_landing_roots_is_refused_422(
    client: TestClient, sink: MemorySink, path: str, detail: str
) -> None:
    body = json.dumps({"model": "churn", "files": [f"{LANDING}/ok.parquet", path]}).encode()
    answer = client.post("/hooks/data", content=body, headers=_signed(body))
    assert answer.status_code == 422 and detail in answer.json()["detail"]
    assert sink.events == []


def test_without_landing_roots_every_data_notice_is_refused_saying_what_to_configure(sink: MemorySink) -> None:
    with _client(sink, landing_roots=[]) as client:
        body = json.dumps({"model": "churn", "files": [f"{LANDING}/day1.parquet"]}).encode()
        answer = client.post("/hooks/data", content=body, headers=_signed(body))
    assert (answer.status_code, answer.json()["error"]) == (422, "outside_landing_roots")
    assert "webhook.landing_roots is not configured" in answer.json()["detail"]
    assert sink.events == []


@pytest.mark.parametrize("depth", [65, 300, 5_000])
def test_a_deeply_nested_signed_snapshot_is_refused_422_not_a_server_error(sink: MemorySink, depth: int) -> None:
    from tests.unit.inbound.test_messages import _evidently_snapshot

    # A real drift snapshot carrying one deeply nested extra value (it answered 500 before the bound).
    nested = "[" * depth + "]" * depth
    snapshot = json.dumps(_evidently_snapshot(shift=1.0))[:-1] + f', "extra": {nested}}}'
    body = f'{{"model": "churn", "snapshot": {snapshot}}}'.encode()
    with _client(sink) as client:
        answer = client.post("/hooks/drift", content=body, headers=_signed(body))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] in {"too_deep", "malformed_json"}
    assert sink.events == []


def test_a_snapshot_within_the_depth_limit_is_still_read(client: TestClient, sink: MemorySink) -> None:
    from tests.unit.inbound.test_messages import _evidently_snapshot

    body = json.dumps({"model": "churn", "source": "evidently", "snapshot": _evidently_snapshot(shift=1.0)}).encode()
    assert client.post("/hooks/drift", content=body, headers=_signed(body)).status_code == 202
    assert len(sink.events) == 1


# --- the ASGI app called directly, to control how the body arrives ---------------------------------


async def _call(client: TestClient, body: bytes, then: str) -> tuple[int, float]:
    """POST ``body`` straight to the app; after it, the client stalls (``then="stall"``) or hangs up."""
    headers = [
        (b"content-type", b"application/json"),
        (SIGNATURE_HEADER.lower().encode(), _signed(body)[SIGNATURE_HEADER].encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/hooks/drift",
        "raw_path": b"/hooks/drift",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
    }
    pieces: list[dict[str, Any]] = [{"type": "http.request", "body": body[:10], "more_body": True}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        if pieces:
            return pieces.pop(0)
        if then == "stall":
            await asyncio.sleep(3_600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.monotonic()
    # Bounded: a receiver without a body deadline would wait here for the hour.
    await asyncio.wait_for(client.app(scope, receive, send), 10)  # type: ignore[arg-type]
    return statuses[0], time.monotonic() - started


def test_a_body_that_stops_arriving_is_answered_408_within_the_request_timeout(sink: MemorySink) -> None:
    with _client(sink, request_timeout_seconds=0.5) as client:
        status, took = asyncio.run(_call(client, _body(alert_id="slow"), then="stall"))
    assert status == 408 and 0.4 < took < 3
    assert sink.events == []


def test_a_client_hanging_up_mid_body_is_logged_at_info_without_a_traceback(
    sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with _client(sink) as client:
        asyncio.run(_call(client, _body(alert_id="gone"), then="hang up"))
    [record] = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert record.levelno == logging.INFO and record.exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sink.events == []


@pytest.mark.parametrize("root", ["landing", "/srv/../etc", "C:\\landing"])
def test_a_landing_root_must_be_an_absolute_posix_directory(root: str) -> None:
    from retrainer.errors import ConfigError

    with pytest.raises(ConfigError, match="landing_roots"):
        parse_project({**demo_config(), "webhook": {"landing_roots": [root]}}, "test")
