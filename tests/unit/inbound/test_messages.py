from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from retrainer import events
from retrainer.inbound.messages import (
    DataNotice,
    DriftAlert,
    DriftedColumn,
    data_event,
    drift_event,
    outside_landing_roots,
    read_snapshot,
)

# The keys of the drift.detected payload the monitor emits (tests/unit/monitor/test_incidents.py checks them there).
MONITOR_PAYLOAD_KEYS = {
    "incident_key",
    "reason",
    "drift_share",
    "drift_detected",
    "top_columns",
    "prediction_drift",
    "report_uri",
    "champion_version",
    "batch_ids",
    "check_id",
    "window_kind",
}


def _evidently_snapshot(shift: float, seed: int = 0) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    rng = np.random.default_rng(seed)
    plans = rng.choice(["x", "y"], 800)  # the same on both sides: never drifts
    reference = pd.DataFrame({"a": rng.normal(size=800), "b": rng.normal(size=800), "c": plans})
    current = pd.DataFrame({"a": rng.normal(shift, 1, 800), "b": rng.normal(shift, 1, 800), "c": plans})
    definition = DataDefinition(numerical_columns=["a", "b"], categorical_columns=["c"])
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return dict(json.loads(snapshot.json()))


def test_compact_alert_becomes_the_monitors_drift_event() -> None:
    alert = DriftAlert(
        model="churn",
        source="nightly-evidently",
        alert_id="run-42",
        drift_share=0.6,
        drifted_columns=["tenure", {"column": "plan", "score": 0.3, "method": "jensenshannon"}],
        report_uri="s3://reports/42.html",
    )
    event = drift_event(alert)
    assert event is not None
    key = "churn:alert:nightly-evidently:run-42"
    assert event.name == events.DRIFT_DETECTED and event.model == "churn"
    assert event.id == events.event_id_for(f"retrainer.drift.detected:{key}")
    assert event.resource["prefect.resource.id"] == "retrainer.model.churn"
    assert set(event.payload) == MONITOR_PAYLOAD_KEYS
    assert event.payload["incident_key"] == key and event.payload["drift_share"] == 0.6
    assert event.payload["top_columns"] == [
        {"column": "tenure", "score": None, "method": None},
        {"column": "plan", "score": 0.3, "method": "jensenshannon"},
    ]
    assert {"prefect.resource.id": f"retrainer.incident.{key}", "prefect.resource.role": "incident"} in event.related
    assert {"prefect.resource.id": "retrainer.source.nightly-evidently", "prefect.resource.role": "source"} in (
        event.related
    )


def test_an_alert_without_an_id_is_keyed_by_its_content() -> None:
    first = DriftAlert(model="churn", drift_share=0.7, drifted_columns=["a"])
    again = DriftAlert.model_validate_json(first.model_dump_json())
    other = DriftAlert(model="churn", drift_share=0.8, drifted_columns=["a"])
    assert first.key == again.key != other.key
    assert drift_event(first).id == drift_event(again).id  # type: ignore[union-attr]


def test_snapshot_alert_reads_share_and_drifted_columns_from_evidently() -> None:
    snapshot = _evidently_snapshot(shift=1.0)
    drift = read_snapshot(snapshot)
    assert drift.detected and drift.share == pytest.approx(2 / 3)
    assert [c.column for c in drift.columns] == ["a", "b"]
    event = drift_event(DriftAlert(model="churn", snapshot=snapshot))
    assert event is not None and event.payload["drift_share"] == pytest.approx(2 / 3)
    assert [c["column"] for c in event.payload["top_columns"]] == ["a", "b"]
    assert all(c["method"] == "K-S p_value" and c["score"] < 0.05 for c in event.payload["top_columns"])


def test_snapshot_without_dataset_drift_announces_nothing() -> None:
    snapshot = _evidently_snapshot(shift=0.0)
    assert not read_snapshot(snapshot).detected
    assert drift_event(DriftAlert(model="churn", snapshot=snapshot)) is None


@pytest.mark.parametrize(
    "body",
    [
        {"model": "churn"},
        {"model": "churn", "drift_share": 1.5},
        {"model": "Churn!", "drift_share": 0.5},
        {"model": "churn", "drift_share": 0.5, "snapshot": {"metrics": []}},
        {"model": "churn", "snapshot": {"metrics": []}},
        {"model": "churn", "snapshot": {"metrics": [{"config": {"type": "x:DriftedColumnsCount"}, "value": 3}]}},
        {"model": "churn", "snapshot": {"metrics": 7}},
        {"model": "churn", "drift_share": 0.5, "colour": "red"},
        {"model": "churn", "drift_share": 0.5, "source": "has space"},
        {"model": "churn", "drift_share": 0.5, "drifted_columns": [""]},
    ],
)
def test_malformed_alerts_are_refused_by_validation(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DriftAlert.model_validate(body)


def test_data_notice_becomes_an_ingest_request_for_its_files() -> None:
    notice = DataNotice(model="churn", source="airflow", files=["/landing/2026-11-27.parquet"], notice_id="dag-7")
    event = data_event(notice)
    assert event.name == events.DATA_ARRIVED
    assert event.resource[events.NEW_DATA_ACTION] == events.INGEST
    assert event.payload == {
        "files": ["/landing/2026-11-27.parquet"],
        "source": "airflow",
        "notice_id": "dag-7",
        "kind": "labelled",
    }
    assert event.id == events.event_id_for("retrainer.data.arrived:churn:notice:airflow:dag-7")
    assert {"prefect.resource.id": "retrainer.source.airflow", "prefect.resource.role": "source"} in event.related


@pytest.mark.parametrize("files", [[], ["relative/path.parquet"], ["/ok.parquet", "also/relative.csv"], ["/a\x00b"]])
def test_data_notice_needs_absolute_paths(files: list[str]) -> None:
    with pytest.raises(ValidationError):
        DataNotice(model="churn", files=files)


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("/landing/../etc/shadow", "'..'"),
        ("/landing/a/../../etc/passwd", "'..'"),
        ("\\\\server\\share\\a.parquet", "POSIX"),
        ("C:\\landing\\a.parquet", "POSIX"),
        ("/landing/a\x01.parquet", "control"),
        ("/" + "a" * 5000, "characters"),
    ],
)
def test_data_notice_paths_have_a_fixed_lexical_meaning(path: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        DataNotice(model="churn", files=[path])


@pytest.mark.parametrize(
    ("files", "roots", "refused"),
    [
        (["/landing/a.parquet"], [], "not configured"),
        (["/landing/a.parquet"], ["/landing"], None),
        (["/landing/./day1//a.parquet"], ["/landing/"], None),
        (["/landing/a.parquet", "/dev/zero"], ["/landing"], "'/dev/zero' is not under"),
        (["/landing-other/a.parquet"], ["/landing"], "is not under"),
        (["/landing"], ["/landing"], "is not under"),
        (["/etc/shadow"], ["/landing", "/srv/drop"], "is not under"),
        (["/srv/drop/x.csv"], ["/landing", "/srv/drop"], None),
        (["s3://data/landing/day1/a.parquet"], ["s3://data/landing/"], None),
        (["s3://data-evil/landing/a.parquet"], ["s3://data/landing"], "is not under"),
        (["s3://data/landing-other/a.parquet"], ["s3://data/landing"], "is not under"),
        # S3 keys are literal: these name objects outside the landing prefix.
        (["s3://data//landing/a.parquet"], ["s3://data/landing"], "is not under"),
        (["s3://data/./landing/a.parquet"], ["s3://data/landing"], "is not under"),
        (["s3://data/landing/./a.parquet"], ["s3://data/landing"], "is not under"),
        (["s3://data/landing"], ["s3://data/landing"], "is not under"),
        (["/data/landing/a.parquet"], ["s3://data/landing"], "is not under"),
        (["s3://landing/a.parquet"], ["/landing"], "is not under"),
    ],
)
def test_data_notices_name_files_under_the_landing_roots_only(
    files: list[str], roots: list[str], refused: str | None
) -> None:
    problem = outside_landing_roots(DataNotice(model="churn", files=files), roots)
    assert problem is None if refused is None else refused in (problem or "")


def test_the_sender_names_the_field_a_message_gets_wrong_before_sending() -> None:
    from retrainer.errors import ConfigError
    from retrainer.inbound.sender import data_notice, drift_alert

    with pytest.raises(ConfigError, match=r"invalid DriftAlert: <root>: Value error, drift_share is required"):
        drift_alert("churn", source="ci")
    with pytest.raises(ConfigError, match=r"invalid DataNotice: source: String should match pattern"):
        data_notice("churn", ["/landing/a.parquet"], source="has space")


def test_messages_become_the_events_of_the_shared_constructors() -> None:
    alert = DriftAlert(model="churn", source="ci", alert_id="run-9", drift_share=0.6, drifted_columns=["tenure"])
    key = "churn:alert:ci:run-9"
    evidence = events.DriftEvidence(
        check_id="run-9",
        drift_share=0.6,
        drift_detected=True,
        top_columns=[DriftedColumn(column="tenure")],
    )
    expected = events.drift_detected(
        model="churn", incident_key=key, reason="drift alert run-9 from ci", evidence=evidence, source="ci"
    )
    assert drift_event(alert) == expected
    notice = DataNotice(model="churn", source="airflow", files=["/landing/a.parquet"], notice_id="dag-7")
    landed = events.files_landed(model="churn", files=["/landing/a.parquet"], source="airflow", notice_id="dag-7")
    assert data_event(notice) == landed
