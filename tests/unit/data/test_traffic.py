"""Unlabelled traffic and late labels: observe, label, join by id; every bad input kept in quarantine."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from retrainer.config import ModelConfig, parse_project
from retrainer.cycle.plan import load_frames, plan_split
from retrainer.data.synth import demo_config, make_batch
from retrainer.data.traffic import JOINED, ModelData, join_labels, label_file, observe_file
from retrainer.storage import Storage

ID = "request_id"


def config_with(**sections: Any) -> ModelConfig:
    raw: dict[str, Any] = demo_config()
    raw["models"]["churn"].update(sections)
    return parse_project(raw, "test").model("churn")


CONFIG = config_with()


def day(rows: int, seed: int, first_id: int, shift: float = 0.0) -> pl.DataFrame:
    """A labelled day of churn rows, each with a customer id."""
    return make_batch(rows, seed=seed, day=seed, shift=shift).with_row_index(ID, offset=first_id)


def write(frame: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> ModelData:
    return ModelData.of(Storage.local(tmp_path / "data"), "churn")


def _reason(location: str | None) -> dict[str, Any]:
    assert location is not None
    quarantined = Path(location)
    assert quarantined.exists()
    reason: dict[str, Any] = json.loads(quarantined.with_name(quarantined.name + ".reason.json").read_text())
    return reason


def test_labels_join_their_inference_rows_into_a_labelled_batch_with_lineage_and_lag(
    data: ModelData, tmp_path: Path
) -> None:
    rows = day(1000, seed=1, first_id=0)
    seen = observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "traffic.parquet"))
    # Labels two days later, ids as text in a CSV, for 600 of the rows.
    labels = rows.select(pl.col(ID).cast(pl.String), "churned").head(600)
    kept = label_file(data, CONFIG, write(labels, tmp_path / "labels.csv"))

    report = join_labels(data, CONFIG)

    assert seen.accepted is not None and kept.accepted is not None
    batch = report.batch
    assert batch is not None and batch.origin == JOINED and report.joined_rows == 600 and report.pending_rows == 0
    assert batch.lineage["inference_batches"] == [seen.accepted.batch_id]
    assert batch.lineage["label_files"][0]["sha256"] == kept.accepted.sha256
    assert batch.lineage["rows_by_inference_batch"] == {seen.accepted.batch_id: 600}
    assert report.lag is not None and report.lag.median_seconds > 0
    joined = data.labelled.read([batch])
    expected = rows.head(600).with_columns(pl.col(ID).cast(pl.String))
    assert joined.sort(ID)[ID].to_list() == expected.sort(ID)[ID].to_list()
    assert joined.sort(ID)["churned"].to_list() == expected.sort(ID)["churned"].to_list()
    # A second join finds nothing new: a label joins once.
    assert join_labels(data, CONFIG).joined_rows == 0


def test_labels_that_come_before_their_rows_wait_and_join_when_the_rows_arrive(data: ModelData, tmp_path: Path) -> None:
    rows = day(500, seed=2, first_id=5000)
    label_file(data, CONFIG, write(rows.select(ID, "churned"), tmp_path / "early.parquet"))
    waiting = join_labels(data, CONFIG)
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "late-traffic.parquet"))

    joined = join_labels(data, CONFIG)

    assert waiting.batch is None and waiting.pending_rows == 500
    assert joined.joined_rows == 500 and joined.pending_rows == 0


def test_labels_waiting_past_the_limit_are_quarantined_naming_their_file_and_join_never(
    data: ModelData, tmp_path: Path
) -> None:
    rows = day(200, seed=3, first_id=9000)
    source = write(rows.select(ID, "churned"), tmp_path / "orphans.parquet")
    label_file(data, CONFIG, source)
    later = datetime.now(UTC) + timedelta(seconds=CONFIG.labels.pending_wait_seconds + 60)

    expired = join_labels(data, CONFIG, now=later)
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "too-late.parquet"))

    assert expired.pending_rows == 0 and len(expired.expired) == 1
    reason = _reason(expired.expired[0])
    assert reason["violations"][0]["rule"] == "unknown_id" and reason["violations"][0]["column"] == ID
    assert str(source) in reason["message"]
    assert pl.read_parquet(expired.expired[0]).height == 200
    assert join_labels(data, CONFIG).joined_rows == 0


def test_joined_rows_train_and_judge_like_any_labelled_batch(data: ModelData, tmp_path: Path) -> None:
    for n in range(3):
        rows = day(800, seed=10 + n, first_id=n * 1000)
        observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / f"t{n}.parquet"))
        label_file(data, CONFIG, write(rows.select(ID, "churned"), tmp_path / f"l{n}.parquet"))
        join_labels(data, CONFIG)

    split = plan_split(data.labelled.manifest(), CONFIG)
    frames = load_frames(data.labelled, split, CONFIG)

    assert len(split.training) == 2 and ID not in frames.spec.features
    assert frames.holdout.height == 400 and all(w.rows > 0 for w in frames.windows)


# --------------------------------------------------------------------------- bad input, each kept in quarantine


def _refused(outcome: Any) -> tuple[str, str | None]:
    assert outcome.accepted is None and outcome.error is not None
    reason = _reason(outcome.quarantined)
    violation = reason["violations"][0]
    return violation["rule"], violation["column"]


def test_an_inference_batch_carrying_the_target_is_refused(data: ModelData, tmp_path: Path) -> None:
    outcome = observe_file(data, CONFIG, write(day(100, seed=4, first_id=0), tmp_path / "labelled.parquet"))
    assert _refused(outcome) == ("target_in_inference", "churned")
    assert "retrainer ingest" in str(outcome.error)


def test_ids_repeated_in_an_inference_batch_or_seen_before_are_refused(data: ModelData, tmp_path: Path) -> None:
    rows = day(100, seed=5, first_id=0).drop("churned")
    repeated = pl.concat([rows, rows.head(3)])
    assert _refused(observe_file(data, CONFIG, write(repeated, tmp_path / "twice.parquet"))) == ("duplicate_id", ID)
    assert observe_file(data, CONFIG, write(rows, tmp_path / "first.parquet")).ok
    again = rows.head(10).with_columns(pl.col("tenure") + 1)  # other bytes, same ids
    assert _refused(observe_file(data, CONFIG, write(again, tmp_path / "again.parquet"))) == ("id_seen_before", ID)
    nulls = rows.with_columns(pl.when(pl.col(ID) < 2).then(None).otherwise(pl.col(ID) + 500).alias(ID))
    assert _refused(observe_file(data, CONFIG, write(nulls, tmp_path / "nulls.parquet"))) == ("id_missing", ID)


def test_refused_label_files_join_nothing(data: ModelData, tmp_path: Path) -> None:
    rows = day(300, seed=6, first_id=0)
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "traffic.parquet"))
    labels = rows.select(ID, "churned")
    duplicated = pl.concat([labels.head(5), labels.head(5)])
    outside = labels.head(20).with_columns(pl.lit(3).alias("churned"))
    no_id = labels.drop(ID)

    assert _refused(label_file(data, CONFIG, write(duplicated, tmp_path / "dup.csv"))) == ("duplicate_id", ID)
    assert _refused(label_file(data, CONFIG, write(outside, tmp_path / "classes.csv"))) == ("unknown_class", "churned")
    assert _refused(label_file(data, CONFIG, write(no_id, tmp_path / "noid.csv"))) == ("missing_column", ID)
    assert join_labels(data, CONFIG).joined_rows == 0


def test_a_second_label_for_an_id_keeps_the_first_and_quarantines_the_whole_file(
    data: ModelData, tmp_path: Path
) -> None:
    rows = day(300, seed=7, first_id=0)
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "traffic.parquet"))
    first = rows.select(ID, "churned").head(100)
    label_file(data, CONFIG, write(first, tmp_path / "first.parquet"))
    join_labels(data, CONFIG)
    # 50 new ids and 10 already labelled, with the opposite label.
    flipped = rows.select(ID, (1 - pl.col("churned")).alias("churned")).slice(90, 60)

    conflict = label_file(data, CONFIG, write(flipped, tmp_path / "second.parquet"))

    assert _refused(conflict) == ("label_conflict", ID)
    assert "10 label(s)" in str(conflict.error) and "the first label stands" in str(conflict.error)
    assert join_labels(data, CONFIG).joined_rows == 0  # none of the file's 50 new ids joined either
    joined = data.labelled.read(data.labelled.manifest().batches)
    by_id = joined.sort(pl.col(ID).cast(pl.Int64))
    assert joined.height == 100 and by_id["churned"].to_list() == first.sort(ID)["churned"].to_list()


def test_ids_are_spelled_alike_whatever_type_carried_them(data: ModelData, tmp_path: Path) -> None:
    rows = day(50, seed=8, first_id=100)
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "int-ids.parquet"))
    as_float = rows.select(pl.col(ID).cast(pl.Float64), "churned")  # 100.0, as pandas writes a nullable column
    label_file(data, CONFIG, write(as_float, tmp_path / "float-ids.parquet"))

    assert join_labels(data, CONFIG).joined_rows == 50


def test_a_model_without_an_id_column_cannot_observe(tmp_path: Path) -> None:
    raw: dict[str, Any] = demo_config()
    del raw["models"]["churn"]["id_column"]
    config = parse_project(raw, "test").model("churn")
    data = ModelData.of(Storage.local(tmp_path / "data"), "churn")
    outcome = observe_file(data, config, write(day(20, seed=9, first_id=0).drop("churned"), tmp_path / "t.parquet"))
    assert outcome.error is not None and "no_id_column" in str(outcome.error)


def test_a_label_sent_again_after_it_expired_waits_anew_and_joins(data: ModelData, tmp_path: Path) -> None:
    rows = day(100, seed=12, first_id=0)
    label_file(data, CONFIG, write(rows.select(ID, "churned"), tmp_path / "first.parquet"))
    later = datetime.now(UTC) + timedelta(seconds=CONFIG.labels.pending_wait_seconds + 60)
    assert len(join_labels(data, CONFIG, now=later).expired) == 1
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "traffic.parquet"))

    again = label_file(data, CONFIG, write(rows.select(ID, "churned").head(60), tmp_path / "again.parquet"))

    assert again.ok, again.error
    assert join_labels(data, CONFIG).joined_rows == 60


def test_csv_ids_are_read_as_written(data: ModelData, tmp_path: Path) -> None:
    rows = day(20, seed=13, first_id=7).drop("churned")
    observe_file(data, CONFIG, write(rows, tmp_path / "traffic.parquet"))  # ids 7 … 26, as integers
    padded = pl.DataFrame({ID: ["007", "8"], "churned": [1, 0]})

    label_file(data, CONFIG, write(padded, tmp_path / "labels.csv"))

    assert join_labels(data, CONFIG).joined_rows == 1  # "8" joins; "007" is not the id 7


def test_label_times_with_an_offset_are_read_in_utc_and_give_the_lag(data: ModelData, tmp_path: Path) -> None:
    rows = day(10, seed=14, first_id=0)
    observe_file(data, CONFIG, write(rows.drop("churned"), tmp_path / "traffic.parquet"))
    newest = rows["event_time"].max()
    assert isinstance(newest, datetime)
    known = (newest + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"
    labels = rows.select(ID, "churned").with_columns(pl.lit(known).alias("label_time"))

    kept = label_file(data, CONFIG, write(labels, tmp_path / "labels.csv"))
    report = join_labels(data, CONFIG)

    assert kept.ok, kept.error
    assert report.lag is not None
    assert report.lag.median_seconds > 0 and abs(report.lag.max_seconds - (2 * 86_400 - 7200)) < 86_400


def test_rows_join_even_when_a_feature_is_null_on_every_one_of_them(data: ModelData, tmp_path: Path) -> None:
    rows = day(200, seed=15, first_id=0)
    sparse = rows.with_columns(pl.when(pl.col(ID) < 3).then(None).otherwise(pl.col("f03")).alias("f03"))
    observe_file(data, CONFIG, write(sparse.drop("churned"), tmp_path / "traffic.parquet"))

    label_file(data, CONFIG, write(sparse.select(ID, "churned").head(3), tmp_path / "labels.parquet"))

    assert join_labels(data, CONFIG).joined_rows == 3


def test_an_id_column_pinned_as_a_feature_is_refused_by_name(tmp_path: Path) -> None:
    data = ModelData.of(Storage.local(tmp_path / "data"), "churn")
    raw: dict[str, Any] = demo_config()
    del raw["models"]["churn"]["id_column"]
    before = parse_project(raw, "test").model("churn")
    from retrainer.data.ingest import ingest_file

    assert ingest_file(data.labelled, before, write(day(50, seed=16, first_id=0), tmp_path / "old.parquet")).ok
    outcome = observe_file(data, CONFIG, write(day(50, seed=17, first_id=100).drop("churned"), tmp_path / "t.parquet"))

    assert _refused(outcome) == ("id_is_feature", ID)


def test_time_text_with_offsets_mixed_with_naive_times_is_read_in_utc(data: ModelData, tmp_path: Path) -> None:
    from retrainer.data.ingest import ingest_file

    rows = day(3, seed=18, first_id=0)
    times = ["2026-01-05T10:00:00", "2026-01-05T10:00:00Z", "2026-01-05T12:00:00+02:00"]
    labelled = rows.with_columns(pl.Series("event_time", times))
    traffic = labelled.drop("churned").with_columns((pl.col(ID) + 100).alias(ID))

    stored = ingest_file(data.labelled, CONFIG, write(labelled, tmp_path / "labelled.csv"))
    observed = observe_file(data, CONFIG, write(traffic, tmp_path / "traffic.csv"))

    assert stored.accepted is not None and observed.accepted is not None, (stored.error, observed.error)
    for store, batch in ((data.labelled, stored.accepted), (data.traffic, observed.accepted)):
        read = store.read([batch], ["event_time"])["event_time"].to_list()
        assert read == [datetime(2026, 1, 5, 10)] * 3
