"""The webhook receiver's HTTP app: ``POST /hooks/drift``, ``POST /hooks/data``, ``GET /healthz``.

Each POST passes the :class:`~retrainer.inbound.gate.Gate` (rate, size, type, signature, replay), is
validated as a :class:`~retrainer.inbound.messages.DriftAlert` or :class:`~retrainer.inbound.messages.DataNotice`
for a configured model, and becomes one event handed to the sink. Answers:

* 202 ``{"event_id", "event", "resource"}``: the event reached the sink (Prefect);
* 200 ``{"event_id": null, "reason"}``: a snapshot that shows no dataset drift (nothing to announce);
* 401 / 409 / 413 / 415 / 429: refused by the gate; 422 malformed body; 404 unknown model;
* 503: the sink could not take the event (the sender should retry; nothing was emitted).

Every refusal is logged with its source, path, status and reason; never with the secret or body.
The only module that imports FastAPI and uvicorn (it is itself imported only by the commands that
serve it); Prefect enters through the sink.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from retrainer.config import ProjectConfig, validation_problems
from retrainer.events import Event
from retrainer.inbound import messages
from retrainer.inbound.gate import MAX_BODY_BYTES, SIGNATURE_HEADER, Gate, Incoming, Refusal

log = logging.getLogger(__name__)


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
        refusal = gate.before_body(incoming, time.time())
        if refusal is None:
            body = await _read_capped(request)
            refusal = gate.with_body(incoming, body, time.time())
        if refusal is None:
            message = _parse(body, kind)
            if isinstance(message, Refusal):
                refusal = message
            elif message.model not in project.models:
                refusal = Refusal(404, "unknown_model", f"no model {message.model!r} is configured")
        if refusal is not None:
            return _refuse(incoming, request.url.path, refusal)
        return await _announce(incoming, to_event(message), sinks[0])

    return app


def _incoming(request: Request) -> Incoming:
    declared = request.headers.get("content-length")
    return Incoming(
        source=request.client.host if request.client else "unknown",
        content_type=request.headers.get("content-type"),
        declared_length=int(declared) if declared and declared.isdigit() else None,
        signature=request.headers.get(SIGNATURE_HEADER),
    )


async def _read_capped(request: Request) -> bytes:
    """The body; reading stops as soon as it passes the size limit (the gate then refuses it)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(chunks)


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
    try:
        return kind.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc)[:10])
        return Refusal(422, "invalid_body", problems[:1000])
    except RecursionError:
        return Refusal(422, "malformed_body", "body is nested too deeply")


def _refuse(incoming: Incoming, path: str, refusal: Refusal) -> JSONResponse:
    log.warning("refused %s from %s: %s %s: %s", path, incoming.source, refusal.status, refusal.rule, refusal.message)
    return JSONResponse({"error": refusal.rule, "detail": refusal.message}, status_code=refusal.status)


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


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted; the client address is the socket's peer."""
    import uvicorn

    # proxy_headers off: a forwarded-for header must not pick the rate-limit bucket or the logged source.
    uvicorn.run(app, host=host, port=port, proxy_headers=False, access_log=False, log_level="info")
