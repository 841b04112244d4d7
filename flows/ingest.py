"""The ingest flow: check labelled files against the contract, store or quarantine each, announce."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.events import emit
from tasks.ingest import ingest_events, ingest_one, publish_ingest_report


@flow(name="ingest", log_prints=True)
def ingest(model: str, files: list[str]) -> State:
    """Ingest ``files`` for ``model`` in order.

    Ends ``Completed`` named Accepted when every file was stored, or Quarantined (with every reason)
    when at least one was rejected; a rejected file is data, not a fault.

    Args:
        model: Model name from the config file.
        files: Parquet or CSV paths; they are read, never modified.
    """
    outcomes = [ingest_one(model, source) for source in files]
    for event in ingest_events(model, outcomes):
        emit(event)
    publish_ingest_report(model, outcomes)
    rejected = [str(o.error) for o in outcomes if o.error is not None]
    if rejected:
        return Completed(name="Quarantined", message="\n".join(rejected), data=outcomes)
    return Completed(name="Accepted", message=f"{len(outcomes)} batch(es) accepted", data=outcomes)
