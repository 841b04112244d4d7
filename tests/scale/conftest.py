"""The scaled layout (tests/scale/stack.py) as one session-wide fixture, and the ``scale`` marker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.scale.stack import PG_BIN, Stack

# The stack's start/stop timing lines, shown in the terminal summary (fixture output is captured).
_SUMMARIES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _SUMMARIES:
        terminalreporter.write_line(line)


def _missing_engines() -> list[str]:
    missing = [] if (PG_BIN / "initdb").exists() else [f"PostgreSQL 15 ({PG_BIN}/initdb)"]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The whole stack, up once per session (skipped without its engines unless RETRAINER_SCALE_REQUIRED)."""
    missing = _missing_engines()
    if missing:
        reason = f"scaled layout needs {', '.join(missing)} (make test-scale installs them)"
        if os.environ.get("RETRAINER_SCALE_REQUIRED"):
            pytest.fail(reason + "; RETRAINER_SCALE_REQUIRED is set")
        pytest.skip(reason)
    # The root is kept when start-up fails or a test failed (its logs/ explain why), or on RETRAINER_SCALE_KEEP.
    running = Stack(keep_root=True)
    try:
        with running:
            _SUMMARIES.append(running.summary)
            yield running
            running.keep_root = request.session.testsfailed > 0 or bool(os.environ.get("RETRAINER_SCALE_KEEP"))
    finally:
        _SUMMARIES.append(running.stop_summary + (f" (root kept: {running.root})" if running.keep_root else ""))
