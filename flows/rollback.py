"""The rollback flow: move ``@champion`` back and record why."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.emit import emit
from tasks.retrain import mark_announced
from tasks.rollback import roll_back, rollback_events


@flow(name="rollback", log_prints=True)
def rollback(model: str, reason: str, to_version: str | None = None, force: bool = False) -> State:
    """Point ``model@champion`` at ``to_version`` (default: the version the champion replaced).

    Args:
        model: Model name from the config file.
        reason: Why (recorded in the history and on the version).
        to_version: Target version; default the one the current champion replaced.
        force: Allow a target that never passed a judgement.
    """
    done = roll_back(model, reason, to_version, force)
    emit(rollback_events(done))
    mark_announced(model, [intent.key for intent in done.unannounced])
    repaired = "".join(f"; {note}" for note in done.repaired)
    message = f"{model}: v{done.from_version} → v{done.to_version} ({reason}){repaired}"
    return Completed(name="RolledBack", message=message)
