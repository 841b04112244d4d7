"""Shared task plumbing: the retry rule, workspace access and artifact keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from retrainer.errors import TransientRegistryError
from retrainer.workspace import Workspace

P = ParamSpec("P")
R = TypeVar("R")
REGISTRY_RETRY_DELAYS = [2.0, 5.0, 15.0]


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry a task only when it failed on a transient registry error."""
    try:
        state.result()
    except TransientRegistryError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final, so it must not be retried
        return False
    return False


def registry_task(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Decorator for a task that talks to the model registry: retried on transient errors only."""
    return task(
        name=name,
        cache_policy=NO_CACHE,
        retries=len(REGISTRY_RETRY_DELAYS),
        retry_delay_seconds=REGISTRY_RETRY_DELAYS,
        retry_condition_fn=only_transient,
    )


def workspace() -> Workspace:
    """Open the workspace from the environment (settings; the config file is read on first use)."""
    return Workspace.open()


def artifact_key(kind: str, model: str) -> str:
    """Prefect artifact key (lowercase letters, digits and dashes only)."""
    return f"{kind}-{model}".lower().replace("_", "-")
