"""Rollback tasks."""

from __future__ import annotations

from prefect import task

from retrainer import events
from retrainer.cycle.rollback import Rollback, rollback
from tasks._common import workspace


@task(name="roll-back")
def roll_back(model: str, reason: str, to_version: str | None, force: bool) -> Rollback:
    """Move ``@champion`` back under the promotion lock and record it in the history."""
    ws = workspace()
    ws.model(model)
    return rollback(ws.registry, ws.history(model), model, reason, to=to_version, force=force)


@task(name="describe-rollback")
def rollback_event(done: Rollback) -> events.Event:
    """The ``model.rolled_back`` event."""
    return events.rolled_back(
        model=done.model, from_version=done.from_version, to_version=done.to_version, reason=done.reason
    )
