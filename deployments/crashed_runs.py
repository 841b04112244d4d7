"""The automation that marks a flow run ``Crashed`` when its process dies (a worker or machine lost).

Usage (with ``PREFECT_API_URL`` set), once per Prefect server or workspace, after ``prefect deploy``::

    python -m deployments.crashed_runs

Every flow run's process emits ``prefect.flow-run.heartbeat`` every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (set it on the workers; Prefect's default is 180, its
least 30). A run whose process is killed stops emitting and would stay ``Running`` for ever: the
Prefect server has no such check of its own. This proactive automation expects, within
:data:`MISSED_HEARTBEATS` heartbeat periods after each heartbeat of a retrainer run, another one or
the run's end, and otherwise sets the run ``Crashed``. (A retrain waiting for its model's slot also
marks a dead holder ``Crashed`` at once; this catches every other run.) Running it again replaces
the automation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from datetime import timedelta
from typing import Any

AUTOMATION = "retrainer-mark-crashed-runs"
HEARTBEAT_SECONDS = 30
MISSED_HEARTBEATS = 3
_ENDED = [
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
]


def trigger_spec(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> dict[str, Any]:
    """The proactive trigger: a retrainer run's heartbeat not followed by another, or its end, in time."""
    return {
        "type": "event",
        "after": ["prefect.flow-run.heartbeat"],
        "expect": ["prefect.flow-run.heartbeat", *_ENDED],
        "match": {"prefect.resource.id": "prefect.flow-run.*"},
        "match_related": {"prefect.resource.id": "prefect.tag.retrainer"},
        "for_each": ["prefect.resource.id"],
        "posture": "Proactive",
        "threshold": 1,
        "within": heartbeat_seconds * MISSED_HEARTBEATS,
    }


async def create(heartbeat_seconds: int = HEARTBEAT_SECONDS) -> str:
    """(Re)create the automation; return its id."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger

    with contextlib.suppress(ValueError):  # raised when it does not exist yet
        await (await Automation.aread(name=AUTOMATION)).adelete()
    spec = {k: v for k, v in trigger_spec(heartbeat_seconds).items() if k != "type"}
    spec["within"] = timedelta(seconds=spec["within"])
    message = f"no heartbeat for {heartbeat_seconds * MISSED_HEARTBEATS} s: the run's process is gone"
    automation = await Automation(
        name=AUTOMATION,
        description="Mark a retrainer flow run Crashed when its process stops sending heartbeats.",
        trigger=EventTrigger(**spec),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    ).acreate()
    return str(automation.id)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--heartbeat-seconds",
        type=int,
        default=HEARTBEAT_SECONDS,
        help="the workers' PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
    )
    print(f"automation {AUTOMATION}: {asyncio.run(create(parser.parse_args().heartbeat_seconds))}")


if __name__ == "__main__":
    main()
