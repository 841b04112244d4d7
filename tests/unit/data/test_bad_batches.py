"""Bad batches are rejected, quarantined byte-for-byte with their reasons, and never stored.

Needs neither Prefect nor MLflow: only the contract, the batch store and ``ingest_file``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from retrainer.config import ModelConfig, parse_project
from retrainer.data.ingest import IngestOutcome, ingest_file
from retrainer.data.store import BatchRecord, BatchStore
from retrainer.data.synth import demo_config, make_batch
from retrainer.storage import Storage

ROWS = 300
FEATURES = [
    "tenure",
    "monthly_charges",
    "plan",
    "region",
    "age",
    "support_calls",
    "autopay",
    "f00",
    "f01",
    "f02",
    "f03",
]
Expected = tuple[tuple[str, str | None], ...]


# --------------------------------------------------------------------------- helpers


def binary_config() -> ModelConfig:
    """The demo churn model: binary 0/1 label, features taken from the first accepted batch."""
    return parse_project(demo_config(), "test").model("churn")


def declared_config() -> ModelConfig:
    """The demo churn model with its feature list declared in the config."""
    raw: dict[str, Any] = demo_config()
    raw["models"]["churn"]["features"] = FEATURES
    return parse_project(raw, "test").model("churn")


def regression_config() -> ModelConfig:
    """A small regression model predicting ``price`` from ``size`` and ``rooms``."""
    raw = {"models": {"price": {"task": "regression", "target": "price", "features": ["size", "rooms"]}}}
    return parse_project(raw, "test").model("price")


CONFIGS: dict[str, tuple[str, Callable[[], ModelConfig]]] = {
    "binary": ("churn", binary_config),
    "declared": ("churn", declared_config),
    "regression": ("price", regression_config),
}


def good_frame(seed: int = 1) -> pl.DataFrame:
    """A valid churn batch of ``ROWS`` rows."""
    return make_batch(rows=ROWS, seed=seed)


def with_values(frame: pl.DataFrame, column: str, rows: dict[int, object]) -> pl.DataFrame:
    """Return ``frame`` with ``column`` overwritten at the given row positions (as text if any value is text)."""
    values: list[object] = frame[column].to_list()
    as_text = any(isinstance(v, str) for v in rows.values())
    if as_text:
        values = [None if v is None else str(v) for v in values]
    for row, value in rows.items():
        values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=pl.String if as_text else None))


def timestamps_as_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Render ``event_time`` as plain ``YYYY-mm-dd HH:MM:SS`` text."""
    return frame.with_columns(pl.col("event_time").dt.strftime("%Y-%m-%d %H:%M:%S"))


def price_frame(prices: list[float]) -> pl.DataFrame:
    """A regression batch with the given target values."""
    n = len(prices)
    return pl.DataFrame(
        {"size": [50.0 + i for i in range(n)], "rooms": [float(i % 4 + 1) for i in range(n)], "price": prices}
    )


def csv_writer(frame: pl.DataFrame) -> Callable[[Path], None]:
    """A writer that saves ``frame`` as CSV."""
    return lambda path: frame.write_csv(path)


def parquet_writer(frame: pl.DataFrame) -> Callable[[Path], None]:
    """A writer that saves ``frame`` as Parquet."""
    return lambda path: frame.write_parquet(path)


def bytes_writer(data: bytes) -> Callable[[Path], None]:
    """A writer that saves raw bytes."""

    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def listing(directory: Path) -> set[str]:
    """Names in ``directory`` (empty when it does not exist)."""
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def manifest_ids(store: BatchStore) -> list[str]:
    """Batch ids the manifest lists, in order."""
    return [b.batch_id for b in store.manifest().batches]


def rendered_prefix(source: Path, rule: str, column: str | None) -> str:
    """How a violation line of ``source`` must begin: file, then column, then rule."""
    where = f"column {column!r}: " if column else ""
    return f"{source}: {where}{rule}: "


def ingest_accepted(store: BatchStore, config: ModelConfig, source: Path) -> BatchRecord:
    """Ingest a file that must be accepted and return its record."""
    outcome = ingest_file(store, config, source)
    assert outcome.error is None, str(outcome.error)
    assert outcome.accepted is not None
    return outcome.accepted


# --------------------------------------------------------------------------- the bad batches


@dataclass(frozen=True)
class BadBatch:
    """One kind of bad input file and the violations it must be rejected with (in check order)."""

    filename: str
    write: Callable[[Path], None]
    violations: Expected
    fragments: tuple[str, ...] = ()
    config: str = "binary"
    after_accepted_batch: bool = False
    names_accepted_batch: bool = False


def _several_violations() -> pl.DataFrame:
    frame = timestamps_as_text(good_frame())
    frame = with_values(frame, "tenure", {0: "abc", 1: "n/a"})
    frame = with_values(frame, "event_time", {2: "yesterday"})
    frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("f02"))
    return with_values(frame, "churned", {3: None, 4: 7})


def _latin1_csv() -> bytes:
    text = with_values(good_frame(), "plan", {0: "café"}).write_csv()
    return text.encode("latin-1")


BAD_BATCHES: dict[str, BadBatch] = {
    "missing_feature_pinned_by_first_batch": BadBatch(
        "no_tenure.csv",
        csv_writer(good_frame(seed=2).drop("tenure")),
        (("missing_column", "tenure"),),
        ("required column is absent",),
        after_accepted_batch=True,
    ),
    "missing_feature_declared_in_config": BadBatch(
        "no_f01.parquet",
        parquet_writer(good_frame().drop("f01")),
        (("missing_column", "f01"),),
        config="declared",
    ),
    "missing_target": BadBatch(
        "no_label.csv",
        csv_writer(good_frame().drop("churned")),
        (("missing_column", "churned"),),
    ),
    "header_only": BadBatch(
        "header_only.csv",
        csv_writer(good_frame().head(0)),
        (("empty", None),),
        ("the batch has no rows",),
    ),
    "zero_byte_file": BadBatch("zero.csv", bytes_writer(b""), (("unreadable", None),), ("empty CSV",)),
    "non_numeric_feature": BadBatch(
        "text_in_tenure.csv",
        csv_writer(with_values(good_frame(), "tenure", {0: "abc", 5: "abc", 9: "12,5"})),
        (("not_castable", "tenure"),),
        ("3 value(s) are not a number, e.g. 'abc', '12,5'",),
    ),
    "feature_entirely_null": BadBatch(
        "null_f01.parquet",
        parquet_writer(good_frame().with_columns(pl.lit(None, dtype=pl.Float64).alias("f01"))),
        (("all_null", "f01"),),
        (f"every one of {ROWS} values is null",),
    ),
    "null_label": BadBatch(
        "null_label.csv",
        csv_writer(with_values(good_frame(), "churned", {3: None, 7: None})),
        (("target_missing", "churned"),),
        ("2 row(s) have no label",),
    ),
    "label_outside_classes": BadBatch(
        "label_two.csv",
        csv_writer(with_values(good_frame(), "churned", {0: 2, 10: 2, 20: 2})),
        (("unknown_class", "churned"),),
        ("3 label(s) outside classes [0, 1], e.g. '2'",),
    ),
    "regression_target_inf": BadBatch(
        "price_inf.csv",
        csv_writer(price_frame([100.0, float("inf"), 120.0, float("-inf")])),
        (("target_not_finite", "price"),),
        ("2 label(s) are not finite numbers, e.g. 'inf', '-inf'",),
        config="regression",
    ),
    "regression_target_nan": BadBatch(
        "price_nan.parquet",
        parquet_writer(price_frame([100.0, float("nan"), 120.0])),
        (("target_not_finite", "price"),),
        ("1 label(s) are not finite numbers, e.g. 'NaN'",),
        config="regression",
    ),
    "non_utf8_csv": BadBatch(
        "latin1.csv",
        bytes_writer(_latin1_csv()),
        (("encoding", None),),
        ("not UTF-8 text", "b'\\xe9'"),
    ),
    "corrupt_parquet": BadBatch(
        "corrupt.parquet",
        bytes_writer(random.Random(0).randbytes(512)),
        (("unreadable", None),),
    ),
    "unsupported_extension": BadBatch(
        "batch.xlsx",
        bytes_writer(b"PK\x03\x04 not really a workbook"),
        (("unsupported_format", None),),
        ("expected one of ('.parquet', '.csv')",),
    ),
    "duplicate_of_accepted_batch": BadBatch(
        "again.csv",
        csv_writer(good_frame(seed=1)),
        (("duplicate_batch", None),),
        ("byte-identical to accepted batch",),
        after_accepted_batch=True,
        names_accepted_batch=True,
    ),
    "unparseable_timestamp": BadBatch(
        "bad_time.csv",
        csv_writer(with_values(timestamps_as_text(good_frame()), "event_time", {5: "not-a-date"})),
        (("not_castable", "event_time"),),
        ("1 value(s) are not a timestamp, e.g. 'not-a-date'",),
    ),
    "missing_column_with_bad_values_elsewhere": BadBatch(
        "no_time_bad_label.csv",
        csv_writer(with_values(good_frame().drop("event_time"), "churned", {4: 9})),
        (("missing_column", "event_time"), ("unknown_class", "churned")),
        ("required column is absent", "1 label(s) outside classes [0, 1], e.g. '9'"),
    ),
    "several_violations_at_once": BadBatch(
        "everything_wrong.csv",
        csv_writer(_several_violations()),
        (
            ("not_castable", "tenure"),
            ("not_castable", "event_time"),
            ("all_null", "f02"),
            ("target_missing", "churned"),
            ("unknown_class", "churned"),
        ),
        ("'abc', 'n/a'", "'yesterday'", "1 row(s) have no label", "e.g. '7'"),
    ),
}


# --------------------------------------------------------------------------- tests


def batches_dir(store: BatchStore) -> Path:
    return Path(store.blobs.url, store.prefix, "batches")


def quarantine_dir(store: BatchStore) -> Path:
    return Path(store.blobs.url, store.prefix, "quarantine")


@pytest.mark.parametrize("case", BAD_BATCHES.values(), ids=list(BAD_BATCHES))
def test_bad_batch_is_rejected_quarantined_and_not_stored(tmp_path: Path, case: BadBatch) -> None:
    model, make_config = CONFIGS[case.config]
    config = make_config()
    store = BatchStore(Storage.local(tmp_path / "data"), model)
    accepted: BatchRecord | None = None
    if case.after_accepted_batch:
        first = tmp_path / "accepted.csv"
        good_frame(seed=1).write_csv(first)
        accepted = ingest_accepted(store, config, first)
    source = tmp_path / "incoming" / case.filename
    source.parent.mkdir()
    case.write(source)
    source_bytes, source_mtime = source.read_bytes(), source.stat().st_mtime_ns
    batches_before, ids_before = listing(batches_dir(store)), manifest_ids(store)
    quarantine_before = listing(quarantine_dir(store))

    outcome = ingest_file(store, config, source)

    # (1) rejected, and the message names file, column and rule for every violation
    assert outcome.ok is False
    assert outcome.accepted is None
    assert outcome.error is not None
    assert [(v.rule, v.column) for v in outcome.error.violations] == list(case.violations)
    lines = str(outcome.error).splitlines()
    assert len(lines) == len(case.violations)
    for line, (rule, column) in zip(lines, case.violations, strict=True):
        assert line.startswith(rendered_prefix(source, rule, column)), line
    for fragment in case.fragments:
        assert fragment in str(outcome.error)
    if case.names_accepted_batch:
        assert accepted is not None
        assert f"accepted batch {accepted.batch_id}" in str(outcome.error)

    # (2) a byte copy in quarantine with a sibling reason file listing the rules
    assert outcome.quarantined is not None
    copy = Path(outcome.quarantined)
    assert copy.parent == tmp_path / "data" / model / "quarantine"
    assert copy.name.endswith(f"-{case.filename}")
    assert copy.read_bytes() == source_bytes
    assert copy.stat().st_mode & 0o222 == 0
    reason_path = copy.with_name(copy.name + ".reason.json")
    assert listing(quarantine_dir(store)) - quarantine_before == {copy.name, reason_path.name}
    reason = json.loads(reason_path.read_text(encoding="utf-8"))
    assert [(v["rule"], v["column"]) for v in reason["violations"]] == list(case.violations)
    assert reason["source"] == str(source)
    assert reason["message"] == str(outcome.error)

    # (3) the source is untouched
    assert source.exists()
    assert source.read_bytes() == source_bytes
    assert source.stat().st_mtime_ns == source_mtime

    # (4) nothing was stored
    assert listing(batches_dir(store)) == batches_before
    assert manifest_ids(store) == ids_before


def test_missing_source_is_missing_and_not_quarantined(tmp_path: Path) -> None:
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    source = tmp_path / "never_arrived.csv"

    outcome = ingest_file(store, binary_config(), source)

    assert outcome.ok is False
    assert outcome.error is not None
    assert [(v.rule, v.column) for v in outcome.error.violations] == [("missing", None)]
    assert str(outcome.error) == f"{source}: missing: no such file"
    assert outcome.quarantined is None
    assert not quarantine_dir(store).exists()
    assert store.manifest().revision == 0  # never written
    assert not source.exists()


def _check_stored_batch(store: BatchStore, outcome: IngestOutcome, source: Path, frame: pl.DataFrame) -> None:
    data = source.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    assert outcome.ok is True
    assert outcome.error is None
    assert outcome.quarantined is None
    record = outcome.accepted
    assert record is not None
    assert record.batch_id == sha256[:16]

    stored = batches_dir(store) / f"{record.batch_id}.parquet"
    assert listing(batches_dir(store)) == {stored.name}
    assert stored.stat().st_mode & 0o222 == 0
    typed = pl.read_parquet(stored)
    assert typed.height == ROWS
    assert typed.schema["tenure"] == pl.Float64
    assert typed.schema["plan"] == pl.String
    assert typed.schema["event_time"] == pl.Datetime("us")
    assert typed.schema["churned"] == pl.Int64
    assert typed["churned"].to_list() == frame["churned"].to_list()

    manifest = json.loads(store.manifest().to_json())
    assert manifest["model"] == "churn"
    assert manifest["features"] == FEATURES
    assert len(manifest["batches"]) == 1
    listed = manifest["batches"][0]
    assert listed["batch_id"] == record.batch_id
    assert listed["sha256"] == sha256
    assert listed["rows"] == ROWS
    assert listed["columns"] == frame.columns
    assert listed["time_min"] == str(frame["event_time"].min())
    assert listed["time_max"] == str(frame["event_time"].max())
    assert listed["source"] == str(source.absolute())
    ingested_at = datetime.fromisoformat(listed["ingested_at"])
    assert ingested_at.tzinfo is not None
    assert ingested_at.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - ingested_at).total_seconds()) < 60
    assert not quarantine_dir(store).exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_valid_batch_is_stored_read_only_and_listed(tmp_path: Path, suffix: str) -> None:
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    frame = good_frame(seed=3)
    source = tmp_path / f"good{suffix}"
    if suffix == ".csv":
        frame.write_csv(source)
    else:
        frame.write_parquet(source)
    before = source.read_bytes(), source.stat().st_mtime_ns

    outcome = ingest_file(store, binary_config(), source)

    _check_stored_batch(store, outcome, source, frame)
    assert (source.read_bytes(), source.stat().st_mtime_ns) == before


def test_stale_temporaries_from_killed_writer_are_cleared(tmp_path: Path) -> None:
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    config = binary_config()
    first = tmp_path / "first.csv"
    good_frame(seed=4).write_csv(first)
    earlier = ingest_accepted(store, config, first)
    stale_batch = batches_dir(store) / ".tmp-123-x.parquet"
    stale_batch.write_bytes(b"PAR1 half a batch")

    second = tmp_path / "second.parquet"
    good_frame(seed=5).write_parquet(second)
    later = ingest_accepted(store, config, second)

    assert not stale_batch.exists()
    assert listing(batches_dir(store)) == {f"{earlier.batch_id}.parquet", f"{later.batch_id}.parquet"}
    assert not [p for p in batches_dir(store).iterdir() if p.name.startswith(".tmp-")]
    manifest = json.loads(store.manifest().to_json())
    assert [b["batch_id"] for b in manifest["batches"]] == [earlier.batch_id, later.batch_id]
    assert [b["rows"] for b in manifest["batches"]] == [ROWS, ROWS]


def test_orphan_batch_file_from_crash_between_renames_is_rewritten(tmp_path: Path) -> None:
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    source = tmp_path / "batch.csv"
    good_frame(seed=6).write_csv(source)
    batch_id = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    orphan = batches_dir(store) / f"{batch_id}.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"partial")
    orphan.chmod(0o444)

    record = ingest_accepted(store, binary_config(), source)

    assert record.batch_id == batch_id
    assert manifest_ids(store) == [batch_id]
    assert pl.read_parquet(orphan).height == ROWS


def test_batch_lacking_pinned_features_names_each_and_keeps_pin(tmp_path: Path) -> None:
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    config = binary_config()
    first = tmp_path / "first.csv"
    good_frame(seed=7).write_csv(first)
    ingest_accepted(store, config, first)

    second = tmp_path / "second.csv"
    good_frame(seed=8).drop("f00", "region").write_csv(second)
    outcome = ingest_file(store, config, second)

    assert outcome.error is not None
    assert [(v.rule, v.column) for v in outcome.error.violations] == [
        ("missing_column", "region"),
        ("missing_column", "f00"),
    ]
    assert store.manifest().features == FEATURES


def test_fractional_binary_label_is_rejected(tmp_path: Path) -> None:
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    source = tmp_path / "fractional.parquet"
    frame = good_frame(seed=9).with_columns(pl.col("churned").cast(pl.Float64))
    with_values(frame, "churned", {0: 0.5, 1: 1.7}).write_parquet(source)

    outcome = ingest_file(store, binary_config(), source)

    assert outcome.error is not None
    assert [(v.rule, v.column) for v in outcome.error.violations] == [("unknown_class", "churned")]
