"""The webhook receiver's HTTP app: ``POST /hooks/drift``, ``POST /hooks/data``, ``GET /healthz``.

Each POST passes the :class:`~retrainer.inbound.gate.Gate` (rate, size, type, signature, replay), is
validated as a :class:`~retrainer.inbound.messages.DriftAlert` or :class:`~retrainer.inbound.messages.DataNotice`
for a configured model, and becomes one event handed to the sink. Answers:

* 202 ``{"event_id", "event", "resource"}``: the event reached the sink (Prefect);
* 200 ``{"event_id": null, "reason"}``: a snapshot that shows no dataset drift (nothing to announce);
* 401 / 409 / 413 / 415 / 429: refused by the gate; 422 malformed body (including JSON nested deeper
  than :data:`MAX_JSON_DEPTH` and data notices naming files outside ``webhook.landing_roots``);
  404 unknown model; 408 the body did not arrive within ``webhook.request_timeout_seconds``;
* 503: the sink could not take the event (the sender should retry; nothing was emitted).

Every refusal is logged with its source, path, status and reason; never with the secret or body. A
client that hangs up mid-request is logged at INFO. :func:`serve` bounds what uvicorn buffers: the
request head is limited to :data:`MAX_HEAD_BYTES` and must arrive within the request timeout.
The only module that imports FastAPI and uvicorn (it is itself imported only by the commands that
serve it); Prefect enters through the sink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from retrainer.config import ProjectConfig, validation_problems
from retrainer.events import Event
from retrainer.inbound import messages
from retrainer.inbound.gate import MAX_BODY_BYTES, SIGNATURE_HEADER, Gate, Incoming, Refusal

log = logging.getLogger(__name__)
MAX_JSON_DEPTH = 64
MAX_HEAD_BYTES = 64 * 1024


class EventSink(Protocol):
    """Where accepted events go; ``emit`` returns once the event is delivered, or raises."""

    async def emit(self, event: Event) -> str:
        """Deliver ``event``; return its id."""
        ...


SinkFactory = Callable[[], AbstractAsyncContextManager[EventSink]]


class MemorySink:
    """An :class:`EventSink` that keeps the events it is given, in memory: the receiver without Prefect.

    For tests and dry runs. Set ``failing`` to make every ``emit`` raise, as an unreachable Prefect would.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.failing = False

    async def emit(self, event: Event) -> str:
        """Keep ``event``; return its id.

        Raises:
            ConnectionError: ``failing`` is set.
        """
        if self.failing:
            raise ConnectionError("the event sink is unreachable")
        self.events.append(event)
        return str(event.id)

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[MemorySink]:
        """This sink as the app's :data:`SinkFactory` wants it."""
        yield self


ToEvent = Callable[[Any], Event | None]


def create_app(project: ProjectConfig, gate: Gate, open_sink: SinkFactory) -> FastAPI:
    """The receiver app; ``open_sink`` is entered once at start-up and left at shutdown."""
    sinks: list[EventSink] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with open_sink() as sink:
            sinks.append(sink)
            yield

    app = FastAPI(title="retrainer webhook", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # No model names: the health check answers anyone.
        return {"status": "ok", "signed": gate.signed}

    @app.post("/hooks/drift")
    async def drift(request: Request) -> JSONResponse:
        return await _receive(request, messages.DriftAlert, messages.drift_event)

    @app.post("/hooks/data")
    async def data(request: Request) -> JSONResponse:
        return await _receive(request, messages.DataNotice, messages.data_event)

    async def _receive(
        request: Request, kind: type[BaseModel], to_event: Callable[[Any], Event | None]
    ) -> JSONResponse:
        incoming = _incoming(request)
        try:
            outcome = await _accept(request, incoming, kind)
        except ClientDisconnect:
            log.info("client %s hung up before its request to %s was complete", incoming.source, request.url.path)
            return JSONResponse({"error": "client_disconnected"}, status_code=400)
        if isinstance(outcome, Refusal):
            return _refuse(incoming, request.url.path, outcome)
        event = _to_event(outcome, to_event)
        if isinstance(event, Refusal):
            return _refuse(incoming, request.url.path, event)
        return await _announce(incoming, event, sinks[0])

    async def _accept(request: Request, incoming: Incoming, kind: type[BaseModel]) -> Any:
        """The validated message for a configured model, or the first refusal."""
        refusal = gate.before_body(incoming, time.time())
        if refusal is not None:
            return refusal
        try:
            body = await _read_capped(request, project.webhook.request_timeout_seconds)
        except TimeoutError:
            timeout = project.webhook.request_timeout_seconds
            return Refusal(408, "request_timeout", f"the body did not arrive within {timeout:g} s")
        refusal = gate.with_body(incoming, body, time.time())
        if refusal is not None:
            return refusal
        message = _parse(body, kind)
        if isinstance(message, Refusal):
            return message
        if message.model not in project.models:
            return Refusal(404, "unknown_model", f"no model {message.model!r} is configured")
        if isinstance(message, messages.DataNotice):
            outside = messages.outside_landing_roots(message, project.webhook.landing_roots)
            if outside is not None:
                return Refusal(422, "outside_landing_roots", outside)
        return message

    return app


def _to_event(message: Any, to_event: Callable[[Any], Event | None]) -> Event | Refusal | None:
    """The message's event; a message that validates but cannot become an event is a 422, never a 500."""
    try:
        return to_event(message)
    # A validated message should always convert; if one does not, the sender gets a 4xx naming the rule.
    except Exception:
        log.exception("a validated %s could not become an event", type(message).__name__)
        return Refusal(422, "unprocessable_body", "the message could not be turned into an event")


def _incoming(request: Request) -> Incoming:
    declared = request.headers.get("content-length")
    return Incoming(
        source=request.client.host if request.client else "unknown",
        content_type=request.headers.get("content-type"),
        declared_length=int(declared) if declared and declared.isdigit() else None,
        signature=request.headers.get(SIGNATURE_HEADER),
    )


async def _read_capped(request: Request, deadline_seconds: float) -> bytes:
    """The body; reading stops as soon as it passes the size limit (the gate then refuses it).

    Raises:
        TimeoutError: the body was not complete within ``deadline_seconds``.
        ClientDisconnect: the client hung up first.
    """
    chunks, size = [], 0
    async with asyncio.timeout(deadline_seconds):
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                break
    return b"".join(chunks)


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether ``document`` nests lists and objects deeper than ``limit`` (iterative: no recursion)."""
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes, kind: type[BaseModel]) -> Any:
    """The validated message, or a 422 refusal that says what is wrong (never echoing the input)."""
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        return Refusal(422, "malformed_json", f"body is not JSON: {str(exc)[:200]}")
    if not isinstance(document, dict):
        return Refusal(422, "malformed_body", "body must be a JSON object")
    if _depth_exceeds(document, MAX_JSON_DEPTH):
        return Refusal(422, "too_deep", f"body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep")
    try:
        return kind.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc)[:10])
        return Refusal(422, "invalid_body", problems[:1000])
    except RecursionError:
        return Refusal(422, "malformed_body", "body is nested too deeply")


def _refuse(incoming: Incoming, path: str, refusal: Refusal) -> JSONResponse:
    log.warning("refused %s from %s: %s %s: %s", path, incoming.source, refusal.status, refusal.rule, refusal.message)
    # After a timed-out body the connection cannot carry another request: close it instead of idling.
    headers = {"Connection": "close"} if refusal.status == 408 else None
    return JSONResponse({"error": refusal.rule, "detail": refusal.message}, status_code=refusal.status, headers=headers)


async def _announce(incoming: Incoming, event: Event | None, sink: EventSink) -> JSONResponse:
    if event is None:
        log.info("drift alert from %s shows no dataset drift: nothing emitted", incoming.source)
        return JSONResponse({"event_id": None, "reason": "the snapshot shows no dataset drift"}, status_code=200)
    try:
        event_id = await sink.emit(event)
    # Whatever stops delivery, the sender must retry: answer 503, never a half-accepted 202.
    except Exception:
        log.exception("could not deliver %s for %s from %s", event.name, event.model, incoming.source)
        return JSONResponse({"error": "sink_unavailable", "detail": "could not deliver the event"}, status_code=503)
    log.info("accepted %s for %s from %s: event %s", event.name, event.model, incoming.source, event_id)
    resource = event.resource["prefect.resource.id"]
    return JSONResponse({"event_id": event_id, "event": event.name, "resource": resource}, status_code=202)


def serve(app: FastAPI, host: str, port: int, request_timeout: float) -> None:
    """Serve ``app`` with uvicorn until interrupted; the client address is the socket's peer.

    A request head larger than :data:`MAX_HEAD_BYTES` is answered 400 and the connection closed; a
    connection that has not sent a whole request head within ``request_timeout`` seconds (after
    connecting, or after starting its next request) is closed.
    """
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        # h11, not httptools: h11 bounds the buffered request head, httptools buffers any size.
        http=_head_deadline_protocol(request_timeout),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=5,
        # proxy_headers off: a forwarded-for header must not pick the rate-limit bucket or the logged source.
        proxy_headers=False,
        access_log=False,
        log_level="info",
    )


def _head_deadline_protocol(timeout: float) -> type[asyncio.Protocol]:
    """The h11 protocol of uvicorn, closing connections whose request head is not complete within ``timeout`` s."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadlineProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                self._arm()
            elif self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(timeout, self._expire)

        def _expire(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closing %s: no complete request head within %g s", self.client or "a client", timeout)
                self.transport.close()

    return HeadDeadlineProtocol
