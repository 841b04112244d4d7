"""The event vocabulary: names, resource, deterministic ids, and one payload test per constructor."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from retrainer import events
from retrainer.errors import Violation
from retrainer.monitor.performance import Performance

ROOT = Path(__file__).resolve().parents[2]
MODEL_LABELS = {"prefect.resource.id", "prefect.resource.name", "retrainer.model"}
DRIFT_KEYS = {
    "incident_key": str,
    "reason": str,
    "drift_share": float,
    "drift_detected": bool,
    "top_columns": list,
    "prediction_drift": (float, type(None)),
    "report_uri": (str, type(None)),
    "champion_version": (str, type(None)),
    "batch_ids": list,
    "check_id": str,
    "window_kind": str,
}


@dataclass(frozen=True)
class _Column:
    column: str
    score: float | None
    method: str | None


def _performance(degraded: bool = True) -> Performance:
    return Performance("roc_auc", 0.71, 0.8, -0.09, 0.02, degraded, 400, 200)


def _assert_payload_types(payload: dict[str, Any], types: dict[str, Any]) -> None:
    assert set(payload) == set(types)
    for key, expected in types.items():
        assert isinstance(payload[key], expected), (key, payload[key])


def _assert_on_model(event: events.Event, model: str, labels: dict[str, str] | None = None) -> None:
    assert event.model == model
    assert event.resource == {
        "prefect.resource.id": f"retrainer.model.{model}",
        "prefect.resource.name": model,
        "retrainer.model": model,
        **(labels or {}),
    }
    assert all(isinstance(value, str) for value in event.resource.values())


def _assert_keyed(event: events.Event, again: events.Event, key: str) -> None:
    assert event.key == key
    assert isinstance(event.id, uuid.UUID)
    assert event.id == again.id == events.event_id_for(f"{event.name}:{key}")


def _evidence(**changes: Any) -> events.DriftEvidence:
    fields: dict[str, Any] = {
        "check_id": "check-002",
        "drift_share": 0.75,
        "drift_detected": True,
        "top_columns": [_Column("c", 0.9, "wasserstein"), _Column("a", None, "unseen_categories")],
        "prediction_drift": 0.2,
        "report_uri": "file:///reports/check-002.html",
        "champion_version": "3",
        "batch_ids": ["b1", "b2"],
    }
    return events.DriftEvidence(**{**fields, **changes})


def test_every_event_is_in_the_retrainer_namespace() -> None:
    assert all(name.startswith("retrainer.") for name in events.ALL_EVENTS)
    assert len(set(events.ALL_EVENTS)) == len(events.ALL_EVENTS)


def test_event_is_emitted_on_the_model_resource_with_a_stable_id() -> None:
    first = events.Event(events.DATA_ARRIVED, "churn", {"rows": 10}, key="churn:abc")
    again = events.Event(events.DATA_ARRIVED, "churn", {"rows": 11}, key="churn:abc")
    other = events.Event(events.DATA_REJECTED, "churn", {"rows": 10}, key="churn:abc")
    assert first.resource["prefect.resource.id"] == "retrainer.model.churn"
    assert all(isinstance(value, str) for value in first.resource.values())
    assert first.id == again.id
    assert first.id != other.id


def test_the_trigger_pattern_covers_every_model_resource_and_nothing_else() -> None:
    match = events.model_resources_match()
    assert (
        match == {"prefect.resource.id": events.MODEL_RESOURCE_PATTERN} == {"prefect.resource.id": "retrainer.model.*"}
    )
    match["retrainer.on_new_data"] = "ingest"
    assert events.model_resources_match() == {"prefect.resource.id": "retrainer.model.*"}  # a fresh dict each call
    prefix = events.MODEL_RESOURCE_PATTERN.removesuffix("*")
    assert events.model_resource_id("churn").startswith(prefix)
    assert not events.incident_resource("churn:v1")["prefect.resource.id"].startswith(prefix)


@pytest.mark.parametrize(("retrain_directly", "action"), [(False, "monitor"), (True, "retrain")])
def test_data_arrived_announces_an_accepted_batch(retrain_directly: bool, action: str) -> None:
    def made() -> events.Event:
        return events.data_arrived(
            model="churn",
            batch_id="b-20261127-ab12",
            sha256="ab" * 32,
            rows=1200,
            time_min="2026-11-01T00:00:00",
            time_max=None,
            source="/landing/2026-11-27.parquet",
            retrain_directly=retrain_directly,
        )

    event = made()
    assert event.name == events.DATA_ARRIVED
    _assert_on_model(event, "churn", {events.NEW_DATA_ACTION: action})
    assert event.related == []
    assert event.payload == {
        "batch_id": "b-20261127-ab12",
        "sha256": "ab" * 32,
        "rows": 1200,
        "time_min": "2026-11-01T00:00:00",
        "time_max": None,
        "source": "/landing/2026-11-27.parquet",
    }
    _assert_payload_types(
        event.payload,
        {"batch_id": str, "sha256": str, "rows": int, "time_min": (str, type(None)), "time_max": (str, type(None))}
        | {"source": str},
    )
    _assert_keyed(event, made(), "churn:b-20261127-ab12")


def test_files_landed_asks_the_ingest_to_run_on_them() -> None:
    def made() -> events.Event:
        return events.files_landed(model="churn", files=("/landing/a.parquet",), source="airflow", notice_id="dag-7")

    event = made()
    assert event.name == events.DATA_ARRIVED
    _assert_on_model(event, "churn", {events.NEW_DATA_ACTION: events.INGEST})
    assert event.related == [{"prefect.resource.id": "retrainer.source.airflow", "prefect.resource.role": "source"}]
    assert event.payload == {
        "files": ["/landing/a.parquet"],
        "source": "airflow",
        "notice_id": "dag-7",
        "kind": "labelled",
    }
    _assert_payload_types(event.payload, {"files": list, "source": str, "notice_id": str, "kind": str})
    _assert_keyed(event, made(), "churn:notice:airflow:dag-7")


@pytest.mark.parametrize(("kind", "action"), [("inference", events.OBSERVE), ("labels", events.LABEL)])
def test_files_landed_of_traffic_or_labels_start_the_observe_or_label_flow(kind: str, action: str) -> None:
    event = events.files_landed(model="churn", files=["/landing/t.parquet"], source="gw", notice_id="n", kind=kind)
    _assert_on_model(event, "churn", {events.NEW_DATA_ACTION: action})
    assert event.payload["kind"] == kind


def test_data_observed_asks_the_monitor_to_check_the_traffic_batch() -> None:
    def made() -> events.Event:
        return events.data_observed(
            model="churn", batch_id="t1", sha256="ab", rows=5, time_min=None, time_max=None, source="/t.parquet"
        )

    event = made()
    assert event.name == events.DATA_OBSERVED
    _assert_on_model(event, "churn", {events.NEW_DATA_ACTION: events.MONITOR})
    types = {"batch_id": str, "sha256": str, "rows": int, "source": str, "kind": str}
    _assert_payload_types(event.payload, {**types, "time_min": type(None), "time_max": type(None)})
    assert event.payload["kind"] == "inference"
    _assert_keyed(event, made(), "churn:observed:t1")


@pytest.mark.parametrize(("waiting", "action"), [(None, events.MONITOR), ("churn:v2:check-1", events.RETRAIN)])
def test_labels_joined_asks_the_monitor_or_the_waiting_retrain(waiting: str | None, action: str) -> None:
    def made() -> events.Event:
        return events.labels_joined(
            model="churn",
            batch_id="j1",
            rows=600,
            label_files=["l1"],
            inference_batches=["t1", "t2"],
            pending_rows=40,
            lag_median_seconds=172_800.0,
            lag_max_seconds=None,
            waiting_incident=waiting,
        )

    event = made()
    assert event.name == events.LABELS_JOINED
    _assert_on_model(event, "churn", {events.NEW_DATA_ACTION: action})
    assert event.payload["incident_key"] == waiting and event.payload["rows"] == 600
    assert event.payload["inference_batches"] == ["t1", "t2"] and event.payload["lag_max_seconds"] is None
    assert event.related == ([events.incident_resource(waiting)] if waiting else [])
    _assert_keyed(event, made(), "churn:joined:j1")


@pytest.mark.parametrize("quarantined", [Path("/home/quarantine/a.csv"), None])
def test_data_rejected_names_every_broken_rule(quarantined: Path | None) -> None:
    violations = [Violation("missing_column", "column is absent", "tenure"), Violation("empty", "no rows")]

    def made() -> events.Event:
        return events.data_rejected(
            model="churn", source=Path("/landing/a.csv"), violations=violations, quarantined=quarantined
        )

    event = made()
    assert event.name == events.DATA_REJECTED
    _assert_on_model(event, "churn")
    assert event.related == []
    assert event.payload == {
        "source": "/landing/a.csv",
        "violations": [
            "/landing/a.csv: column 'tenure': missing_column: column is absent",
            "/landing/a.csv: empty: no rows",
        ],
        "quarantined": str(quarantined) if quarantined else None,
    }
    _assert_payload_types(event.payload, {"source": str, "violations": list, "quarantined": (str, type(None))})
    assert all(isinstance(v, str) for v in event.payload["violations"])
    _assert_keyed(event, made(), f"churn:/landing/a.csv:{quarantined}")


def test_data_rejected_payload_stays_small_whatever_the_violations() -> None:
    huge = [Violation("not_castable", "x" * 1_000_000, f"c{i}") for i in range(500)]

    event = events.data_rejected(
        model="churn", source=Path("/landing/" + "d" * 5000 + ".csv"), violations=huge, quarantined=None
    )

    shown = event.payload["violations"]
    assert len(json.dumps(event.payload)) < 16 * 1024
    assert len(shown) == events.MAX_VIOLATIONS + 1
    assert shown[-1] == f"… and {500 - events.MAX_VIOLATIONS} more violation(s)"
    assert all(len(line) <= events.MAX_VIOLATION_CHARS + 30 for line in shown)
    assert shown[0].endswith(f"({len(huge[0].render('/landing/' + 'd' * 5000 + '.csv'))} chars)")


def test_drift_detected_opens_an_incident_with_its_evidence() -> None:
    key = "churn:v3:check-001"

    def made() -> events.Event:
        return events.drift_detected(
            model="churn", incident_key=key, reason=f"drift incident {key}", evidence=_evidence()
        )

    event = made()
    assert event.name == events.DRIFT_DETECTED
    _assert_on_model(event, "churn")
    assert event.related == [{"prefect.resource.id": f"retrainer.incident.{key}", "prefect.resource.role": "incident"}]
    _assert_payload_types(event.payload, DRIFT_KEYS)
    assert event.payload == {
        "incident_key": key,
        "reason": f"drift incident {key}",
        "drift_share": 0.75,
        "drift_detected": True,
        "top_columns": [
            {"column": "c", "score": 0.9, "method": "wasserstein"},
            {"column": "a", "score": None, "method": "unseen_categories"},
        ],
        "prediction_drift": 0.2,
        "report_uri": "file:///reports/check-002.html",
        "champion_version": "3",
        "batch_ids": ["b1", "b2"],
        "check_id": "check-002",
        "window_kind": "labelled",
    }
    _assert_keyed(event, made(), key)


def test_drift_detected_from_outside_names_its_source_and_carries_at_most_the_top_columns() -> None:
    key = "churn:alert:ci:run-1"
    many = [_Column(f"f{n}", None, None) for n in range(events.TOP_COLUMNS + 3)]
    evidence = events.DriftEvidence(check_id="run-1", drift_share=0.6, drift_detected=True, top_columns=many)
    event = events.drift_detected(model="churn", incident_key=key, reason="alert", evidence=evidence, source="ci")
    assert event.related == [events.incident_resource(key), events.source_resource("ci")]
    assert [c["column"] for c in event.payload["top_columns"]] == [f"f{n}" for n in range(events.TOP_COLUMNS)]
    assert event.payload["batch_ids"] == [] and event.payload["report_uri"] is None
    assert event.payload["prediction_drift"] is None and event.payload["champion_version"] is None
    _assert_payload_types(event.payload, DRIFT_KEYS)


def test_drift_detected_refuses_evidence_without_drift() -> None:
    with pytest.raises(ValueError, match="no dataset drift"):
        events.drift_detected(model="churn", incident_key="k", reason="r", evidence=_evidence(drift_detected=False))


@pytest.mark.parametrize("drifted", [True, False])
def test_performance_degraded_carries_the_drift_evidence_and_the_performance(drifted: bool) -> None:
    key = "churn:v3:check-001"
    performance = _performance()

    def made() -> events.Event:
        return events.performance_degraded(
            model="churn",
            incident_key=key,
            reason=f"drift incident {key}",
            evidence=_evidence(drift_detected=drifted),
            performance=performance,
        )

    event = made()
    assert event.name == events.PERFORMANCE_DEGRADED
    _assert_on_model(event, "churn")
    assert event.related == [events.incident_resource(key)]
    _assert_payload_types(event.payload, {**DRIFT_KEYS, "performance": dict})
    assert event.payload["drift_detected"] is drifted
    assert event.payload["incident_key"] == key
    assert event.payload["performance"] == asdict(performance)  # what the monitor emitted: every field, by name
    _assert_payload_types(
        event.payload["performance"],
        {"metric": str, "window": float, "holdout": (float, type(None)), "change": (float, type(None))}
        | {"tolerance": float, "degraded": bool, "rows": int, "min_rows": int},
    )
    _assert_keyed(event, made(), key)
    drift = events.drift_detected(model="churn", incident_key=key, reason="r", evidence=_evidence())
    assert event.id != drift.id  # one incident, two announcements


def test_performance_degraded_refuses_a_performance_that_held() -> None:
    with pytest.raises(ValueError, match="not degraded"):
        events.performance_degraded(
            model="churn", incident_key="k", reason="r", evidence=_evidence(), performance=_performance(degraded=False)
        )


def test_model_decided_is_named_by_the_outcome_and_records_the_trigger() -> None:
    from retrainer.cycle.decide import Outcome
    from retrainer.cycle.plan import Trigger

    assert Outcome.PROMOTED.value == events.PROMOTED_OUTCOME
    trigger = Trigger("drift", "evt-1", "churn:v1:check-1", events.DRIFT_DETECTED, {"drift_share": 0.9}, "run-1", "me")
    for outcome in Outcome:

        def made(outcome: Outcome = outcome) -> events.Event:
            return events.model_decided(
                model="churn",
                version="4",
                outcome=outcome.value,
                champion_before="3",
                champion_after="4" if outcome is Outcome.PROMOTED else "3",
                reasons=["improvement:roc_auc"],
                trigger=trigger,
            )

        event = made()
        assert event.name == (events.MODEL_PROMOTED if outcome is Outcome.PROMOTED else events.MODEL_REJECTED)
        _assert_on_model(event, "churn")
        assert event.related == []
        assert event.payload == {
            "version": "4",
            "outcome": outcome.value,
            "champion_before": "3",
            "champion_after": "4" if outcome is Outcome.PROMOTED else "3",
            "reasons": ["improvement:roc_auc"],
            "trigger": trigger.as_dict(),  # every field of the retrain's Trigger, as recorded elsewhere
        }
        _assert_payload_types(
            event.payload,
            {"version": str, "outcome": str, "champion_before": (str, type(None))}
            | {"champion_after": (str, type(None)), "reasons": list, "trigger": dict},
        )
        assert type(event.payload["outcome"]) is str
        _assert_keyed(event, made(), "churn:v4")
    first = events.model_decided(
        model="churn",
        version="1",
        outcome=Outcome.PROMOTED,
        champion_before=None,
        champion_after="1",
        reasons=[],
        trigger=Trigger(),
    )
    assert first.payload["champion_before"] is None and type(first.payload["outcome"]) is str


def test_rolled_back_names_both_versions_and_the_reason() -> None:
    def made() -> events.Event:
        return events.rolled_back(model="churn", from_version="4", to_version="3", reason="bad canary")

    event = made()
    assert event.name == events.MODEL_ROLLED_BACK
    _assert_on_model(event, "churn")
    assert event.related == []
    assert event.payload == {"from_version": "4", "to_version": "3", "reason": "bad canary"}
    _assert_payload_types(event.payload, {"from_version": str, "to_version": str, "reason": str})
    _assert_keyed(event, made(), "churn:4->3:bad canary")


def test_no_flow_emits_the_event_that_triggers_it() -> None:
    # Retrains are started by drift, degradation and (optionally) new-data events; the retrain flow and
    # its tasks must never emit those, or one event could start an endless chain of retrains.
    new_data = ["DATA_ARRIVED", "data_arrived(", "files_landed("]
    triggering = [
        "DRIFT_DETECTED",
        "PERFORMANCE_DEGRADED",
        "incident_events",
        "drift_detected(",
        "performance_degraded(",
    ]
    for module in ("flows/retrain.py", "tasks/retrain.py"):
        source = (ROOT / module).read_text(encoding="utf-8")
        assert [name for name in triggering + new_data if name in source] == [], module
    # The monitor announces incidents but never new data (which starts monitors).
    monitor = [
        "flows/monitor.py",
        "tasks/monitor.py",
        *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "retrainer" / "monitor").rglob("*.py")),
    ]
    for module in monitor:
        source = (ROOT / module).read_text(encoding="utf-8")
        assert [name for name in new_data if name in source] == [], module
