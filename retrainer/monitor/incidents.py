"""Drift incidents: when drifting checks become one retrain, and the state that survives restarts.

The rules are pure functions over :class:`IncidentState`; :class:`IncidentBook` persists the state
of one model as a document of the metadata store, changed only under the model's incident lock
(held by the store across machines) and by compare-and-set, so the monitor and retrain flows of any
worker see one consistent history and never open two incidents.

Rules, in the order they apply to a new check:

1. Only checks against the current champion count: a new champion (promotion or rollback) closes
   the open incident as ``rebaselined`` and forgets earlier checks.
2. An alarming check while an incident is open attaches to it (no new incident, no new event).
3. An alarming check while a retrain is in flight (started, not finished, younger than the retrain
   timeout) is absorbed by that retrain.
4. An alarming check within the cooldown after a promotion or a retrain start opens nothing.
5. Otherwise an incident opens when at least ``k`` of the last ``n`` checks alarmed and the latest
   did. Its key names the model, the champion version and the first alarming check counted.

A retrain holds its model's slot (:class:`SlotHolder`: flow run, lease, host, pid and a heartbeat
renewed every few seconds). A retrain whose process is gone (same host: its pid no longer runs;
any host: no heartbeat for :data:`HOLDER_STALE_SECONDS`) is no longer in flight: the next read of
the book closes its incident as ``retrain crashed`` and does not let it start a cooldown, so a drift
check right after opens an incident instead of being absorbed. The slot record stays until the next
retrain releases the dead lease.

A retrain claims its event id and incident key first: a second retrain for the same event or the
same incident (the last 2000 of each are remembered) is a duplicate and does nothing. So is a
retrain for an incident the monitor did not open (an outside drift alert) within the cooldown.

A retrain also answers the alerts the server coalesced into it (a storm of alerts starts one retrain
per model per coalescing window; the others start nothing): :func:`attach_alerts` records their
incident keys and event ids on the retrain (an :class:`Attachment`, the last few kept) and marks them
answered, so a later retrain for one of them is a duplicate. Which alerts it answers: those of its
model that arrived from :func:`alerts_since` on (its triggering event, or its start, minus
:data:`ATTACH_MARGIN_SECONDS`, or where the model's previous read ended), at most
:data:`MAX_ATTACHED`, except those another retrain already answered and the monitor's open incident
when it waits for its own retrain. Its last read waits for :func:`coalescing_closes`, so every alert
of its coalescing window is attached to it; one the server stored after that read goes to the next.

A check alarms when its dataset drift verdict is positive or the champion's labelled performance
degraded beyond tolerance. An incident closes when the retrain it started finishes; the checks it
consumed do not count towards the next one. A retrain that fails closes its incident too, but its
checks still count, so persisting drift opens a new incident once the cooldown has passed.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from retrainer.config import IncidentPolicy
from retrainer.storage import Metadata

T = TypeVar("T")
_KEPT_CLOSED = 20
_KEPT_ANSWERED = 2000
_KEPT_ATTACHMENTS = 5
# Events emitted within 1-2 s of each other may arrive out of order: look this far before the trigger.
ATTACH_MARGIN_SECONDS = 5.0
# A retrain trigger fires at most once per model in this many seconds from its event; the alerts of
# the window start nothing and are the retrain's to answer (``deployments.definitions`` uses it).
COALESCE_SECONDS = 15
# A retrain looks back at most this far for alerts earlier reads may have missed (persisted late).
SWEEP_BACK_SECONDS = 900.0
# Most alerts one retrain answers (and reads from the server); the rest start their own retrain later.
MAX_ATTACHED = 1000
# A holder renews its heartbeat every few seconds; this much silence means it is gone (other hosts).
HOLDER_STALE_SECONDS = 30.0


class Action(StrEnum):
    """What a check led to; the monitor flow's final state carries this name."""

    STABLE = "Stable"
    WATCHING = "Watching"
    COOLDOWN = "Cooldown"
    ATTACHED = "Attached"
    OPENED = "Incident"


@dataclass(frozen=True)
class CheckRecord:
    """One drift check as the incident rules see it."""

    check_id: str
    at: datetime
    champion_version: str
    batch_ids: list[str]
    alarming: bool
    drift_share: float
    labelled: bool = True


@dataclass(frozen=True)
class Incident:
    """Sustained drift (or degraded performance) of one champion, answered by one retrain.

    ``traffic_batches`` are the inference batches among the checks that opened it (empty when they
    were all labelled): a retrain answering it needs labels first (``retrainer.cycle.labels``).
    ``waiting_for_labels_since`` is set while a retrain waits for them.
    """

    key: str
    model: str
    champion_version: str
    opened_at: datetime
    check_ids: list[str]
    retrain_started_at: datetime | None = None
    closed_at: datetime | None = None
    resolution: str | None = None
    waiting_for_labels_since: datetime | None = None
    traffic_batches: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SlotHolder:
    """The retrain holding the model's slot: enough to tell whether it still runs, and to free its lease.

    Attributes:
        flow_run_id: The Prefect flow run of the retrain, if any.
        lease_id: The Prefect concurrency lease it holds.
        host: Host name of its process.
        pid: Process id on that host.
        heartbeat_at: Last time the process said it was alive.
    """

    flow_run_id: str | None
    lease_id: str
    host: str
    pid: int
    heartbeat_at: datetime

    @classmethod
    def here(cls, flow_run_id: str | None, lease_id: str, at: datetime) -> SlotHolder:
        """A holder for this process."""
        return cls(flow_run_id, lease_id, socket.gethostname(), os.getpid(), at)


def holder_gone(holder: SlotHolder, now: datetime) -> bool:
    """True when the holder's heartbeat is stale, or it ran on this host and its process is gone."""
    if (now - holder.heartbeat_at).total_seconds() > HOLDER_STALE_SECONDS:
        return True
    return holder.host == socket.gethostname() and not _process_alive(holder.pid)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: gone all the same
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True)
class AlertRef:
    """One alert as a retrain answers it: the incident key of its event and the event's id."""

    incident_key: str
    event_id: str


@dataclass(frozen=True)
class Attachment:
    """The alerts one retrain answers (its own trigger included), in arrival order.

    Attributes:
        retrain_key: The incident key of the retrain's own trigger, if any.
        flow_run_id: The Prefect flow run of the retrain, if any.
        at: When alerts were last attached.
        incident_keys: Distinct incident keys answered.
        event_ids: The ids of the events answered.
    """

    retrain_key: str | None
    flow_run_id: str | None
    at: datetime
    incident_keys: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IncidentState:
    """Everything the rules remember about one model."""

    model: str
    checks: list[CheckRecord] = field(default_factory=list)
    open: Incident | None = None
    closed: list[Incident] = field(default_factory=list)
    retrain_in_flight_since: datetime | None = None
    last_retrain_started_at: datetime | None = None
    last_promotion_at: datetime | None = None
    last_checked_batch: str | None = None
    answered_events: list[str] = field(default_factory=list)
    answered_incidents: list[str] = field(default_factory=list)
    slot: SlotHolder | None = None
    attachments: list[Attachment] = field(default_factory=list)
    alerts_read_until: datetime | None = None


@dataclass(frozen=True)
class Assessment:
    """The action a check led to, the incident concerned (if any) and why."""

    action: Action
    incident: Incident | None
    reason: str


def incident_key(model: str, champion_version: str, first_check_id: str) -> str:
    """The stable key of an incident (also the seed of its event id)."""
    return f"{model}:v{champion_version}:{first_check_id}"


def assess(
    state: IncidentState, check: CheckRecord, policy: IncidentPolicy, now: datetime
) -> tuple[IncidentState, Assessment]:
    """Apply the incident rules to a new check; return the new state and what happened.

    Pure: the caller persists the returned state.
    """
    state = _rebaseline(state, check, now)
    checks = [*state.checks, check][-policy.n :]
    # Inference batches are not labelled batches: they do not move the labelled window's position.
    newest = check.batch_ids[-1] if check.batch_ids and check.labelled else state.last_checked_batch
    state = replace(state, checks=checks, last_checked_batch=newest)
    if not check.alarming:
        return state, Assessment(Action.STABLE, state.open, "no drift and no degraded performance")
    if state.open is not None:
        attached = replace(state.open, check_ids=[*state.open.check_ids, check.check_id])
        return replace(state, open=attached), Assessment(Action.ATTACHED, attached, f"attached to {attached.key}")
    if _in_flight(state, policy, now):
        since = _iso(state.retrain_in_flight_since)
        return state, Assessment(Action.ATTACHED, None, f"absorbed by the retrain in flight since {since}")
    until = _cooldown_until(state, policy)
    if until is not None and now < until:
        return state, Assessment(Action.COOLDOWN, None, f"cooldown until {_iso(until)}")
    alarming = [c for c in checks if c.alarming]
    if len(alarming) < policy.k:
        reason = f"{len(alarming)} of the last {len(checks)} checks alarmed; {policy.k} of {policy.n} needed"
        return state, Assessment(Action.WATCHING, None, reason)
    opened = Incident(
        key=incident_key(state.model, check.champion_version, alarming[0].check_id),
        model=state.model,
        champion_version=check.champion_version,
        opened_at=now,
        check_ids=[c.check_id for c in alarming],
        # Only an incident no labelled check alarmed waits for labels: labelled evidence needs none.
        traffic_batches=sorted({b for c in alarming for b in c.batch_ids})
        if not any(c.labelled for c in alarming)
        else [],
    )
    reason = f"{len(alarming)} of the last {len(checks)} checks alarmed (needed {policy.k} of {policy.n})"
    return replace(state, open=opened), Assessment(Action.OPENED, opened, reason)


def _rebaseline(state: IncidentState, check: CheckRecord, now: datetime) -> IncidentState:
    stale = [c for c in state.checks if c.champion_version != check.champion_version]
    if not stale and (state.open is None or state.open.champion_version == check.champion_version):
        return state
    current = [c for c in state.checks if c.champion_version == check.champion_version]
    if state.open is not None and state.open.champion_version != check.champion_version:
        return _close(replace(state, checks=current), now, "rebaselined")
    return replace(state, checks=current)


def _in_flight(state: IncidentState, policy: IncidentPolicy, now: datetime) -> bool:
    since = state.retrain_in_flight_since
    return since is not None and now - since < timedelta(seconds=policy.retrain_timeout_seconds)


def duplicate_retrain(state: IncidentState, key: str | None, event_id: str | None) -> str | None:
    """Why a retrain for ``key`` / ``event_id`` would repeat one already started, or ``None``."""
    if event_id and event_id in state.answered_events:
        return f"event {event_id} already started a retrain"
    if key is not None and key in state.answered_incidents:
        return f"incident {key} already had its retrain"
    return None


def retrain_started(state: IncidentState, at: datetime, key: str | None, event_id: str | None = None) -> IncidentState:
    """Record a retrain start (it opens the cooldown); mark the open incident if the retrain answers it."""
    events = [*state.answered_events, event_id][-_KEPT_ANSWERED:] if event_id else state.answered_events
    incidents = [*state.answered_incidents, key][-_KEPT_ANSWERED:] if key else state.answered_incidents
    state = replace(
        state,
        retrain_in_flight_since=at,
        last_retrain_started_at=at,
        answered_events=events,
        answered_incidents=incidents,
    )
    if state.open is not None and key == state.open.key:
        state = replace(state, open=replace(state.open, retrain_started_at=at, waiting_for_labels_since=None))
    return state


def claim_retrain(
    state: IncidentState, at: datetime, key: str | None, event_id: str | None, policy: IncidentPolicy
) -> tuple[IncidentState, str | None]:
    """Start a retrain unless it repeats one: new state and the reason it is a duplicate.

    A retrain repeats one when its event or incident already had a retrain, or when it answers an
    incident the monitor did not open (an outside alert, e.g. through the webhook) within the
    cooldown: outside alerts skip the k-of-n rule, so the cooldown is what stops an alert storm.
    """
    duplicate = duplicate_retrain(state, key, event_id) or _outside_alert_in_cooldown(state, at, key, policy)
    if duplicate is not None:
        return state, duplicate
    return retrain_started(state, at, key, event_id), None


def _outside_alert_in_cooldown(
    state: IncidentState, at: datetime, key: str | None, policy: IncidentPolicy
) -> str | None:
    if key is None or (state.open is not None and state.open.key == key):
        return None
    until = _cooldown_until(state, policy)
    if until is None or at >= until:
        return None
    return f"alert {key} came within the cooldown (until {_iso(until)}) of the last retrain or promotion"


def alerts_since(triggered_at: datetime | None, started_at: datetime, read_until: datetime | None = None) -> datetime:
    """From when a retrain reads the alerts it answers.

    Its triggering event (or start) minus :data:`ATTACH_MARGIN_SECONDS`, or earlier: from where the
    model's previous read ended (``read_until``, minus the margin), so alerts the server stored after
    that read are swept up, but never more than :data:`SWEEP_BACK_SECONDS` before that first moment.
    Alerts already answered are skipped by :func:`attach_alerts`, so reading some twice is harmless.
    """
    first = min(triggered_at, started_at) if triggered_at is not None else started_at
    since = first - timedelta(seconds=ATTACH_MARGIN_SECONDS)
    if read_until is None:
        return since
    swept = max(read_until - timedelta(seconds=ATTACH_MARGIN_SECONDS), first - timedelta(seconds=SWEEP_BACK_SECONDS))
    return min(since, swept)


def seconds_until_window_closes(triggered_at: datetime | None, now: datetime) -> float:
    """How long a retrain waits before its last read: until :func:`coalescing_closes`, never longer than the window.

    ``triggered_at`` comes from the emitting host's clock; a clock ahead of ours (or a made-up time)
    must not hold the model's slot for longer than one window.
    """
    closes = coalescing_closes(triggered_at)
    if closes is None:
        return 0.0
    longest = float(COALESCE_SECONDS + ATTACH_MARGIN_SECONDS)
    return min(max(0.0, (closes - now).total_seconds()), longest)


def coalescing_closes(triggered_at: datetime | None) -> datetime | None:
    """When every alert coalesced into a retrain whose event came at ``triggered_at`` is on the server.

    The trigger ignores the model's alerts for :data:`COALESCE_SECONDS` after the one it fired on;
    :data:`ATTACH_MARGIN_SECONDS` more lets the latest of them reach the server. A retrain started
    without an event has no window (None).
    """
    if triggered_at is None:
        return None
    return triggered_at + timedelta(seconds=COALESCE_SECONDS + ATTACH_MARGIN_SECONDS)


def attach_alerts(
    state: IncidentState,
    at: datetime,
    retrain_key: str | None,
    flow_run_id: str | None,
    alerts: list[AlertRef],
    read_at: datetime | None = None,
) -> tuple[IncidentState, Attachment]:
    """Attach ``alerts`` to the retrain ``flow_run_id`` (keyed ``retrain_key``) and mark them answered.

    ``read_at`` is when the server was asked for ``alerts``: the model's next retrain sweeps from
    there (see :func:`alerts_since`). Pure and idempotent: attaching the same alerts again changes
    nothing. Skipped: alerts another retrain already answered, the monitor's open incident unless it
    is this retrain's own (it waits for its own retrain), and anything beyond :data:`MAX_ATTACHED`
    alerts for the retrain.

    Returns:
        The new state and the retrain's attachment (all it answers so far).
    """
    existing = _attachment(state, retrain_key, flow_run_id)
    mine = existing or Attachment(retrain_key, flow_run_id, at)
    keys, ids = list(mine.incident_keys), list(mine.event_ids)
    for alert in alerts:
        if len(keys) >= MAX_ATTACHED or not _answerable(state, alert, retrain_key, keys):
            continue
        if alert.incident_key not in keys:
            keys.append(alert.incident_key)
        if alert.event_id not in ids:
            ids.append(alert.event_id)
    attached = replace(mine, at=at, incident_keys=keys, event_ids=ids)
    others = [a for a in state.attachments if a is not existing]
    state = replace(
        state,
        attachments=[*others, attached][-_KEPT_ATTACHMENTS:],
        answered_incidents=_remember(state.answered_incidents, keys),
        answered_events=_remember(state.answered_events, ids),
        alerts_read_until=_latest(state.alerts_read_until, read_at),
    )
    return state, attached


def _attachment(state: IncidentState, retrain_key: str | None, flow_run_id: str | None) -> Attachment | None:
    for attachment in state.attachments:
        if (attachment.flow_run_id, attachment.retrain_key) == (flow_run_id, retrain_key):
            return attachment
    return None


def _answerable(state: IncidentState, alert: AlertRef, retrain_key: str | None, mine: list[str]) -> bool:
    key = alert.incident_key
    if key == retrain_key or key in mine:
        return True
    if state.open is not None and state.open.key == key:
        return False
    return key not in state.answered_incidents and alert.event_id not in state.answered_events


def _remember(answered: list[str], new: list[str]) -> list[str]:
    known = set(answered)
    return [*answered, *(item for item in new if item not in known)][-_KEPT_ANSWERED:]


def retrain_finished(state: IncidentState, at: datetime, outcome: str, promoted: bool) -> IncidentState:
    """Record a retrain end; it closes the incident whose retrain it was and consumes its checks.

    An incident waiting for labels closes too, whichever retrain finished (it trained on the newest
    labelled data there is), and counts as answered: the retrain its labels would start is a duplicate.
    """
    state = replace(state, retrain_in_flight_since=None)
    if promoted:
        state = replace(state, last_promotion_at=at)
    incident = state.open
    if incident is not None and (incident.retrain_started_at is not None or incident.waiting_for_labels_since):
        answered = _remember(state.answered_incidents, [incident.key])
        state = _close(replace(state, checks=[], answered_incidents=answered), at, outcome)
    return state


def retrain_waits_for_labels(state: IncidentState, at: datetime, key: str | None) -> IncidentState:
    """A retrain found too few labels to answer incident ``key``: it ends, the incident stays open and waits.

    The incident no longer counts as answered, so the retrain that joined labels start
    (``labels.joined``) can answer it; until then new checks attach to it as to any open incident.
    """
    state = replace(
        state,
        retrain_in_flight_since=None,
        answered_incidents=[k for k in state.answered_incidents if k != key],
    )
    if state.open is not None and state.open.key == key:
        state = replace(state, open=replace(state.open, retrain_started_at=None, waiting_for_labels_since=at))
    return state


def waiting_for_labels(state: IncidentState) -> str | None:
    """The open incident of unlabelled traffic that new labels may let a retrain answer, if any.

    Whether a retrain waits on it yet or not: the retrain's own dedupe decides (a retrain in flight
    already answers it, a waiting one does not), so no join can slip between counting and waiting.
    """
    if state.open is not None and state.open.traffic_batches:
        return state.open.key
    return None


def retrain_failed(state: IncidentState, at: datetime, how: str) -> IncidentState:
    """Record a retrain that failed or crashed: its incident closes unresolved, its checks still count."""
    state = replace(state, retrain_in_flight_since=None)
    if state.open is not None and state.open.retrain_started_at is not None:
        state = _close(state, at, f"retrain {how.lower()}")
    return state


def hold_slot(state: IncidentState, holder: SlotHolder) -> IncidentState:
    """Record the retrain that now holds the slot (replacing a dead holder's record)."""
    return replace(state, slot=holder)


def heartbeat(state: IncidentState, lease_id: str, at: datetime) -> IncidentState:
    """The holder of ``lease_id`` is alive at ``at`` (nothing changes if another holds the slot)."""
    if state.slot is None or state.slot.lease_id != lease_id:
        return state
    return replace(state, slot=replace(state.slot, heartbeat_at=at))


def release_slot(state: IncidentState, lease_id: str) -> IncidentState:
    """Forget the holder of ``lease_id`` (its lease was released)."""
    if state.slot is None or state.slot.lease_id != lease_id:
        return state
    return replace(state, slot=None)


def retrain_crashed(state: IncidentState, at: datetime) -> IncidentState:
    """The retrain in flight died without a word: it is no longer in flight and started no cooldown.

    Its incident closes as ``retrain crashed`` (its checks still count). The slot record stays: the
    next retrain frees the dead lease it names.
    """
    if state.retrain_in_flight_since is None:
        return state
    started = state.retrain_in_flight_since
    state = retrain_failed(state, at, "Crashed")
    if state.last_retrain_started_at == started:
        state = replace(state, last_retrain_started_at=None)
    return state


def reap_crashed_retrain(state: IncidentState, now: datetime) -> IncidentState:
    """Apply :func:`retrain_crashed` when the retrain in flight's slot holder is gone."""
    if state.retrain_in_flight_since is None or state.slot is None or not holder_gone(state.slot, now):
        return state
    return retrain_crashed(state, now)


def _close(state: IncidentState, at: datetime, resolution: str) -> IncidentState:
    if state.open is None:
        return state
    closed = replace(state.open, closed_at=at, resolution=resolution)
    return replace(state, open=None, closed=[*state.closed, closed][-_KEPT_CLOSED:])


def _cooldown_until(state: IncidentState, policy: IncidentPolicy) -> datetime | None:
    quiet_since = _latest(state.last_promotion_at, state.last_retrain_started_at)
    return quiet_since + timedelta(seconds=policy.cooldown_seconds) if quiet_since is not None else None


def _latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "?"


INCIDENTS = "incidents"


class IncidentBook:
    """The persisted :class:`IncidentState` of one model (a document of the metadata store).

    Args:
        metadata: The metadata store.
        model: The model's name.
    """

    def __init__(self, metadata: Metadata, model: str) -> None:
        self.metadata = metadata
        self.model = model

    def read(self) -> IncidentState:
        """The current state (a crashed retrain already no longer in flight); an empty one before the first check."""
        return self._read()[0]

    def update(self, change: Callable[[IncidentState], tuple[IncidentState, T]]) -> T:
        """Apply ``change`` to the state under the lock, persist the new state, return its result.

        Raises:
            StorageError: the state changed since it was read (this writer lost its lock); nothing written.
        """
        with self.metadata.lock(f"incidents:{self.model}"):
            current, revision = self._read()
            state, result = change(current)
            body = json.dumps(_state_to_json(state), indent=2)
            self.metadata.put(INCIDENTS, self.model, "", body, expected=revision)
            return result

    def _read(self) -> tuple[IncidentState, int]:
        found = self.metadata.get(INCIDENTS, self.model)
        if found is None:
            return IncidentState(model=self.model), 0
        state = _state_from_json(json.loads(found.body))
        return reap_crashed_retrain(state, datetime.now(UTC)), found.revision


def _state_to_json(state: IncidentState) -> dict[str, Any]:
    encoded: dict[str, Any] = json.loads(json.dumps(asdict(state), default=datetime.isoformat))
    return encoded


def _state_from_json(raw: dict[str, Any]) -> IncidentState:
    return IncidentState(
        model=raw["model"],
        checks=[CheckRecord(**{**c, "at": _when(c["at"])}) for c in raw["checks"]],
        open=_incident(raw["open"]) if raw["open"] else None,
        closed=[_incident(i) for i in raw["closed"]],
        retrain_in_flight_since=_when(raw["retrain_in_flight_since"]),
        last_retrain_started_at=_when(raw["last_retrain_started_at"]),
        last_promotion_at=_when(raw["last_promotion_at"]),
        last_checked_batch=raw.get("last_checked_batch"),
        answered_events=raw.get("answered_events", []),
        answered_incidents=raw.get("answered_incidents", []),
        slot=_holder(raw.get("slot")),
        attachments=[Attachment(**{**a, "at": datetime.fromisoformat(a["at"])}) for a in raw.get("attachments", [])],
        alerts_read_until=_when(raw.get("alerts_read_until")),
    )


def _holder(raw: dict[str, Any] | None) -> SlotHolder | None:
    if not raw:
        return None
    return SlotHolder(**{**raw, "heartbeat_at": datetime.fromisoformat(raw["heartbeat_at"])})


def _incident(raw: dict[str, Any]) -> Incident:
    times = ("opened_at", "retrain_started_at", "closed_at", "waiting_for_labels_since")
    return Incident(**{**raw, **{name: _when(raw.get(name)) for name in times}})


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
