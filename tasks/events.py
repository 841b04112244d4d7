"""Handing retrainer events to Prefect's event system."""

from __future__ import annotations

from prefect import task

from retrainer.events import Event


@task(name="emit-event", retries=2, retry_delay_seconds=1)
def emit(event: Event) -> str:
    """Emit ``event`` with its deterministic id; return the id.

    Raises:
        RuntimeError: Prefect refused the event (``emit_event`` returned nothing).
    """
    from prefect.events import emit_event

    emitted = emit_event(
        event=event.name,
        resource=event.resource,
        payload=event.payload,
        related=event.related or None,
        id=event.id,
    )
    if emitted is None:
        raise RuntimeError(f"Prefect did not accept event {event.name} for {event.model}")
    return str(emitted.id)
