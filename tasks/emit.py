"""The task that hands retrainer events to Prefect's event system."""

from __future__ import annotations

from prefect import task

from retrainer.events import Event


@task(name="emit-events", retries=2, retry_delay_seconds=1)
def emit(events: list[Event]) -> list[str]:
    """Emit each event with its deterministic id; return the ids.

    Raises:
        RuntimeError: Prefect refused an event (``emit_event`` returned nothing).
    """
    return [_emit_one(event) for event in events]


def _emit_one(event: Event) -> str:
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
