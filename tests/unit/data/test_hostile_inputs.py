"""Hostile inputs to the ingest: far-future and null times, nested columns, huge cells, special paths.

Issue 14, items 4, 6 (ingest side), 7 and 10. Real polars, real files, FIFOs and devices; no Prefect.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from retrainer import events
from retrainer.config import ModelConfig, load_project, parse_project
from retrainer.cycle.plan import plan_split
from retrainer.data.ingest import IngestOutcome, ingest_file
from retrainer.data.store import BatchRecord, BatchStore, Manifest
from retrainer.data.synth import demo_config, make_batch
from retrainer.errors import ConfigError
from retrainer.storage import Storage

ROWS = 300
EVENT_LIMIT = 16 * 1024
"""Bytes a ``data.rejected`` payload must stay under (Prefect refuses large events with ``EventTooLarge``)."""


def churn_config(**ingest: Any) -> ModelConfig:
    """The demo churn model, with ``ingest`` settings when given."""
    raw: dict[str, Any] = demo_config()
    if ingest:
        raw["models"]["churn"]["ingest"] = ingest
    return parse_project(raw, "test").model("churn")


def store_at(tmp_path: Path) -> BatchStore:
    """An empty churn store under ``tmp_path``."""
    return BatchStore(Storage.local(tmp_path / "data"), "churn")


def written(tmp_path: Path, name: str, frame: pl.DataFrame) -> Path:
    """``frame`` written as Parquet under ``tmp_path``."""
    path = tmp_path / name
    frame.write_parquet(path)
    return path


def rules(outcome: IngestOutcome) -> list[tuple[str, str | None]]:
    """(rule, column) of every violation of a rejected outcome."""
    assert outcome.error is not None, "expected a rejection"
    return [(v.rule, v.column) for v in outcome.error.violations]


def with_time(frame: pl.DataFrame, row: int, value: datetime | None) -> pl.DataFrame:
    """``frame`` with ``event_time`` replaced at ``row``."""
    times = frame["event_time"].to_list()
    times[row] = value
    return frame.with_columns(pl.Series("event_time", times, dtype=pl.Datetime("us")))


def assert_owner_only(path: Path) -> None:
    """Neither group nor others may read, write or run ``path``."""
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o077 == 0, f"{path.name} has mode {oct(mode)}"


# --------------------------------------------------------------------------- item 4: time columns


def test_year_9999_timestamp_is_quarantined_with_column_rule_and_example(tmp_path: Path) -> None:
    source = written(tmp_path, "future.parquet", with_time(make_batch(ROWS, seed=1), 7, datetime(9999, 12, 31)))

    outcome = ingest_file(store_at(tmp_path), churn_config(), source)

    assert rules(outcome) == [("future_timestamp", "event_time")]
    assert outcome.quarantined is not None
    message = str(outcome.error)
    assert "1 timestamp(s) later than now + ingest.time_tolerance_seconds" in message
    assert "9999-12-31" in message


def test_time_tolerance_is_configurable(tmp_path: Path) -> None:
    soon = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)
    source = written(tmp_path, "soon.parquet", with_time(make_batch(ROWS, seed=2), 0, soon))

    assert ingest_file(store_at(tmp_path / "a"), churn_config(), source).ok
    strict = ingest_file(store_at(tmp_path / "b"), churn_config(time_tolerance_seconds=60), source)
    assert rules(strict) == [("future_timestamp", "event_time")]


def test_all_null_time_column_is_refused(tmp_path: Path) -> None:
    frame = make_batch(ROWS, seed=3).with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("event_time"))

    outcome = ingest_file(store_at(tmp_path), churn_config(), written(tmp_path, "no_times.parquet", frame))

    assert rules(outcome) == [("all_null", "event_time")]


def _record(batch_id: str, time_max: str, ingested_at: str) -> BatchRecord:
    return BatchRecord(batch_id, batch_id * 4, ROWS, [], "2026-01-01 00:00:00", time_max, "x", ingested_at)


def test_far_future_batch_gives_up_the_holdout_once_newer_data_arrives() -> None:
    earlier = _record("earlier", "2026-05-30 10:00:00", "2026-05-30T11:00:00+00:00")
    captured = _record("future", "9999-12-31 00:00:00", "2026-06-01T00:00:00+00:00")
    later = _record("later", "2026-06-02 10:00:00", "2026-06-02T11:00:00+00:00")
    backfill = _record("backfill", "2025-01-01 10:00:00", "2026-06-05T11:00:00+00:00")
    manifest = Manifest("churn", ["tenure"], [earlier, captured, later, backfill])

    split = plan_split(manifest, churn_config())

    # The 9999 batch ranks as of its arrival; a late backfill of old data ranks by its data.
    assert [b.batch_id for b in split.holdout] == ["later"]
    assert [b.batch_id for b in split.training] == ["backfill", "earlier", "future"]


# --------------------------------------------------------------------------- item 10: nested columns


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("tenure", [[1.0, 2.0]] * ROWS),  # list in a numeric feature
        ("plan", [{"name": "basic", "tier": 1}] * ROWS),  # struct in a categorical feature
        ("event_time", [["2026-01-01"]] * ROWS),  # list in the time column
    ],
    ids=["list-numeric", "struct-categorical", "list-time"],
)
def test_nested_column_is_refused_not_raised(tmp_path: Path, column: str, values: list[object]) -> None:
    frame = make_batch(ROWS, seed=4).with_columns(pl.Series(column, values))

    outcome = ingest_file(store_at(tmp_path), churn_config(), written(tmp_path, "nested.parquet", frame))

    assert rules(outcome) == [("nested_type", column)]
    assert "cannot be read as" in str(outcome.error)
    assert outcome.quarantined is not None


def test_surprise_while_checking_one_file_becomes_its_rejection(tmp_path: Path) -> None:
    # polars cannot cast raw bytes to a number: no contract rule foresees it, the file still gets an answer.
    frame = make_batch(ROWS, seed=7).with_columns(pl.col("tenure").cast(pl.String).cast(pl.Binary))

    outcome = ingest_file(store_at(tmp_path), churn_config(), written(tmp_path, "bytes.parquet", frame))

    assert rules(outcome) == [("unprocessable", None)]
    assert "InvalidOperationError: casting from" in str(outcome.error)
    assert outcome.quarantined is not None


# --------------------------------------------------------------------------- item 7: oversized content


def test_huge_cell_gives_a_small_reason_file_and_a_small_event(tmp_path: Path) -> None:
    frame = make_batch(ROWS, seed=5).with_columns(pl.col("tenure").cast(pl.String))
    huge = ["x" * (8 * 1024 * 1024), "y" * 50_000, "z" * 100, *frame["tenure"].to_list()[3:]]
    source = written(tmp_path, "huge.parquet", frame.with_columns(pl.Series("tenure", huge)))

    outcome = ingest_file(store_at(tmp_path), churn_config(), source)

    assert rules(outcome) == [("not_castable", "tenure")]
    assert outcome.quarantined is not None and outcome.error is not None
    copy = Path(outcome.quarantined)
    reason = copy.with_name(copy.name + ".reason.json")
    assert reason.stat().st_size < 4096, reason.stat().st_size
    assert "(8388608 chars)" in json.loads(reason.read_text())["message"]
    event = events.data_rejected(
        model="churn", source=source, violations=outcome.error.violations, quarantined=outcome.quarantined
    )
    assert len(json.dumps(event.payload)) < EVENT_LIMIT


# --------------------------------------------------------------------------- item 6: hostile paths


def _ingest_within(seconds: float, store: BatchStore, config: ModelConfig, source: Path) -> IngestOutcome:
    """Run the ingest in a daemon thread; fail (instead of hanging) if it takes longer than ``seconds``."""
    result: list[IngestOutcome] = []
    worker = threading.Thread(target=lambda: result.append(ingest_file(store, config, source)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"ingest of {source} still running after {seconds} s"
    return result[0]


def _unblock(fifo: Path) -> None:
    """Open ``fifo`` for writing once, so a reader stuck in ``open()`` (the code before the fix) goes on."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _refused_unread(outcome: IngestOutcome, store: BatchStore, rule: str, fragment: str) -> None:
    assert outcome.error is not None
    assert [v.rule for v in outcome.error.violations] == [rule]
    assert fragment in str(outcome.error)
    assert outcome.quarantined is None
    quarantine = Path(store.blobs.url, store.prefix, "quarantine")
    assert not quarantine.exists() or not any(quarantine.iterdir())


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.parquet"
    os.mkfifo(fifo)
    store = store_at(tmp_path)
    try:
        outcome = _ingest_within(10, store, churn_config(), fifo)
    finally:
        _unblock(fifo)
    _refused_unread(outcome, store, "not_regular_file", "a FIFO is not a regular file")


def test_symlink_to_a_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.csv"
    link.symlink_to(fifo)
    store = store_at(tmp_path)
    try:
        outcome = _ingest_within(10, store, churn_config(), link)
    finally:
        _unblock(fifo)
    _refused_unread(outcome, store, "not_regular_file", "a FIFO")


def test_dev_zero_is_refused_unread(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    outcome = _ingest_within(10, store, churn_config(max_file_bytes=1024), Path("/dev/zero"))
    _refused_unread(outcome, store, "not_regular_file", "a character device")


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder.parquet"
    folder.mkdir()
    store = store_at(tmp_path)
    _refused_unread(ingest_file(store, churn_config(), folder), store, "not_regular_file", "a directory")


def test_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    source = written(tmp_path, "big.parquet", make_batch(ROWS, seed=6))
    store = store_at(tmp_path)
    cap = source.stat().st_size - 1

    outcome = ingest_file(store, churn_config(max_file_bytes=cap), source)

    _refused_unread(outcome, store, "too_large", f"exceed ingest.max_file_bytes ({cap})")
    assert ingest_file(store, churn_config(max_file_bytes=cap + 1), source).ok


def test_missing_file_is_reported_missing(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    outcome = ingest_file(store, churn_config(), tmp_path / "nowhere.parquet")
    _refused_unread(outcome, store, "missing", "no such file")
    assert outcome.missing


def test_quarantine_copy_and_reason_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\n", encoding="utf-8")
    secret.chmod(0o600)
    previous = os.umask(0o000)
    try:
        outcome = ingest_file(store_at(tmp_path), churn_config(), secret)
    finally:
        os.umask(previous)

    assert outcome.quarantined is not None
    assert_owner_only(Path(outcome.quarantined))
    assert_owner_only(Path(outcome.quarantined + ".reason.json"))


# --------------------------------------------------------------------------- item 10: duplicate YAML key


def test_duplicate_yaml_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "retrainer.yaml"
    path.write_text("models:\n  churn:\n    task: binary\n    target: churned\n    target: label\n", encoding="utf-8")

    with pytest.raises(ConfigError) as raised:
        load_project(path)

    assert str(path) in str(raised.value)
    assert "duplicate key 'target'" in str(raised.value)
    assert "line 5" in str(raised.value)


@pytest.mark.parametrize(
    "values",
    [
        pl.Series([datetime(2026, 1, 1) + timedelta(days=i) for i in range(ROWS)]),
        pl.Series([timedelta(days=i) for i in range(ROWS)]),
    ],
)
def test_times_in_a_numeric_feature_are_refused_not_counted_in_a_file_unit(tmp_path: Path, values: pl.Series) -> None:
    # A timestamp cast to a number depends on the file's time unit (us, ns, ms): training and serving would disagree.
    frame = make_batch(ROWS, seed=3).with_columns(values.alias("tenure"))
    outcome = ingest_file(store_at(tmp_path), churn_config(), written(tmp_path, "times.parquet", frame))
    assert ("not_numeric_type", "tenure") in rules(outcome)


def test_a_categorical_from_floats_with_gaps_is_stored_as_its_integer_levels(tmp_path: Path) -> None:
    raw: dict[str, Any] = demo_config()
    raw["models"]["churn"]["categorical"]["tier"] = ["1", "2"]
    config = parse_project(raw, "t").model("churn")
    tier = pl.Series([1.0, None, 2.0, float("nan")] * (ROWS // 4))
    frame = make_batch(ROWS, seed=4).with_columns(tier.alias("tier"))
    store = store_at(tmp_path)
    outcome = ingest_file(store, config, written(tmp_path, "tier.parquet", frame))
    assert outcome.error is None
    stored = store.read(store.manifest().batches, ["tier"])["tier"]
    assert stored.head(4).to_list() == ["1", None, "2", None]
