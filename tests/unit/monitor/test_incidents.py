"""Incident rules (k of n, attach, cooldown, in-flight, close, re-baseline), their persistence and events."""

from __future__ import annotations

import multiprocessing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer import events
from retrainer.config import IncidentPolicy
from retrainer.monitor.incidents import (
    ATTACH_MARGIN_SECONDS,
    COALESCE_SECONDS,
    MAX_ATTACHED,
    SWEEP_BACK_SECONDS,
    Action,
    AlertRef,
    Assessment,
    CheckRecord,
    Incident,
    IncidentBook,
    IncidentState,
    alerts_since,
    assess,
    attach_alerts,
    claim_retrain,
    coalescing_closes,
    incident_key,
    retrain_failed,
    retrain_finished,
    retrain_started,
    retrain_waits_for_labels,
    seconds_until_window_closes,
    waiting_for_labels,
)
from retrainer.storage import Metadata, sqlite_url

if TYPE_CHECKING:
    from retrainer.monitor.check import DriftCheck
    from retrainer.monitor.fast_stats import ColumnDrift

# retrainer.monitor (polars, numpy) is imported where used, so that the spawned writers start fast.

MODEL = "churn"
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _policy(k: int = 2, n: int = 3, cooldown: float = 0.0, timeout: float = 3600.0) -> IncidentPolicy:
    return IncidentPolicy(k=k, n=n, cooldown_seconds=cooldown, retrain_timeout_seconds=timeout)


def _check(number: int, alarming: bool, version: str = "1", at: datetime | None = None) -> CheckRecord:
    return CheckRecord(
        check_id=f"check-{number:03d}",
        at=at or T0 + timedelta(minutes=number),
        champion_version=version,
        batch_ids=[f"b{number}"],
        alarming=alarming,
        drift_share=0.8 if alarming else 0.0,
    )


def _run(
    state: IncidentState, checks: list[CheckRecord], policy: IncidentPolicy, now: datetime | None = None
) -> tuple[IncidentState, list[Assessment]]:
    """Assess checks in order (each at its own time unless ``now`` is given)."""
    found = []
    for check in checks:
        state, assessment = assess(state, check, policy, now or check.at)
        found.append(assessment)
    return state, found


def _empty() -> IncidentState:
    return IncidentState(model=MODEL)


# --- k of n ------------------------------------------------------------------------------------


def test_two_of_three_watches_then_opens() -> None:
    policy = _policy(k=2, n=3)
    state, (first,) = _run(_empty(), [_check(1, True)], policy)
    assert first.action is Action.WATCHING
    assert first.incident is None and state.open is None
    state, (second,) = _run(state, [_check(2, True)], policy)
    assert second.action is Action.OPENED
    assert second.incident is not None and state.open == second.incident
    assert second.incident.check_ids == ["check-001", "check-002"]
    assert second.incident.champion_version == "1"
    assert second.incident.opened_at == _check(2, True).at


def test_two_of_three_counts_an_alarm_two_checks_back_but_not_three() -> None:
    policy = _policy(k=2, n=3)
    _, found = _run(_empty(), [_check(1, True), _check(2, False), _check(3, True)], policy)
    assert [a.action for a in found] == [Action.WATCHING, Action.STABLE, Action.OPENED]
    assert found[2].incident is not None
    assert found[2].incident.check_ids == ["check-001", "check-003"]
    # The first alarm has left the last three checks: only one alarm counted.
    _, found = _run(_empty(), [_check(1, True), _check(2, False), _check(3, False), _check(4, True)], policy)
    assert [a.action for a in found] == [Action.WATCHING, Action.STABLE, Action.STABLE, Action.WATCHING]


def test_a_calm_latest_check_never_opens_even_after_enough_alarms() -> None:
    policy = _policy(k=2, n=3)
    state = replace(_empty(), checks=[_check(1, True), _check(2, True)])
    state, assessment = assess(state, _check(3, False), policy, _check(3, False).at)
    assert assessment.action is Action.STABLE
    assert assessment.incident is None and state.open is None
    assert [c.check_id for c in state.checks] == ["check-001", "check-002", "check-003"]


def test_one_of_one_opens_on_the_first_alarm() -> None:
    state, (assessment,) = _run(_empty(), [_check(1, True)], _policy(k=1, n=1))
    assert assessment.action is Action.OPENED
    assert assessment.incident is not None
    assert assessment.incident.key == incident_key(MODEL, "1", "check-001")
    assert state.open == assessment.incident


def test_one_of_one_stays_stable_without_alarm() -> None:
    state, (assessment,) = _run(_empty(), [_check(1, False)], _policy(k=1, n=1))
    assert assessment.action is Action.STABLE
    assert state.open is None


def test_only_the_last_n_checks_are_kept() -> None:
    state, _ = _run(_empty(), [_check(i, False) for i in range(1, 8)], _policy(k=2, n=3))
    assert [c.check_id for c in state.checks] == ["check-005", "check-006", "check-007"]


# --- incident key ------------------------------------------------------------------------------


def test_incident_key_names_model_version_and_first_counted_alarm() -> None:
    policy = _policy(k=2, n=3)
    checks = [_check(1, False), _check(2, True), _check(3, True)]
    _, found = _run(_empty(), checks, policy)
    incident = found[-1].incident
    assert incident is not None
    assert incident.key == incident_key(MODEL, "1", "check-002") == "churn:v1:check-002"
    _, again = _run(_empty(), checks, policy)
    assert again[-1].incident == incident
    assert incident_key(MODEL, "1", "check-002") == incident_key(MODEL, "1", "check-002")
    assert incident_key(MODEL, "2", "check-002") != incident.key


# --- attach ------------------------------------------------------------------------------------


def test_alarms_while_open_attach_to_the_same_incident() -> None:
    policy = _policy(k=1, n=1)
    state, found = _run(_empty(), [_check(1, True), _check(2, True), _check(3, False), _check(4, True)], policy)
    assert [a.action for a in found] == [Action.OPENED, Action.ATTACHED, Action.STABLE, Action.ATTACHED]
    key = found[0].incident.key if found[0].incident else None
    assert found[1].incident is not None and found[1].incident.key == key
    assert found[3].incident is not None and found[3].incident.key == key
    assert state.open is not None and state.open.key == key
    assert state.open.check_ids == ["check-001", "check-002", "check-004"]
    assert state.closed == []


# --- cooldown ----------------------------------------------------------------------------------


def test_cooldown_after_a_promotion_boundary() -> None:
    policy = _policy(k=1, n=1, cooldown=600)
    state = retrain_finished(_empty(), T0, "promoted", promoted=True)
    assert state.last_promotion_at == T0 and state.retrain_in_flight_since is None
    just_inside = T0 + timedelta(seconds=600) - timedelta(microseconds=1)
    _, inside = assess(state, _check(1, True, at=just_inside), policy, just_inside)
    assert inside.action is Action.COOLDOWN
    assert inside.incident is None
    assert "cooldown until" in inside.reason
    at_end = T0 + timedelta(seconds=600)
    after, opened = assess(state, _check(1, True, at=at_end), policy, at_end)
    assert opened.action is Action.OPENED
    assert after.open is not None


def _assert_cooldown_ends(state: IncidentState, policy: IncidentPolicy, end: datetime) -> None:
    """An alarming check 1 s before ``end`` is held by the cooldown; one at ``end`` opens an incident."""
    moment = end - timedelta(seconds=1)
    _, inside = assess(state, _check(1, True, at=moment), policy, moment)
    assert inside.action is Action.COOLDOWN
    _, after = assess(state, _check(1, True, at=end), policy, end)
    assert after.action is Action.OPENED


def test_cooldown_after_a_retrain_start_that_is_no_longer_in_flight() -> None:
    # Timeout shorter than the cooldown: after the timeout the start still holds the cooldown.
    policy = _policy(k=1, n=1, cooldown=600, timeout=60)
    state = retrain_started(_empty(), T0, None)
    assert state.last_retrain_started_at == T0
    _assert_cooldown_ends(state, policy, T0 + timedelta(seconds=600))


def test_cooldown_runs_from_the_start_when_a_retrain_finished_without_promotion() -> None:
    policy = _policy(k=1, n=1, cooldown=600)
    state = retrain_started(_empty(), T0, None)
    state = retrain_finished(state, T0 + timedelta(seconds=100), "rejected", promoted=False)
    assert state.retrain_in_flight_since is None and state.last_promotion_at is None
    _assert_cooldown_ends(state, policy, T0 + timedelta(seconds=600))


def test_cooldown_counts_from_the_latest_of_promotion_and_start() -> None:
    policy = _policy(k=1, n=1, cooldown=600)
    state = retrain_started(_empty(), T0, None)
    state = retrain_finished(state, T0 + timedelta(seconds=300), "promoted", promoted=True)
    moment = T0 + timedelta(seconds=700)  # past the start's cooldown, inside the promotion's
    _, inside = assess(state, _check(1, True, at=moment), policy, moment)
    assert inside.action is Action.COOLDOWN
    moment = T0 + timedelta(seconds=900)
    _, after = assess(state, _check(1, True, at=moment), policy, moment)
    assert after.action is Action.OPENED


def test_calm_check_during_cooldown_is_stable() -> None:
    state = retrain_finished(_empty(), T0, "promoted", promoted=True)
    _, assessment = assess(state, _check(1, False, at=T0), _policy(k=1, n=1, cooldown=600), T0)
    assert assessment.action is Action.STABLE


# --- retrain in flight -------------------------------------------------------------------------


def test_alarm_is_absorbed_by_the_retrain_in_flight_until_its_timeout() -> None:
    policy = _policy(k=1, n=1, cooldown=0, timeout=3600)
    state = retrain_started(_empty(), T0, None)
    assert state.retrain_in_flight_since == T0
    moment = T0 + timedelta(seconds=3600) - timedelta(microseconds=1)
    absorbed_state, absorbed = assess(state, _check(1, True, at=moment), policy, moment)
    assert absorbed.action is Action.ATTACHED
    assert absorbed.incident is None
    assert "absorbed by the retrain in flight" in absorbed.reason
    assert absorbed_state.open is None
    moment = T0 + timedelta(seconds=3600)
    timed_out, opened = assess(state, _check(1, True, at=moment), policy, moment)
    assert opened.action is Action.OPENED
    assert timed_out.open is not None


# --- claiming a retrain -------------------------------------------------------------------------


def test_a_retrain_claims_its_event_and_incident_once() -> None:
    policy = _policy(cooldown=600)
    state, duplicate = claim_retrain(_empty(), T0, "churn:v1:check-001", "event-1", policy)
    assert duplicate is None and state.retrain_in_flight_since == T0
    _, again = claim_retrain(state, T0 + timedelta(hours=2), None, "event-1", policy)
    assert again == "event event-1 already started a retrain"
    _, same_incident = claim_retrain(state, T0 + timedelta(hours=2), "churn:v1:check-001", "event-2", policy)
    assert same_incident == "incident churn:v1:check-001 already had its retrain"


def test_outside_alerts_within_the_cooldown_are_absorbed_by_the_last_retrain() -> None:
    # Outside alerts skip the k-of-n rule; the cooldown is what keeps a storm of them to one retrain.
    policy = _policy(cooldown=600)
    state, first = claim_retrain(_empty(), T0, "churn:alert:ci:a1", None, policy)
    assert first is None
    inside = T0 + timedelta(seconds=599)
    _, storm = claim_retrain(state, inside, "churn:alert:ci:a2", None, policy)
    assert storm is not None and "within the cooldown" in storm
    _, after = claim_retrain(state, T0 + timedelta(seconds=600), "churn:alert:ci:a3", None, policy)
    assert after is None


def test_the_monitors_own_incident_and_keyless_retrains_ignore_the_cooldown() -> None:
    policy = _policy(k=1, n=1, cooldown=600)
    state, found = _run(_empty(), [_check(1, True)], policy)
    incident = found[-1].incident
    assert incident is not None
    state = replace(state, last_promotion_at=T0)  # e.g. a manual promotion just before
    _, answered = claim_retrain(state, T0 + timedelta(seconds=1), incident.key, None, policy)
    assert answered is None
    _, manual = claim_retrain(state, T0 + timedelta(seconds=1), None, None, policy)
    assert manual is None


# --- alerts a retrain answers ------------------------------------------------------------------


def _alerts(count: int, start: int = 0) -> list[AlertRef]:
    return [AlertRef(f"churn:alert:ci:a{i}", f"event-{i}") for i in range(start, start + count)]


def test_a_retrain_answers_every_alert_coalesced_into_it_so_their_queued_retrains_are_duplicates() -> None:
    policy = _policy(cooldown=0)  # no cooldown: only the attachment makes the later runs duplicates
    storm = _alerts(100)
    state, _ = claim_retrain(_empty(), T0, storm[0].incident_key, storm[0].event_id, policy)
    state, attached = attach_alerts(state, T0, storm[0].incident_key, "run-1", storm)
    assert attached.incident_keys == [a.incident_key for a in storm]
    assert attached.event_ids == [a.event_id for a in storm] and attached.flow_run_id == "run-1"
    assert state.attachments == [attached]
    for alert in storm[1:]:
        _, duplicate = claim_retrain(state, T0 + timedelta(hours=1), alert.incident_key, alert.event_id, policy)
        assert duplicate is not None and "already" in duplicate


def test_attaching_again_adds_only_what_arrived_since() -> None:
    state, first = attach_alerts(_empty(), T0, "churn:alert:ci:a0", "run-1", _alerts(10))
    assert len(first.incident_keys) == 10
    later = T0 + timedelta(seconds=30)
    state, second = attach_alerts(state, later, "churn:alert:ci:a0", "run-1", _alerts(15))
    assert second.incident_keys == [a.incident_key for a in _alerts(15)] and second.at == later
    assert len(state.attachments) == 1
    assert attach_alerts(state, later, "churn:alert:ci:a0", "run-1", _alerts(15)) == (state, second)


def test_alerts_another_retrain_answered_stay_with_it() -> None:
    state, _ = attach_alerts(_empty(), T0, "churn:alert:ci:a0", "run-1", _alerts(10))
    state, second = attach_alerts(state, T0, "churn:alert:ci:a8", "run-2", _alerts(10, start=5))
    assert second.incident_keys == ["churn:alert:ci:a8", *(f"churn:alert:ci:a{i}" for i in range(10, 15))]
    assert [a.flow_run_id for a in state.attachments] == ["run-1", "run-2"]


def test_the_monitors_open_incident_waits_for_its_own_retrain() -> None:
    policy = _policy(k=1, n=1)
    state, found = _run(_empty(), [_check(1, True)], policy)
    incident = found[-1].incident
    assert incident is not None
    own = AlertRef(incident.key, "event-own")
    _, other = attach_alerts(state, T0, "churn:alert:ci:x", "run-1", [own, *_alerts(2)])
    assert incident.key not in other.incident_keys and len(other.incident_keys) == 2
    _, mine = attach_alerts(state, T0, incident.key, "run-2", [own])
    assert mine.incident_keys == [incident.key]


def test_one_retrain_answers_at_most_the_cap_and_a_key_once() -> None:
    both = [AlertRef("churn:v1:check-001", "drift-event"), AlertRef("churn:v1:check-001", "degraded-event")]
    _, attached = attach_alerts(_empty(), T0, "churn:v1:check-001", "run-1", both)
    assert attached.incident_keys == ["churn:v1:check-001"]
    assert attached.event_ids == ["drift-event", "degraded-event"]
    _, capped = attach_alerts(_empty(), T0, None, "run-1", _alerts(MAX_ATTACHED + 5))
    assert len(capped.incident_keys) == MAX_ATTACHED


def test_alerts_are_read_from_the_trigger_or_the_start_minus_the_margin() -> None:
    margin = timedelta(seconds=ATTACH_MARGIN_SECONDS)
    assert alerts_since(T0, T0 + timedelta(seconds=20)) == T0 - margin
    assert alerts_since(None, T0) == T0 - margin
    assert alerts_since(T0 + timedelta(seconds=1), T0) == T0 - margin


def test_a_retrain_sweeps_from_where_the_previous_read_ended_but_not_further_than_the_limit() -> None:
    margin = timedelta(seconds=ATTACH_MARGIN_SECONDS)
    state, _ = attach_alerts(_empty(), T0, "churn:alert:ci:a0", "run-1", _alerts(3), read_at=T0)
    assert state.alerts_read_until == T0
    later = T0 + timedelta(minutes=5)
    assert alerts_since(later, later, state.alerts_read_until) == T0 - margin
    much_later = T0 + timedelta(days=1)
    assert alerts_since(much_later, much_later, T0) == much_later - timedelta(seconds=SWEEP_BACK_SECONDS)
    # An older read never moves the mark back, and a read after the trigger never narrows the window.
    state, _ = attach_alerts(state, T0, None, "run-2", [], read_at=T0 - timedelta(hours=1))
    assert state.alerts_read_until == T0
    assert alerts_since(T0, T0, T0 + timedelta(seconds=30)) == T0 - margin


def test_swept_alerts_go_to_the_next_retrain_once() -> None:
    state, _ = attach_alerts(_empty(), T0, "churn:alert:ci:a0", "run-1", _alerts(10), read_at=T0)
    late = _alerts(3, start=10)  # stored on the server after run-1's last read
    state, second = attach_alerts(state, T0, "churn:alert:ci:x", "run-2", [*_alerts(10), *late], read_at=T0)
    assert second.incident_keys == [a.incident_key for a in late]


def test_the_coalescing_window_closes_after_the_trigger_plus_the_margin() -> None:
    window = COALESCE_SECONDS + ATTACH_MARGIN_SECONDS
    assert coalescing_closes(None) is None
    assert coalescing_closes(T0) == T0 + timedelta(seconds=window)
    assert seconds_until_window_closes(None, T0) == 0.0
    assert seconds_until_window_closes(T0, T0 + timedelta(seconds=5)) == window - 5
    assert seconds_until_window_closes(T0 - timedelta(hours=1), T0) == 0.0
    # An event stamped by a clock two hours ahead never holds the slot longer than one window.
    assert seconds_until_window_closes(T0 + timedelta(hours=2), T0) == window


# --- closing -----------------------------------------------------------------------------------


def _opened(policy: IncidentPolicy) -> tuple[IncidentState, Incident]:
    state, found = _run(_empty(), [_check(1, True), _check(2, True)], policy)
    assert found[-1].action is Action.OPENED and found[-1].incident is not None
    return state, found[-1].incident


def test_retrain_start_marks_only_the_incident_it_answers() -> None:
    policy = _policy(k=2, n=2)
    state, incident = _opened(policy)
    other = retrain_started(state, T0 + timedelta(hours=1), "someone:else")
    assert other.open is not None and other.open.retrain_started_at is None
    started = retrain_started(state, T0 + timedelta(hours=1), incident.key)
    assert started.open is not None and started.open.retrain_started_at == T0 + timedelta(hours=1)


def test_retrain_finished_closes_its_incident_and_consumes_the_checks() -> None:
    policy = _policy(k=2, n=2, cooldown=0)
    state, incident = _opened(policy)
    started_at, finished_at = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    state = retrain_started(state, started_at, incident.key)
    state = retrain_finished(state, finished_at, "promoted v2", promoted=False)
    assert state.open is None
    assert state.retrain_in_flight_since is None
    assert state.checks == []
    (closed,) = state.closed
    assert closed.key == incident.key
    assert closed.resolution == "promoted v2"
    assert closed.closed_at == finished_at
    assert closed.retrain_started_at == started_at
    # The consumed checks no longer count: one new alarm is not two of the last two.
    later = finished_at + timedelta(minutes=1)
    state, assessment = assess(state, _check(3, True, at=later), policy, later)
    assert assessment.action is Action.WATCHING
    state, assessment = assess(state, _check(4, True, at=later), policy, later)
    assert assessment.action is Action.OPENED
    assert assessment.incident is not None and assessment.incident.key == incident_key(MODEL, "1", "check-003")


def test_retrain_finished_leaves_an_incident_it_did_not_answer_open() -> None:
    policy = _policy(k=2, n=2, cooldown=0)
    state, incident = _opened(policy)
    state = retrain_started(state, T0 + timedelta(hours=1), "other:key")
    state = retrain_finished(state, T0 + timedelta(hours=2), "rejected", promoted=False)
    assert state.open == incident
    assert state.closed == []
    assert len(state.checks) == 2


def test_retrain_failed_closes_the_incident_but_keeps_its_checks() -> None:
    policy = _policy(k=2, n=2, cooldown=0)
    state, incident = _opened(policy)
    state = retrain_started(state, T0 + timedelta(hours=1), incident.key)
    failed_at = T0 + timedelta(hours=2)
    state = retrain_failed(state, failed_at, "Failed")
    assert state.open is None
    assert state.retrain_in_flight_since is None
    (closed,) = state.closed
    assert closed.key == incident.key
    assert closed.resolution == "retrain failed"
    assert closed.closed_at == failed_at
    assert [c.check_id for c in state.checks] == ["check-001", "check-002"]
    # Persisting drift opens a new incident at once (no cooldown), counting the kept check.
    later = failed_at + timedelta(minutes=1)
    state, assessment = assess(state, _check(3, True, at=later), policy, later)
    assert assessment.action is Action.OPENED
    assert assessment.incident is not None
    assert assessment.incident.key == incident_key(MODEL, "1", "check-002")
    assert assessment.incident.key != incident.key


# --- re-baseline -------------------------------------------------------------------------------


def test_new_champion_closes_the_open_incident_as_rebaselined() -> None:
    policy = _policy(k=2, n=3)
    state, incident = _opened(policy)
    moment = T0 + timedelta(hours=1)
    state, assessment = assess(state, _check(3, True, version="2", at=moment), policy, moment)
    # Old-version alarms no longer count: one alarm of v2 is not enough.
    assert assessment.action is Action.WATCHING
    assert state.open is None
    (closed,) = state.closed
    assert closed.key == incident.key
    assert closed.resolution == "rebaselined"
    assert closed.closed_at == moment
    assert [c.check_id for c in state.checks] == ["check-003"]
    assert {c.champion_version for c in state.checks} == {"2"}


def test_new_champion_forgets_old_checks_without_an_open_incident() -> None:
    policy = _policy(k=2, n=3)
    state, found = _run(_empty(), [_check(1, True), _check(2, True, version="2")], policy)
    assert [a.action for a in found] == [Action.WATCHING, Action.WATCHING]
    assert [c.check_id for c in state.checks] == ["check-002"]
    state, (third,) = _run(state, [_check(3, True, version="2")], policy)
    assert third.action is Action.OPENED
    assert third.incident is not None
    assert third.incident.key == incident_key(MODEL, "2", "check-002")


# --- persistence -------------------------------------------------------------------------------


def test_book_creates_nothing_until_the_first_update(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deep" / "churn.incidents.json"
    book = IncidentBook(Metadata(sqlite_url(path)), MODEL)
    assert book.read() == IncidentState(model=MODEL)
    assert not (tmp_path / "state").exists()
    assert list(tmp_path.iterdir()) == []


def test_book_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "incidents" / "churn.json"
    policy = _policy(k=2, n=3)
    book = IncidentBook(Metadata(sqlite_url(path)), MODEL)

    def check(number: int, alarming: bool, at: datetime) -> Assessment:
        record = _check(number, alarming, at=at)
        return book.update(lambda state: assess(state, record, policy, record.at))

    assert check(1, True, T0).action is Action.WATCHING
    assert check(2, True, T0 + timedelta(minutes=5)).action is Action.OPENED
    opened = book.read().open
    assert opened is not None
    started, finished = T0 + timedelta(hours=1, microseconds=7), T0 + timedelta(hours=2)
    book.update(lambda state: (retrain_started(state, started, opened.key), None))
    book.update(lambda state: attach_alerts(state, started, opened.key, "run-1", _alerts(3)))
    book.update(lambda state: (retrain_finished(state, finished, "promoted v2", True), None))
    later = T0 + timedelta(hours=3)
    assert check(3, True, later).action is Action.WATCHING  # consumed checks do not count
    state = book.read()
    assert path.exists()

    restarted = IncidentBook(Metadata(sqlite_url(path)), MODEL).read()
    assert restarted == state
    assert restarted.checks[0].at == later
    assert restarted.checks[0].at.microsecond == 123456
    assert restarted.checks[0].at.tzinfo is not None
    (closed,) = restarted.closed
    assert closed.retrain_started_at == started
    assert closed.retrain_started_at.microsecond == 123463
    assert closed.resolution == "promoted v2"
    assert restarted.last_promotion_at == finished
    assert restarted.last_retrain_started_at == started
    assert restarted.last_checked_batch == "b3"
    (attached,) = restarted.attachments
    assert attached.at == started and attached.incident_keys == [a.incident_key for a in _alerts(3)]


def test_book_round_trips_an_open_incident(tmp_path: Path) -> None:
    path = tmp_path / "churn.json"
    state, incident = _opened(_policy(k=2, n=2))
    IncidentBook(Metadata(sqlite_url(path)), MODEL).update(lambda _: (state, None))
    assert IncidentBook(Metadata(sqlite_url(path)), MODEL).read().open == incident


def _append_checks(path: str, worker: int, count: int, start: Any = None) -> None:
    book = IncidentBook(Metadata(sqlite_url(Path(path))), MODEL)
    policy = IncidentPolicy(k=1000, n=1000, cooldown_seconds=0)
    if start is not None:
        start.wait(timeout=60)  # both processes update at the same time
    for i in range(count):
        record = CheckRecord(f"w{worker}-{i:02d}", T0 + timedelta(seconds=i), "1", [f"b{i}"], True, 1.0)
        book.update(lambda state, record=record: assess(state, record, policy, record.at))


def test_book_updates_from_concurrent_processes_are_all_recorded(tmp_path: Path) -> None:
    path = tmp_path / "churn.json"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_append_checks, args=(str(path), w, 20, start)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0]
    state = IncidentBook(Metadata(sqlite_url(path)), MODEL).read()
    ids = [c.check_id for c in state.checks]
    assert len(ids) == 40
    assert sorted(ids) == sorted(f"w{w}-{i:02d}" for w in range(2) for i in range(20))
    for worker in range(2):  # each worker's own checks stay in its order
        own = [i for i in ids if i.startswith(f"w{worker}-")]
        assert own == sorted(own)


# --- events ------------------------------------------------------------------------------------


def _column(name: str, score: float, drifted: bool, threshold: float = 0.1) -> ColumnDrift:
    from retrainer.monitor.fast_stats import ColumnDrift

    return ColumnDrift(name, "numerical", "wasserstein", score, threshold, drifted)


def _drift_check(drifted: bool = True, degraded: bool = False) -> DriftCheck:
    from retrainer.monitor.check import DriftCheck
    from retrainer.monitor.fast_stats import ColumnDrift
    from retrainer.monitor.performance import Performance

    columns = [
        _column("a", 0.3, True),
        _column("b", 0.05, False),
        _column("c", 0.9, True),
        ColumnDrift("d", "categorical", "jensenshannon", 0.12, 0.1, True, "unseen categories: zz"),
    ]
    performance = Performance("roc_auc", 0.6, 0.8, -0.2, 0.05, True, 500, 200) if degraded else None
    return DriftCheck(
        model=MODEL,
        check_id="check-002",
        checked_at=T0,
        champion_version="3",
        batch_ids=["b1", "b2"],
        reference_rows=5000,
        current_rows=2000,
        engine="evidently",
        columns=columns,
        drift_share=0.75 if drifted else 0.25,
        drift_detected=drifted,
        prediction=_column("champion_prediction", 0.2, True),
        performance=performance,
    )


def _incident_events(check: DriftCheck, assessment: Assessment, report_uri: str) -> list[events.Event]:
    from retrainer.monitor.announce import incident_events

    return incident_events(check, assessment, report_uri)


def _opened_assessment(version: str = "3") -> Assessment:
    incident = Incident(incident_key(MODEL, version, "check-001"), MODEL, version, T0, ["check-001", "check-002"])
    return Assessment(Action.OPENED, incident, "2 of the last 2 checks alarmed")


def test_opened_incident_announces_drift_detected_with_a_keyed_id() -> None:
    check, assessment = _drift_check(), _opened_assessment()
    key = incident_key(MODEL, "3", "check-001")
    (event,) = _incident_events(check, assessment, "file:///reports/check-002.html")
    assert event.name == events.DRIFT_DETECTED
    assert event.id == events.event_id_for(f"retrainer.drift.detected:{key}")
    assert event.resource["prefect.resource.id"] == f"retrainer.model.{MODEL}"
    payload = event.payload
    assert payload["incident_key"] == key
    assert payload["drift_share"] == 0.75
    assert payload["report_uri"] == "file:///reports/check-002.html"
    assert payload["champion_version"] == "3"
    assert payload["batch_ids"] == ["b1", "b2"]
    assert [c["column"] for c in payload["top_columns"]] == ["c", "a", "d"]  # drifted, by score/threshold
    assert payload["top_columns"][0] == {"column": "c", "score": 0.9, "method": "wasserstein"}
    assert {"prefect.resource.id": f"retrainer.incident.{key}", "prefect.resource.role": "incident"} in event.related


def test_degraded_performance_adds_its_own_event() -> None:
    found = _incident_events(_drift_check(degraded=True), _opened_assessment(), "file:///r.html")
    key = incident_key(MODEL, "3", "check-001")
    assert [e.name for e in found] == [events.DRIFT_DETECTED, events.PERFORMANCE_DEGRADED]
    degraded = found[1]
    assert degraded.id == events.event_id_for(f"retrainer.performance.degraded:{key}")
    assert degraded.id != found[0].id
    assert degraded.payload["incident_key"] == key
    assert degraded.payload["performance"]["degraded"] is True
    assert degraded.payload["performance"]["metric"] == "roc_auc"


def test_degraded_performance_without_drift_announces_only_the_degradation() -> None:
    found = _incident_events(_drift_check(drifted=False, degraded=True), _opened_assessment(), "file:///r.html")
    assert [e.name for e in found] == [events.PERFORMANCE_DEGRADED]


def test_only_an_opened_incident_announces_anything() -> None:
    check = _drift_check(degraded=True)
    incident = _opened_assessment().incident
    for action in (Action.ATTACHED, Action.WATCHING, Action.COOLDOWN, Action.STABLE):
        assert _incident_events(check, Assessment(action, incident, "x"), "file:///r.html") == []
        assert _incident_events(check, Assessment(action, None, "x"), "file:///r.html") == []


def test_repeated_announcements_of_one_incident_share_ids() -> None:
    first = _incident_events(_drift_check(degraded=True), _opened_assessment(), "file:///one.html")
    later = replace(_drift_check(degraded=True), check_id="check-009", drift_share=0.9)
    second = _incident_events(later, _opened_assessment(), "file:///two.html")
    assert [e.id for e in first] == [e.id for e in second]
    other = _incident_events(_drift_check(degraded=True), _opened_assessment(version="4"), "file:///one.html")
    assert {e.id for e in other}.isdisjoint({e.id for e in first})


def test_a_retrain_waiting_for_labels_keeps_its_traffic_incident_open_until_a_retrain_finishes() -> None:
    policy = IncidentPolicy(k=1, n=1, cooldown_seconds=0)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    traffic = CheckRecord("c1", now, "1", ["t1"], True, 0.9, labelled=False)
    state, opened = assess(IncidentState(model="churn"), traffic, policy, now)
    key = opened.incident.key  # type: ignore[union-attr]
    assert state.open is not None and state.open.traffic_batches == ["t1"]
    state, duplicate = claim_retrain(state, now, key, "e1", policy)
    assert duplicate is None

    state = retrain_waits_for_labels(state, now, key)

    assert state.open is not None and state.open.waiting_for_labels_since == now
    assert state.retrain_in_flight_since is None and waiting_for_labels(state) == key
    # The retrain the joined labels start may answer it; once any retrain finishes, it is answered.
    again, duplicate = claim_retrain(state, now, key, "e2", policy)
    assert duplicate is None and again.open is not None and again.open.waiting_for_labels_since is None
    done = retrain_finished(state, now, "Promoted", promoted=True)
    assert done.open is None and key in done.answered_incidents
    assert claim_retrain(done, now, key, "e3", policy)[1] is not None


def test_an_incident_a_labelled_check_alarmed_in_does_not_wait_for_labels() -> None:
    policy = IncidentPolicy(k=2, n=2, cooldown_seconds=0)
    now = datetime(2026, 5, 1, tzinfo=UTC)
    state, _ = assess(IncidentState(model="churn"), CheckRecord("c1", now, "1", ["t1"], True, 0.9, False), policy, now)
    state, opened = assess(state, CheckRecord("c2", now, "1", ["b1"], True, 0.9), policy, now)
    assert opened.incident is not None and opened.incident.traffic_batches == []
