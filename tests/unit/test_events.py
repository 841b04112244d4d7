"""The event vocabulary: names, resource and deterministic ids."""

from __future__ import annotations

from pathlib import Path

from retrainer import events

ROOT = Path(__file__).resolve().parents[2]


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


def test_no_flow_emits_the_event_that_triggers_it() -> None:
    # Retrains are started by drift, degradation and (optionally) new-data events; the retrain flow and
    # its tasks must never emit those, or one event could start an endless chain of retrains.
    triggering = ["DRIFT_DETECTED", "PERFORMANCE_DEGRADED", "DATA_ARRIVED", "incident_events"]
    for module in ("flows/retrain.py", "tasks/retrain.py"):
        source = (ROOT / module).read_text(encoding="utf-8")
        assert [name for name in triggering if name in source] == [], module
    # The monitor announces incidents but never new data (which starts monitors).
    for module in ("flows/monitor.py", "tasks/monitor.py"):
        assert "DATA_ARRIVED" not in (ROOT / module).read_text(encoding="utf-8"), module
