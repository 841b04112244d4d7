"""Unlabelled traffic and late labels through the real Prefect engine, Evidently, LightGBM and MLflow on SQLite.

The story of a team whose labels come days late: traffic drifts, the monitor opens an incident on
unlabelled rows, the retrain waits for labels, the labels join, and the retrain runs on them.
"""

from __future__ import annotations

import time
from typing import Any

import polars as pl
import pytest

from flows.ingest import ingest
from flows.label import label
from flows.monitor import monitor
from flows.observe import observe
from flows.retrain import retrain
from retrainer import events
from retrainer.app.status import model_status
from retrainer.data.synth import demo_config, make_batch
from tests.conftest import Project

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROWS = 4000
ID = "request_id"


def _config() -> dict[str, Any]:
    config = demo_config()
    model = config["models"]["churn"]  # type: ignore[index]
    model["labels"] = {"min_rows_after_incident": 1500}
    return config


def _day(day: int, shift: float = 0.0) -> pl.DataFrame:
    return make_batch(ROWS, seed=day, day=day, shift=shift).with_row_index(ID, offset=day * 100_000)


def _bootstrap(project: Project) -> None:
    files = [project.file(f"d{d}", _day(d)) for d in range(3)]
    assert ingest(model="churn", files=files, return_state=True).name == "Accepted"
    assert retrain(model="churn", reason="initial", return_state=True).name == "Promoted"


def test_drifted_traffic_opens_an_incident_whose_retrain_waits_for_labels_and_runs_when_they_join(
    project: Project,
) -> None:
    project.write_config(_config())
    _bootstrap(project)
    drifted = _day(5, shift=1.0)
    traffic = project.file("traffic-d5", drifted.drop("churned"))

    observed = observe(model="churn", files=[traffic], return_state=True)
    batch_id = project.workspace().data("churn").traffic.manifest().batches[-1].batch_id
    checked = monitor(model="churn", batch_id=batch_id, kind="inference", return_state=True)

    assert observed.name == "Accepted", observed.message
    assert checked.name == "Incident", checked.message
    summary = checked.result()
    assert summary["window_kind"] == "inference" and summary["performance"] is None and summary["drift_detected"]
    book = project.workspace().incidents("churn")
    incident = book.read().open
    assert incident is not None
    first = retrain(model="churn", reason="drift", incident_key=incident.key, return_state=True)
    assert first.name == "WaitingForLabels", first.message
    assert f"0 of the drifted window's {ROWS:,} inference rows are labelled" in first.message
    assert book.read().open is not None  # the incident stays open

    # Two days later, labels for half the drifted rows, plus 300 for rows not observed yet (they wait).
    early = _day(6, shift=1.0).select(ID, "churned").head(300)
    labels = pl.concat([drifted.select(ID, "churned").head(ROWS // 2), early])
    joined = label(model="churn", files=[project.file("labels-d7", labels)], return_state=True)

    assert joined.name == "Accepted", joined.message
    ws = project.workspace()
    [announced] = _joined_events(ws.store("churn").manifest().batches[-1].batch_id)
    assert announced.event == events.LABELS_JOINED
    assert announced.payload["incident_key"] == incident.key and announced.payload["rows"] == ROWS // 2
    assert announced.resource[events.NEW_DATA_ACTION] == events.RETRAIN
    status = model_status(ws, "churn")
    assert status["traffic"]["inference_batches"] == 1 and status["traffic"]["pending_labels"] == 300
    assert status["traffic"]["labelled_share"] == pytest.approx(0.5)

    joined_batch = ws.store("churn").manifest().batches[-1].batch_id
    performance = monitor(model="churn", batch_id=joined_batch, return_state=True)
    judged = performance.result()
    assert performance.name == "Attached" and judged["window_kind"] == "labelled"
    assert judged["performance"]["rows"] == ROWS // 2 and judged["label_lag_seconds"] > 0

    second = retrain(
        model="churn",
        reason="labels joined",
        incident_key=incident.key,
        event_name=events.LABELS_JOINED,
        event_payload=announced.payload,
        return_state=True,
    )

    assert second.name in {"Promoted", "Rejected"}, second.message
    record = _decision_record(str(second.state_details.flow_run_id))
    assert f"{ROWS // 2:,} of the drifted window's {ROWS:,} inference rows are labelled (50%)" in record
    assert book.read().open is None  # answered


def _joined_events(batch_id: str) -> list[Any]:
    """The ``labels.joined`` events the server received for ``batch_id`` (waiting up to 20 s for one)."""
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[events.LABELS_JOINED])), limit=50)
        found = [e for e in page.events if e.payload.get("batch_id") == batch_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _decision_record(flow_run_id: str) -> str:
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        wanted = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
        found = client.read_artifacts(artifact_filter=wanted)
    return "\n".join(str(a.data) for a in found if a.type == "markdown")


def test_a_join_whose_event_never_left_is_announced_by_the_next_run(project: Project) -> None:
    from pathlib import Path

    from retrainer.data.traffic import join_labels, label_file

    rows = _day(8)
    ws = project.workspace()
    data, config = ws.data("churn"), ws.model("churn")
    assert observe(model="churn", files=[project.file("t8", rows.drop("churned"))], return_state=True).is_completed()
    labels = project.file("l8", rows.select(ID, "churned"))
    # What a run killed after storing the joined batch, before emitting its event, leaves behind.
    assert label_file(data, config, Path(labels)).ok
    interrupted = join_labels(data, config)
    assert interrupted.batch is not None and interrupted.unannounced == [interrupted.batch]

    again = label(model="churn", files=[labels], return_state=True)  # the same file again: nothing new joins

    assert again.name == "Quarantined"
    assert join_labels(data, config).unannounced == []

    assert _joined_events(interrupted.batch.batch_id), "the interrupted join's labels.joined was never emitted"
