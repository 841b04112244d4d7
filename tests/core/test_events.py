"""The event vocabulary: names, resource and deterministic ids."""

from __future__ import annotations

from retrainer import events


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
