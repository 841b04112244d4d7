"""The webhook receiver as a real ``retrainer webhook`` process (uvicorn) emitting to a real Prefect server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from retrainer.data.synth import demo_config
from retrainer.inbound.gate import MAX_BODY_BYTES, SIGNATURE_HEADER, sign
from retrainer.inbound.messages import DataNotice, DriftAlert, data_event, drift_event
from tests.conftest import Project
from tests.e2e.conftest import BIN, Receiver, free_port, post, start_receiver, wait_for

pytestmark = pytest.mark.e2e
SECRET = "a-shared-secret-for-the-tests-only"  # noqa: S105 (a test secret)
JSON = {"Content-Type": "application/json"}
REQUEST_TIMEOUT = 2.0


def _env(root: Path, api: str, webhook: dict[str, Any], secret: str | None) -> dict[str, str]:
    config = demo_config()
    config["webhook"] = webhook
    project = Project(root, config)
    env = {**os.environ, "PREFECT_API_URL": api, "RETRAINER_CONFIG": str(project.config_path)}
    env["RETRAINER_HOME"] = str(project.home)
    env.pop("RETRAINER_WEBHOOK_SECRET", None)
    return {**env, "RETRAINER_WEBHOOK_SECRET": secret} if secret is not None else env


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Iterator[Receiver]:
    """A signed receiver whose rate limit stays out of the way (the fuzz sends over a thousand requests)."""
    root = tmp_path_factory.mktemp("webhook")
    limits = {
        "requests_per_minute": 1_000_000,
        "burst": 100_000,
        "landing_roots": [str(root), "/landing"],
        "request_timeout_seconds": REQUEST_TIMEOUT,
    }
    with start_receiver(root, _env(root, prefect_api, limits, SECRET)) as running:
        yield running


def _signed(body: bytes, at: int | None = None) -> dict[str, str]:
    return {**JSON, SIGNATURE_HEADER: sign(SECRET, body, int(time.time()) if at is None else at)}


def _send(receiver: Receiver, *args: str) -> dict[str, Any]:
    command = [str(BIN / "retrainer"), "send", "--url", receiver.url, *args]
    done = subprocess.run(command, env=receiver.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _event(api: str, event_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        body = {"filter": {"id": {"id": [event_id]}}, "limit": 5}
        hits: list[dict[str, Any]] = post(api, "/events/filter", body)["events"]
        return hits[0] if hits else None

    event: dict[str, Any] = wait_for(found, 30, f"event {event_id}")
    return event


def _assert_same_event(received: dict[str, Any], expected: Any) -> None:
    assert received["id"] == str(expected.id)
    assert received["event"] == expected.name
    assert received["resource"] == expected.resource
    assert received["payload"] == expected.payload
    assert received["related"] == expected.related


def test_signed_alerts_and_notices_arrive_as_the_flows_events(receiver: Receiver, prefect_api: str) -> None:
    answer = _send(receiver, "--source", "ci", "drift", "--model", "churn", "--share", "0.6", "--column", "tenure")
    assert answer["status"] == 202 and answer["event"] == "retrainer.drift.detected"
    alert = DriftAlert(model="churn", source="ci", drift_share=0.6, drifted_columns=["tenure"])
    _assert_same_event(_event(prefect_api, answer["event_id"]), drift_event(alert))

    landed = receiver.log.parent / "landing.parquet"
    answer = _send(receiver, "--source", "airflow", "data", "--model", "churn", str(landed))
    assert answer["status"] == 202 and answer["resource"] == "retrainer.model.churn"
    notice = DataNotice(model="churn", source="airflow", files=[str(landed)])
    _assert_same_event(_event(prefect_api, answer["event_id"]), data_event(notice))


def test_an_evidently_snapshot_is_read_for_share_and_columns(receiver: Receiver, prefect_api: str) -> None:
    from tests.unit.inbound.test_messages import _evidently_snapshot

    path = receiver.log.parent / "snapshot.json"
    path.write_text(json.dumps(_evidently_snapshot(shift=1.0)), encoding="utf-8")
    answer = _send(receiver, "drift", "--model", "churn", "--snapshot", str(path), "--report-uri", "file:///r.html")
    event = _event(prefect_api, answer["event_id"])
    assert [c["column"] for c in event["payload"]["top_columns"]] == ["a", "b"]
    assert event["payload"]["report_uri"] == "file:///r.html"

    path.write_text(json.dumps(_evidently_snapshot(shift=0.0)), encoding="utf-8")
    calm = _send(receiver, "drift", "--model", "churn", "--snapshot", str(path))
    assert calm["status"] == 200 and calm["event_id"] is None


def _drift_body(source: str, **changes: Any) -> bytes:
    return json.dumps({"model": "churn", "source": source, "drift_share": 0.7, **changes}).encode()


def test_each_refusal_has_its_status_and_emits_nothing(receiver: Receiver, prefect_api: str) -> None:
    hook = f"{receiver.url}/hooks/drift"
    body = _drift_body("refused")
    now = int(time.time())
    refused = {
        "unsigned": httpx.post(hook, content=body, headers=JSON),
        "wrong secret": httpx.post(
            hook, content=body, headers={**JSON, SIGNATURE_HEADER: sign("some-other-secret-value", body, now)}
        ),
        "tampered": httpx.post(hook, content=body + b" ", headers=_signed(body)),
        "stale": httpx.post(hook, content=body, headers=_signed(body, at=now - 301)),
        "too large": httpx.post(hook, content=b" " * (MAX_BODY_BYTES + 1), headers=JSON),
        "not json": httpx.post(hook, content=body, headers={"Content-Type": "text/plain"}),
        "unknown model": httpx.post(hook, content=(b2 := _drift_body("refused", model="nope")), headers=_signed(b2)),
        "malformed": httpx.post(hook, content=(b3 := b'{"model": "churn", '), headers=_signed(b3)),
        "invalid": httpx.post(hook, content=(b4 := _drift_body("refused", drift_share=3)), headers=_signed(b4)),
    }
    statuses = {name: response.status_code for name, response in refused.items()}
    assert statuses == {
        "unsigned": 401,
        "wrong secret": 401,
        "tampered": 401,
        "stale": 401,
        "too large": 413,
        "not json": 415,
        "unknown model": 404,
        "malformed": 422,
        "invalid": 422,
    }
    replayed_body = _drift_body("replayed")
    headers = _signed(replayed_body)
    first = httpx.post(hook, content=replayed_body, headers=headers)
    assert first.status_code == 202
    assert httpx.post(hook, content=replayed_body, headers=headers).status_code == 409

    def sources() -> list[str]:
        body_filter = {"filter": {"event": {"prefix": ["retrainer."]}}, "limit": 50}
        found = post(prefect_api, "/events/filter", body_filter)["events"]
        return [related["prefect.resource.id"] for event in found for related in event["related"]]

    # The accepted event, sent after every refused request, arrives in its own time; then count.
    wait_for(lambda: "retrainer.source.replayed" in sources(), 30, "the accepted event")
    time.sleep(3)  # let a (wrong) second event arrive before counting
    seen = sources()
    assert "retrainer.source.refused" not in seen
    assert seen.count("retrainer.source.replayed") == 1
    log = receiver.log.read_text(encoding="utf-8")
    for rule in ("missing_signature", "bad_signature", "stale_signature", "body_too_large", "not_json"):
        assert rule in log
    assert "unknown_model" in log and "replayed_signature" in log
    assert SECRET not in log


def test_without_a_secret_the_receiver_refuses_to_start(tmp_path: Path) -> None:
    env = {**os.environ, "RETRAINER_CONFIG": str(Project(tmp_path, demo_config()).config_path)}
    env.pop("RETRAINER_WEBHOOK_SECRET", None)
    command = [str(BIN / "retrainer"), "webhook", "--port", str(free_port())]
    no_secret = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert no_secret.returncode == 1 and "no webhook secret" in no_secret.stderr
    everywhere = "0.0.0.0"  # noqa: S104 (the point: it must be refused)
    public = subprocess.run(
        [*command, "--insecure-local", "--host", everywhere], env=env, capture_output=True, text=True
    )
    assert public.returncode == 1 and "loopback only" in public.stderr
    short = subprocess.run(command, env={**env, "RETRAINER_WEBHOOK_SECRET": "short"}, capture_output=True, text=True)
    assert short.returncode == 1 and "at least 16 characters" in short.stderr


def test_insecure_local_takes_unsigned_requests_and_still_limits_the_rate(tmp_path: Path, prefect_api: str) -> None:
    limits = {"requests_per_minute": 1, "burst": 3}
    with start_receiver(tmp_path, _env(tmp_path, prefect_api, limits, None), "--insecure-local") as insecure:
        assert "INSECURE" in insecure.log.read_text(encoding="utf-8")
        hook = f"{insecure.url}/hooks/drift"
        statuses = [httpx.post(hook, content=_drift_body(f"local{n}"), headers=JSON).status_code for n in range(5)]
    assert statuses == [202, 202, 202, 429, 429]


def test_the_secret_can_come_from_a_prefect_secret_block(tmp_path: Path, prefect_api: str) -> None:
    save = "from prefect.blocks.system import Secret; import sys; Secret(value=sys.argv[1]).save('hook-secret')"
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    subprocess.run([str(BIN / "python"), "-c", save, SECRET], env=env, check=True, capture_output=True, timeout=120)
    limits = {"secret_block": "hook-secret"}
    with start_receiver(tmp_path, _env(tmp_path, prefect_api, limits, None)) as from_block:
        hook = f"{from_block.url}/hooks/drift"
        body = _drift_body("block")
        assert httpx.post(hook, content=body, headers=JSON).status_code == 401
        assert httpx.post(hook, content=body, headers=_signed(body)).status_code == 202


def test_data_notices_outside_the_landing_roots_are_refused_422_and_emit_nothing(
    receiver: Receiver, prefect_api: str
) -> None:
    hook = f"{receiver.url}/hooks/data"
    inside = str(receiver.log.parent / "day1.parquet")
    hostile = ["/dev/zero", "/etc/shadow", f"{receiver.log.parent}/../../etc/passwd", "\\\\host\\share\\a.csv"]
    answers = {}
    for path in hostile:
        body = json.dumps({"model": "churn", "source": "hostile", "files": [inside, path]}).encode()
        answers[path] = httpx.post(hook, content=body, headers=_signed(body))
    assert {path: a.status_code for path, a in answers.items()} == dict.fromkeys(hostile, 422)
    assert "'/dev/zero' is not under any of webhook.landing_roots" in answers["/dev/zero"].json()["detail"]
    body = json.dumps({"model": "churn", "source": "hostile", "files": [inside]}).encode()
    accepted = httpx.post(hook, content=body, headers=_signed(body))
    assert accepted.status_code == 202
    wait_for(lambda: _event(prefect_api, accepted.json()["event_id"]), 30, "the accepted notice")
    found = post(prefect_api, "/events/filter", {"filter": {"event": {"prefix": ["retrainer.data"]}}, "limit": 50})
    notices = [e for e in found["events"] if e["payload"].get("source") == "hostile"]
    assert [e["payload"]["files"] for e in notices] == [[inside]]


# --- what uvicorn buffers and how long it waits (raw sockets on loopback) -------------------------------


def _connect(receiver: Receiver) -> socket.socket:
    host, port = receiver.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=REQUEST_TIMEOUT + 10)


def _until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """What the server sends before ``deadline`` (monotonic), and whether it closed the connection by then."""
    received = b""
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                return received, True
            received += chunk
    except ConnectionResetError:
        return received, True
    except TimeoutError:
        return received, False


def test_an_oversized_request_head_is_refused_at_once(receiver: Receiver) -> None:
    head = b"POST /hooks/drift HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    started = time.monotonic()
    with _connect(receiver) as sock:
        try:
            # 8 MiB in one header, sent in pieces; the receiver stops reading long before the end.
            sock.sendall(head + b"X-Padding: ")
            for _ in range(128):
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, closed = _until_closed(sock, started + 5)
    assert closed and (answer.startswith(b"HTTP/1.1 400") or answer == b""), answer[:200]


def test_slow_clients_are_dropped_after_the_request_timeout(receiver: Receiver) -> None:
    heads = [_connect(receiver) for _ in range(50)]
    for n, sock in enumerate(heads):
        sock.sendall(b"POST /hooks/drift HTTP/1.1\r\nHost: x\r\n" if n % 2 else b"POS")
    body = _drift_body("slow")
    slow_body = _connect(receiver)
    signature = _signed(body)[SIGNATURE_HEADER]
    slow_body.sendall(
        b"POST /hooks/drift HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"{SIGNATURE_HEADER}: {signature}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    deadline = time.monotonic() + REQUEST_TIMEOUT + 3
    dropped = [_until_closed(sock, deadline) for sock in heads]
    answered, body_closed = _until_closed(slow_body, deadline)
    for sock in [*heads, slow_body]:
        sock.close()
    assert dropped == [(b"", True)] * len(heads), dropped[:3]
    assert answered.startswith(b"HTTP/1.1 408") and body_closed, answered[:200]


def test_a_client_hanging_up_mid_body_is_logged_at_info_without_a_traceback(receiver: Receiver) -> None:
    body = _drift_body("hangs-up")
    with _connect(receiver) as sock:
        sock.sendall(
            b"POST /hooks/drift HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"{SIGNATURE_HEADER}: {_signed(body)[SIGNATURE_HEADER]}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        time.sleep(0.5)
    wait_for(lambda: "hung up" in receiver.log.read_text(encoding="utf-8"), 10, "the disconnect in the log")
    log = receiver.log.read_text(encoding="utf-8")
    assert "Traceback" not in log and "Exception in ASGI application" not in log


# --- fuzz ------------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4))
_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
# Valid messages (to reach the model check and emission) and near-valid ones (to reach validation).
_valid = st.one_of(
    st.fixed_dictionaries(
        {"model": st.sampled_from(["churn", "nope"]), "drift_share": st.floats(0, 1)},
        optional={"source": _name, "alert_id": _name, "drifted_columns": st.lists(_name, max_size=5)},
    ),
    st.fixed_dictionaries(
        {"model": st.sampled_from(["churn", "nope"]), "files": st.lists(st.just("/landing/a.parquet"), min_size=1)},
        optional={"source": _name, "notice_id": _name},
    ),
)
_near_valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["churn", "", "CHURN"]) | _json},
    optional={
        "source": st.sampled_from(["fuzz", "has space"]) | _json,
        "alert_id": _text,
        "notice_id": _text,
        "drift_share": st.floats(0, 1) | _json,
        "drifted_columns": st.lists(_text | _json, max_size=5),
        "files": st.lists(st.sampled_from(["/landing/a.parquet", "relative.csv"]) | _text, max_size=3),
        "snapshot": _json | st.fixed_dictionaries({"metrics": _json}),
        "report_uri": _text,
    },
)
_body = st.one_of(
    (_valid | _near_valid).map(lambda m: json.dumps(m).encode()),
    _json.map(lambda j: json.dumps(j).encode()),
    st.binary(max_size=300),
)
# HTTP clients refuse to send header values with surrounding whitespace.
_header = _text.map(str.strip)
_content_type = st.tuples(st.integers(0, 9), _header).map(lambda t: t[1] if t[0] == 0 else "application/json")
_headers = st.fixed_dictionaries(
    {"Content-Type": _content_type}, optional={SIGNATURE_HEADER: _header, "X-Forwarded-For": _header}
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/hooks/drift", "/hooks/data"]),
    body=_body,
    headers=_headers,
    signing=st.sampled_from(["valid", "valid", "valid", "stale", "as generated"]),
)
def test_fuzzed_requests_never_cause_a_server_error(
    receiver: Receiver, path: str, body: bytes, headers: dict[str, str], signing: str
) -> None:
    sent = dict(headers)
    if signing != "as generated":
        sent[SIGNATURE_HEADER] = sign(SECRET, body, int(time.time()) - (1000 if signing == "stale" else 0))
    response = httpx.post(f"{receiver.url}{path}", content=body, headers=sent, timeout=30)
    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics shows the spread
    assert response.status_code < 500, response.text
