"""Serve every retrainer deployment, with its triggers and schedules, from one process (no worker).

Run ``retrainer serve`` (or ``python -m deployments.serve``) with ``PREFECT_API_URL`` pointing at a
Prefect server or a Prefect Cloud workspace. Runs started by events, schedules, the UI, the API or
``prefect deployment run`` execute here, at most ``serve_limit`` at once (the rest wait on the
server without a process).
"""

from __future__ import annotations

from deployments.definitions import deployments, serve_limit
from retrainer.workspace import Workspace
from tasks._single_flight import ensure_retrain_limits

# Prefect's runner looks for runs to start every 10 s by default: up to 10 s between an event's
# flow run being created and its process starting. One query a second costs the server little.
POLL_SECONDS = 1.0


def main() -> None:
    """Check the stores, create the per-model retrain limits, then serve (a bounded number of runs at once)."""
    from prefect import serve

    workspace = Workspace.open()
    project = workspace.project
    workspace.storage.check()  # wrong credentials fail here, once, instead of in every run
    ensure_retrain_limits(project.models)
    serve(*deployments(project), query_seconds=POLL_SECONDS, limit=serve_limit(project))


if __name__ == "__main__":
    main()
