"""Shared task plumbing: the retry rule and workspace access."""

from __future__ import annotations

from typing import Any

from retrainer.errors import TransientRegistryError
from retrainer.workspace import Workspace


def only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry a task only when it failed on a transient registry error."""
    try:
        state.result()
    except TransientRegistryError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final, so it must not be retried
        return False
    return False


def workspace() -> Workspace:
    """Open the workspace from the environment (settings + config file)."""
    return Workspace.open()


def artifact_key(kind: str, model: str) -> str:
    """Prefect artifact key (lowercase letters, digits and dashes only)."""
    return f"{kind}-{model}".lower().replace("_", "-")
