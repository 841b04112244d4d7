"""The webhook receiver's event sink: events sent over one Prefect events connection, each confirmed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from retrainer.events import Event

if TYPE_CHECKING:
    from prefect.events.clients import EventsClient


class PrefectSink:
    """Delivers events over one events-client connection, confirming each before returning.

    The client is not safe for concurrent sends, so emits take turns.
    """

    def __init__(self, client: EventsClient) -> None:
        self._client = client
        self._turn = asyncio.Lock()

    async def emit(self, event: Event) -> str:
        """Send ``event`` and wait for the server to confirm it; return its id."""
        from prefect.events import Event as PrefectEvent
        from prefect.events import RelatedResource, Resource

        prefect_event = PrefectEvent(
            id=event.id,
            event=event.name,
            resource=Resource(event.resource),
            related=[RelatedResource(r) for r in event.related],
            payload=event.payload,
        )
        async with self._turn:
            await self._client.emit(prefect_event)
        return str(event.id)


@asynccontextmanager
async def prefect_sink() -> AsyncIterator[PrefectSink]:
    """A :class:`PrefectSink` on ``PREFECT_API_URL`` (a server or a Cloud workspace).

    Raises:
        ConfigError: ``PREFECT_API_URL`` is not set (events would go to a throw-away server).
    """
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL

    from retrainer.errors import ConfigError

    if not PREFECT_API_URL.value():
        raise ConfigError("set PREFECT_API_URL to the Prefect server or Cloud workspace that should get the events")
    # checkpoint_every=1: the server confirms (ping/pong) every event before the sender hears 202.
    async with get_events_client(reconnection_attempts=3, checkpoint_every=1) as client:
        yield PrefectSink(client)
