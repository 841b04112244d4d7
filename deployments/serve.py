"""Serve the ingest, monitor, retrain and rollback flows as deployments from one process (no worker needed).

Run ``python -m deployments.serve`` with ``PREFECT_API_URL`` pointing at a Prefect server (or with
a Prefect Cloud profile); runs started from the UI, the API or ``prefect deployment run`` execute
here. ``prefect.yaml`` declares the same deployments for a process work pool.
"""

from __future__ import annotations

from typing import Any

from flows.ingest import ingest
from flows.monitor import monitor
from flows.retrain import retrain
from flows.rollback import rollback

DEPLOYMENT_NAME = "default"


def deployments() -> list[Any]:
    """The deployments served, one per flow."""
    return [
        ingest.to_deployment(name=DEPLOYMENT_NAME, tags=["retrainer"]),
        monitor.to_deployment(name=DEPLOYMENT_NAME, tags=["retrainer"]),
        retrain.to_deployment(name=DEPLOYMENT_NAME, tags=["retrainer"]),
        rollback.to_deployment(name=DEPLOYMENT_NAME, tags=["retrainer"]),
    ]


def main() -> None:
    """Serve until interrupted."""
    from prefect import serve

    serve(*deployments())


if __name__ == "__main__":
    main()
