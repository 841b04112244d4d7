"""One retrain per model at a time, across every worker: a Prefect global concurrency limit per model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

# Retrains hold the slot for their whole run; the lease is renewed in the background while they do.
LEASE_SECONDS = 600.0


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
def single_flight(model: str) -> Iterator[None]:
    """Hold ``model``'s retrain slot for the block; a second retrain waits here until the first ends."""
    from prefect.concurrency.sync import concurrency

    ensure_retrain_limits([model])
    with concurrency(retrain_limit_name(model), occupy=1, strict=True, lease_duration=LEASE_SECONDS):
        yield
