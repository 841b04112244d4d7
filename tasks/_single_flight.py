"""One retrain per model at a time, across every worker: a Prefect global concurrency limit per model.

The slot is a Prefect concurrency lease. Its holder (flow run, lease, host, pid) is recorded in the
model's incident book and renews a heartbeat and the lease every few seconds. A retrain waiting for
the slot checks the holder for real: if its Prefect flow run has ended, or its process is gone (see
``retrainer.monitor.incidents.holder_gone``), the waiter marks that run ``Crashed``, frees its lease
and takes the slot within seconds, instead of waiting for the lease to expire.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID

from retrainer.errors import StorageError
from retrainer.monitor.incidents import (
    IncidentBook,
    IncidentState,
    SlotHolder,
    heartbeat,
    hold_slot,
    holder_gone,
    release_slot,
    retrain_crashed,
)
from tasks._common import workspace

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

# The server's shortest lease; the heartbeat renews it long before it runs out.
LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 5.0
POLL_SECONDS = 1.0
_LOCKED = 423


def retrain_limit_name(model: str) -> str:
    """Name of the global concurrency limit that serialises ``model``'s retrains."""
    return f"retrainer-retrain-{model}"


def ensure_retrain_limits(models: Iterable[str]) -> None:
    """Create (or reset to 1) the retrain limit of each model; safe to call from many processes."""
    from prefect import get_client
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        for model in models:
            try:
                client.upsert_global_concurrency_limit_by_name(retrain_limit_name(model), 1)
            except ObjectAlreadyExists:
                continue  # another process created it between our read and our create


@contextmanager
def single_flight(model: str, flow_run_id: str | None = None) -> Iterator[None]:
    """Hold ``model``'s retrain slot for the block; a second retrain waits here until the first ends or dies.

    Args:
        model: Model name.
        flow_run_id: The Prefect flow run holding the slot (recorded so a waiter can check its state).
    """
    from prefect import get_client

    ensure_retrain_limits([model])
    book = workspace().incidents(model)
    with get_client(sync_client=True) as client:
        lease_id = _acquire(client, model, book, flow_run_id)
        try:
            holder = SlotHolder.here(flow_run_id, str(lease_id), datetime.now(UTC))
            book.update(lambda state: (hold_slot(state, holder), None))
            with _heartbeat(book, lease_id):
                yield
            book.update(lambda state: (release_slot(state, holder.lease_id), None))
        finally:
            client.release_concurrency_slots_with_lease(lease_id)


def _acquire(client: SyncPrefectClient, model: str, book: IncidentBook, flow_run_id: str | None) -> UUID:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.exceptions import PrefectHTTPStatusError

    owner = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id)) if flow_run_id else None
    while True:
        try:
            granted = client.increment_concurrency_slots_with_lease(
                [retrain_limit_name(model)], 1, "concurrency", LEASE_SECONDS, holder=owner
            )
            return UUID(granted.json()["lease_id"])
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != _LOCKED:
                raise
        _free_dead_holder(client, book)
        time.sleep(POLL_SECONDS)


def _free_dead_holder(client: SyncPrefectClient, book: IncidentBook) -> None:
    """If the recorded holder's run ended or its process is gone: mark it crashed and free its lease."""
    holder = book.read().slot
    if holder is None:
        return
    ended = _run_ended(client, holder.flow_run_id)
    if not ended and not holder_gone(holder, datetime.now(UTC)):
        return
    if not ended and holder.flow_run_id:
        _mark_crashed(client, holder)
    book.update(lambda state: (_free(client, state, holder.lease_id), None))


def _free(client: SyncPrefectClient, state: IncidentState, lease_id: str) -> IncidentState:
    # Under the book's lock and only while the record still names the lease: two waiters never
    # both decrement the limit (the second would free the slot of the retrain that just took it).
    if state.slot is None or state.slot.lease_id != lease_id:
        return state
    client.release_concurrency_slots_with_lease(UUID(lease_id))
    return release_slot(retrain_crashed(state, datetime.now(UTC)), lease_id)


def _run_ended(client: SyncPrefectClient, flow_run_id: str | None) -> bool:
    from prefect.exceptions import ObjectNotFound

    if not flow_run_id:
        return False
    try:
        state = client.read_flow_run(UUID(flow_run_id)).state
    except ObjectNotFound:
        return True
    return state is not None and state.is_final()


def _mark_crashed(client: SyncPrefectClient, holder: SlotHolder) -> None:
    from prefect.states import Crashed

    message = f"the process (pid {holder.pid} on {holder.host}) holding the retrain slot is gone"
    client.set_flow_run_state(UUID(str(holder.flow_run_id)), Crashed(message=message), force=True)


@contextmanager
def _heartbeat(book: IncidentBook, lease_id: UUID) -> Iterator[None]:
    """Renew the lease and the holder's heartbeat every few seconds while the block runs."""
    stop = threading.Event()
    # The thread runs in a copy of this context: Prefect's settings (API URL) may live in a context variable.
    run = contextvars.copy_context().run
    beat = threading.Thread(target=run, args=(_beat, book, lease_id, stop), name="retrain-heartbeat", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()


def _beat(book: IncidentBook, lease_id: UUID, stop: threading.Event) -> None:
    from prefect import get_client
    from prefect.logging import get_logger

    with get_client(sync_client=True) as client:
        while not stop.wait(HEARTBEAT_SECONDS):
            # One missed beat is harmless (the lease and the heartbeat outlive several); a dead thread
            # would let the lease lapse under a live retrain.
            try:
                client.renew_concurrency_lease(lease_id, LEASE_SECONDS)
            except Exception as exc:  # noqa: BLE001
                get_logger("retrainer.single_flight").warning("could not renew retrain lease %s: %s", lease_id, exc)
                continue
            try:
                book.update(lambda state: (heartbeat(state, str(lease_id), datetime.now(UTC)), None))
            except StorageError as exc:
                get_logger("retrainer.single_flight").warning("could not record the retrain heartbeat: %s", exc)
