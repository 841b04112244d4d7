"""A retrain whose process died is no longer in flight: checked against a real killed process."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retrainer.monitor.incidents import (
    HOLDER_STALE_SECONDS,
    IncidentBook,
    SlotHolder,
    hold_slot,
    holder_gone,
    release_slot,
    retrain_started,
)
from retrainer.storage import Metadata, sqlite_url


def _book_with_retrain_of(tmp_path: Path, pid: int) -> IncidentBook:
    book = IncidentBook(Metadata(sqlite_url(tmp_path / "churn.db")), "churn")
    now = datetime.now(UTC)
    holder = replace(SlotHolder.here("run-1", "lease-1", now), pid=pid)
    book.update(lambda state: (retrain_started(hold_slot(state, holder), now, "churn:v1:c1"), None))
    return book


def test_holder_is_gone_once_its_process_is_killed(tmp_path: Path) -> None:
    process = subprocess.Popen(["sleep", "600"])
    book = _book_with_retrain_of(tmp_path, process.pid)
    assert book.read().retrain_in_flight_since is not None  # alive: still in flight

    process.send_signal(signal.SIGKILL)
    process.wait()

    state = book.read()
    assert state.retrain_in_flight_since is None  # no longer absorbs drift checks
    assert state.last_retrain_started_at is None  # and started no cooldown
    assert state.slot is not None and state.slot.lease_id == "lease-1"  # kept: the next retrain frees the lease


def test_silent_holder_on_another_host_is_gone_after_the_stale_time() -> None:
    now = datetime.now(UTC)
    remote = SlotHolder("run-2", "lease-2", "elsewhere", 1, now)
    assert not holder_gone(remote, now + timedelta(seconds=HOLDER_STALE_SECONDS - 1))
    assert holder_gone(remote, now + timedelta(seconds=HOLDER_STALE_SECONDS + 1))


def test_slot_record_survives_the_file_and_is_released_by_its_lease(tmp_path: Path) -> None:
    book = IncidentBook(Metadata(sqlite_url(tmp_path / "churn.db")), "churn")
    holder = SlotHolder.here("run-3", "lease-3", datetime.now(UTC))
    book.update(lambda state: (hold_slot(state, holder), None))
    assert book.read().slot == holder
    book.update(lambda state: (release_slot(state, "other-lease"), None))
    assert book.read().slot == holder
    book.update(lambda state: (release_slot(state, "lease-3"), None))
    assert book.read().slot is None
