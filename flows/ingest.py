"""The ingest flow: check labelled files against the contract, store or quarantine each, announce."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.config import load_model_config
from tasks.emit import emit
from tasks.ingest import ingest_events, ingest_one, publish_ingest_report


@flow(name="ingest", log_prints=True)
def ingest(model: str, files: list[str]) -> State:
    """Ingest ``files`` for ``model`` in order, each file on its own.

    Every file is accepted or rejected by itself (a bad, missing or unreadable file never stops the
    others), and every accepted batch is announced with ``data.arrived``. A rejected file is data, not
    a fault: the run ends ``Completed``, named Accepted (every file stored), PartlyAccepted (some),
    Quarantined (none, at least one rejected) or Missing (none, every file missing), with every reason.

    Args:
        model: Model name from the config file.
        files: Parquet or CSV paths; they are read, never modified.
    """
    config = load_model_config(model)
    outcomes = []
    for source in files:
        # Announce each file as soon as it is decided, so a later crash cannot silence stored batches.
        outcomes.append(ingest_one(model, config, source))
        emit(ingest_events(model, config, outcomes[-1:]))
    report = publish_ingest_report(model, outcomes)
    return Completed(name=report.verdict, message=report.message, data=report)
