"""Registry tasks retry transient failures only (real Prefect engine)."""

from __future__ import annotations

import pytest
from prefect import State, flow

from retrainer.errors import RegistryError, RetrainerError, TransientRegistryError
from tasks._common import registry_task

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run_failing_once(error: RetrainerError) -> tuple[State, int]:
    attempts: list[int] = []

    @registry_task("fails-once")
    def fails_once() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise error
        return "done"

    @flow
    def calls_it() -> str:
        return fails_once()

    state = calls_it(return_state=True)
    return state, len(attempts)


def test_transient_registry_error_is_retried() -> None:
    state, attempts = _run_failing_once(TransientRegistryError("registry busy"))
    assert state.is_completed()
    assert state.result() == "done"
    assert attempts == 2


def test_final_registry_error_is_not_retried() -> None:
    state, attempts = _run_failing_once(RegistryError("no such version"))
    assert state.is_failed()
    assert attempts == 1
