"""The window of a check read from a real store and predicted by a registered champion (no Prefect)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from retrainer.config import DriftWindow
from retrainer.data.store import BatchRecord, utc_now
from retrainer.errors import DataError
from retrainer.monitor.incidents import CheckRecord, assess
from retrainer.monitor.window import Window, next_window, predict_window, read_window
from tests.conftest import Project
from tests.unit.monitor.conftest import ROWS, Champion


def _store_unchecked(champion: Champion, batch_id: str, frame: pl.DataFrame) -> BatchRecord:
    """Put ``frame`` in the store as it is, past the ingest contract (a batch an older version accepted)."""
    record = BatchRecord(batch_id, f"sha-{batch_id}", frame.height, frame.columns, None, None, batch_id, utc_now())
    with champion.store.writing() as manifest:
        champion.store.accept(manifest, frame, record, champion.schema.features)
    return record


def test_the_window_reads_features_and_target_oldest_batch_first(champion: Champion) -> None:
    window = Window([champion.training[1], champion.newer])
    rows = read_window(champion.store, window, champion.schema)
    assert rows.columns == [*champion.schema.features, "churned"]
    assert "event_time" not in rows.columns
    assert rows.height == 2 * ROWS
    older = champion.store.read([champion.training[1]], rows.columns)
    assert_frame_equal(rows.head(ROWS), older)


def test_a_batch_stored_without_the_target_reads_as_unlabelled_rows(champion: Champion) -> None:
    unlabelled = champion.store.read([champion.newer]).drop("churned")
    stored = _store_unchecked(champion, "no-label", unlabelled)
    mixed = read_window(champion.store, Window([champion.training[0], stored]), champion.schema)
    assert mixed.height == 2 * ROWS
    assert mixed["churned"].head(ROWS).null_count() == 0
    assert mixed["churned"].tail(ROWS).null_count() == ROWS
    alone = read_window(champion.store, Window([stored]), champion.schema)
    assert alone.columns == champion.schema.features


def test_the_champion_predicts_the_window_as_trained(champion: Champion) -> None:
    window = Window([champion.newer])
    read = predict_window(champion.store, champion.registry, champion.version, window, champion.schema)
    assert_frame_equal(read.rows, read_window(champion.store, window, champion.schema))
    assert read.predictions.shape == (ROWS,)
    np.testing.assert_allclose(read.predictions, champion.trained.predict(read.rows), rtol=0, atol=1e-12)


def test_a_window_without_a_feature_is_refused_before_predicting_and_names_it(champion: Champion) -> None:
    partial = champion.store.read([champion.newer]).drop("plan", "age")
    stored = _store_unchecked(champion, "partial", partial)
    with pytest.raises(DataError) as raised:
        predict_window(champion.store, champion.registry, champion.version, Window([stored]), champion.schema)
    assert {(v.rule, v.column) for v in raised.value.violations} == {
        ("missing_column", "plan"),
        ("missing_column", "age"),
    }
    assert "window partial" in str(raised.value)


def test_the_next_window_starts_after_the_last_checked_batch(champion: Champion, project: Project) -> None:
    book = project.workspace().incidents("churn")
    since = DriftWindow(mode="since_last_check", batches=2)
    ids = [b.batch_id for b in [*champion.training, champion.newer]]
    first = next_window(champion.store, book, since)
    assert first is not None and first.batch_ids == ids[1:]

    checked = CheckRecord("check-1", datetime.now(UTC), "1", ids[:2], False, 0.0)
    book.update(lambda state: assess(state, checked, champion.config.drift.incident, datetime.now(UTC)))
    after = next_window(champion.store, book, since)
    assert after is not None and after.batch_ids == ids[2:]

    checked = CheckRecord("check-2", datetime.now(UTC), "1", ids[2:], False, 0.0)
    book.update(lambda state: assess(state, checked, champion.config.drift.incident, datetime.now(UTC)))
    assert next_window(champion.store, book, since) is None
    named = next_window(champion.store, book, since, batch_id=ids[0])
    assert named is not None and named.batch_ids == ids[:1]
