"""Rollback tasks."""

from __future__ import annotations

from prefect import task

from retrainer import events
from retrainer.cycle.decide import announcement_event
from retrainer.cycle.rollback import Rollback, rollback
from tasks._common import workspace


@task(name="roll-back")
def roll_back(model: str, reason: str, to_version: str | None, force: bool) -> Rollback:
    """Reconcile, then move ``@champion`` back under the promotion lock and record it in the history."""
    ws = workspace()
    ws.model(model)
    done = rollback(ws.registry, ws.history(model), model, reason, to=to_version, force=force)
    for note in done.repaired:
        print(note)
    return done


@task(name="describe-rollback")
def rollback_events(done: Rollback) -> list[events.Event]:
    """The ``model.rolled_back`` event, after any recorded change whose event may have been lost."""
    return [announcement_event(intent) for intent in done.unannounced]
