"""The ingest flow through the real Prefect engine: each file on its own, every accepted batch announced.

Issue 14, items 5 and 10: one bad file (nested column, huge cell, missing, a directory) among good
ones neither fails the run nor stops the files after it, and the run's final state names the mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from flows.ingest import ingest
from retrainer.app.cli import main as cli_main
from retrainer.data.synth import make_batch
from tests.conftest import Project

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROWS = 400


def _api() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    assert url, "the Prefect test harness sets an API URL"
    return url


def _events_since(since: datetime, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The retrainer.data.* events that reached the server since ``since``, once there are ``count``."""
    body = {
        "filter": {"event": {"prefix": ["retrainer.data."]}, "occurred": {"since": since.isoformat()}},
        "limit": 50,
    }
    deadline = time.monotonic() + timeout
    while True:
        found: list[dict[str, Any]] = httpx.post(f"{_api()}/events/filter", json=body, timeout=10).json()["events"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def _nested(project: Project) -> str:
    frame = make_batch(ROWS, seed=202).with_columns(pl.Series("tenure", [[1.0, 2.0]] * ROWS))
    return project.file("nested", frame)


def _huge_cell(project: Project) -> str:
    frame = make_batch(ROWS, seed=203).with_columns(pl.col("monthly_charges").cast(pl.String))
    cells = ["x" * (8 * 1024 * 1024), *frame["monthly_charges"].to_list()[1:]]
    return project.file("huge", frame.with_columns(pl.Series("monthly_charges", cells)))


def _folder(project: Project) -> str:
    folder = project.incoming / "folder.parquet"
    folder.mkdir()
    return str(folder)


BadFile = Callable[[Project], str]


def test_bad_files_among_good_ones_are_rejected_alone_and_every_batch_is_announced(project: Project) -> None:
    since = datetime.now(UTC)
    good = [project.file(f"good{seed}", make_batch(ROWS, seed=seed, day=seed % 5)) for seed in (201, 204)]
    missing = str(project.incoming / "never_arrived.parquet")
    files = [good[0], _nested(project), _huge_cell(project), missing, _folder(project), good[1]]

    state = ingest(model="churn", files=files, return_state=True)

    assert state.is_completed() and state.name == "PartlyAccepted", state.message
    batches = project.workspace().store("churn").manifest().batches
    assert [b.source for b in batches] == [str(Path(good[0]).absolute()), str(Path(good[1]).absolute())]
    for rule in ("nested_type", "not_castable", "missing: no such file", "not_regular_file"):
        assert rule in (state.message or ""), rule
    assert len(state.message or "") < 4000

    found = _events_since(since, 6)
    arrived = {e["payload"]["batch_id"] for e in found if e["event"] == "retrainer.data.arrived"}
    rejected = sorted(e["payload"]["source"] for e in found if e["event"] == "retrainer.data.rejected")
    assert arrived == {b.batch_id for b in batches}
    assert rejected == sorted(files[1:5])


def test_only_missing_files_end_missing_and_a_rejection_exits_2(project: Project) -> None:
    missing = str(project.incoming / "late.parquet")

    state = ingest(model="churn", files=[missing], return_state=True)

    assert state.name == "Missing", state.name
    assert missing in (state.message or "")
    assert cli_main(["ingest", "--model", "churn", missing]) == 2
    assert cli_main(["ingest", "--model", "churn", _nested(project)]) == 2
    good = project.file("good205", make_batch(ROWS, seed=205, day=2))
    assert cli_main(["ingest", "--model", "churn", good, _folder(project)]) == 2
    assert cli_main(["ingest", "--model", "churn", project.file("good206", make_batch(ROWS, seed=206))]) == 0
