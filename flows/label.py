"""The label flow: keep late label files, join them to the inference traffic by id, announce."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.config import load_model_config
from tasks.emit import emit
from tasks.traffic import (
    join_events,
    join_waiting_labels,
    label_events,
    label_one,
    mark_joins_announced,
    publish_file_report,
)


@flow(name="label", log_prints=True)
def label(model: str, files: list[str]) -> State:
    """Keep ``files`` of ``(id, target)`` rows for ``model``, each whole or quarantined whole, then join.

    Labels whose inference rows are stored join them as one new labelled batch (``labels.joined``:
    the monitor judges the champion on it, or a retrain waiting for labels runs); the others wait
    for their rows. Ends ``Completed`` named as the ingest does.

    Args:
        model: Model name from the config file.
        files: Parquet or CSV paths with the model's id column, its target and optionally
            ``labels.time_column``.
    """
    config = load_model_config(model)
    outcomes = []
    for source in files:
        outcomes.append(label_one(model, config, source))
        emit(label_events(model, outcomes[-1:]))
    joined = join_waiting_labels(model, config)
    emit(join_events(model, joined))
    mark_joins_announced(model, joined)
    report = publish_file_report(model, "label", outcomes, joined)
    return Completed(name=report.verdict, message=report.message, data=report)
