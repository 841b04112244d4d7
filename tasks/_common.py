"""Shared task plumbing: the retry rule for the registry and the stores, workspace access and artifact keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from retrainer.config import load_settings
from retrainer.errors import TransientError
from retrainer.workspace import Workspace

P = ParamSpec("P")
R = TypeVar("R")
REGISTRY_RETRY_DELAYS = [2.0, 5.0, 15.0]


def outage_budget_seconds() -> float:
    """How long a registry or store task keeps retrying an unreachable service, from its first attempt.

    The setting ``RETRAINER_OUTAGE_BUDGET_SECONDS`` (default 120).

    Raises:
        ConfigError: the variable is not a positive number of seconds.
    """
    return load_settings().outage_budget_seconds


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry only a transient error (registry, data or metadata store) within the outage budget."""
    try:
        state.result()
    except TransientError:
        return _retry_fits_budget(task_run)
    except Exception:  # noqa: BLE001 - any other failure is final, so it must not be retried
        return False
    return False


def _retry_fits_budget(task_run: Any) -> bool:
    now = datetime.now(UTC)
    started = task_run.start_time or now
    delay: float = REGISTRY_RETRY_DELAYS[min(max(task_run.run_count, 1), len(REGISTRY_RETRY_DELAYS)) - 1]
    elapsed: float = (now - started).total_seconds()
    return elapsed + delay <= outage_budget_seconds()


def registry_task(name: str, task_run_name: str | None = None) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Decorator for a task that talks to the model registry or the stores: retried on transient errors only.

    Retries stop once the next one would start after the outage budget (:func:`outage_budget_seconds`);
    the task then fails with the error, which names the registry or store it could not reach.
    """
    return task(
        name=name,
        task_run_name=task_run_name,
        cache_policy=NO_CACHE,
        retries=len(REGISTRY_RETRY_DELAYS),
        retry_delay_seconds=REGISTRY_RETRY_DELAYS,
        retry_condition_fn=only_transient,
    )


store_task = registry_task
"""The same rule for a task whose outside service is the data or metadata store."""


def workspace() -> Workspace:
    """Open the workspace from the environment (settings; the config file is read on first use)."""
    return Workspace.open()


def artifact_key(kind: str, model: str) -> str:
    """Prefect artifact key (lowercase letters, digits and dashes only)."""
    return f"{kind}-{model}".lower().replace("_", "-")
