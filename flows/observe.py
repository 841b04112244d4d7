"""The observe flow: store unlabelled inference files as traffic, join waiting labels, announce."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.config import load_model_config
from tasks.emit import emit
from tasks.traffic import (
    join_events,
    join_waiting_labels,
    mark_joins_announced,
    observe_events,
    observe_one,
    publish_file_report,
)


@flow(name="observe", log_prints=True)
def observe(model: str, files: list[str]) -> State:
    """Store ``files`` as ``model``'s inference traffic, each file on its own, then join waiting labels.

    Each file is checked against the contract without the target (with the model's id column) and
    stored or quarantined by itself; each stored batch is announced with ``data.observed`` (the
    monitor checks it for drift). Labels that were waiting for these rows join them
    (``labels.joined``). Ends ``Completed`` named as the ingest does (Accepted, PartlyAccepted,
    Quarantined or Missing).

    Args:
        model: Model name from the config file.
        files: Parquet or CSV paths of inference rows (features, time, id; no target).
    """
    config = load_model_config(model)
    outcomes = []
    for source in files:
        outcomes.append(observe_one(model, config, source))
        emit(observe_events(model, outcomes[-1:]))
    joined = join_waiting_labels(model, config)
    emit(join_events(model, joined))
    mark_joins_announced(model, joined)
    report = publish_file_report(model, "observe", outcomes, joined)
    return Completed(name=report.verdict, message=report.message, data=report)
