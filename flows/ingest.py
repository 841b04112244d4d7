"""The ingest flow: check labelled files against the contract, store or quarantine each, announce."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.config import load_model_config
from tasks.emit import emit
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
    config = load_model_config(model)
    outcomes = [ingest_one(model, config, source) for source in files]
    emit(ingest_events(model, config, outcomes))
    report = publish_ingest_report(model, outcomes)
    if report.rejected:
        return Completed(name="Quarantined", message=report.message, data=report)
    return Completed(name="Accepted", message=report.message, data=report)
