"""The webhook app in process, through FastAPI's test client and an in-memory event sink (no Prefect).

Every answer the receiver gives is checked against what reached the sink: 202 exactly when one
event was delivered, and nothing delivered on a refusal. ``tests/e2e/test_webhook.py`` runs the
same receiver as a real process against a real Prefect server.
"""

from __future__ import annotations

import json
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


@contextmanager
def _client(sink: MemorySink, per_minute: int = 1_000, burst: int = 1_000) -> Iterator[TestClient]:
    project = parse_project(demo_config(), "test")
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
    body = json.dumps({"model": "churn", "source": "etl", "files": ["/data/day1.parquet"]}).encode()
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
