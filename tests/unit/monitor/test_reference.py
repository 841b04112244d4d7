"""The champion's reference sample: rebuilt from its training batches when missing, read when stored (no Prefect)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from retrainer.data.store import BatchStore
from retrainer.errors import NoDataError, RegistryError
from retrainer.model.registry import VersionInfo
from retrainer.monitor.reference import (
    PREDICTION,
    REFERENCE_ARTIFACT,
    champion_reference,
    rebuild_reference,
    store_reference,
)
from retrainer.storage import Storage
from tests.unit.monitor.conftest import REFERENCE_ROWS, ROWS, Champion

KEY = ["tenure", "monthly_charges"]  # continuous draws: they identify a row


def _stored(champion: Champion, scratch: Path) -> pl.DataFrame:
    run_id = champion.version.run_id
    assert run_id is not None
    return pl.read_parquet(champion.registry.download(run_id, REFERENCE_ARTIFACT, scratch))


def _has_reference(champion: Champion) -> bool:
    assert champion.version.run_id is not None
    return champion.registry.has_artifact(champion.version.run_id, REFERENCE_ARTIFACT)


def test_a_champion_registered_without_a_reference_gets_one_from_its_training_batches(
    champion: Champion, tmp_path: Path
) -> None:
    assert not _has_reference(champion)
    sample = champion_reference(champion.store, champion.registry, champion.config, champion.version)

    assert sample.columns == [*champion.schema.features, "churned", PREDICTION]
    assert sample.height == REFERENCE_ROWS < 2 * ROWS  # a sample of the training rows, capped by the config
    training = champion.training_rows
    assert sample.join(training, on=KEY, how="anti").height == 0, "every row comes from the training batches"
    assert sample.select(KEY).is_duplicated().sum() == 0
    # The served champion predicts what the trained booster does.
    np.testing.assert_allclose(sample[PREDICTION].to_numpy(), champion.trained.predict(sample), rtol=0, atol=1e-12)
    assert _has_reference(champion)
    assert_frame_equal(_stored(champion, tmp_path), sample)


def test_rebuilding_is_deterministic(champion: Champion) -> None:
    first = rebuild_reference(champion.store, champion.registry, champion.config, champion.version)
    again = rebuild_reference(champion.store, champion.registry, champion.config, champion.version)
    assert_frame_equal(again, first)


def test_a_stored_reference_is_read_not_rebuilt(champion: Champion, tmp_path: Path) -> None:
    built = champion_reference(champion.store, champion.registry, champion.config, champion.version)
    empty = BatchStore(Storage.local(tmp_path / "no-data"), "churn")  # rebuilding from it would raise NoDataError
    read = champion_reference(empty, champion.registry, champion.config, champion.version)
    assert_frame_equal(read, built)


def test_the_sample_stored_on_the_run_is_the_one_read(champion: Champion) -> None:
    assert champion.version.run_id is not None
    written = champion.training_rows.head(10).with_columns(pl.lit(0.5).alias(PREDICTION))
    store_reference(champion.registry, champion.version.run_id, written)
    read = champion_reference(champion.store, champion.registry, champion.config, champion.version)
    assert_frame_equal(read, written)


def test_a_run_that_records_no_training_batches_cannot_be_rebuilt(champion: Champion) -> None:
    run_id = champion.registry.start_run("churn", "untagged", {}, {})
    untagged = VersionInfo("churn", "8", run_id, {})
    with pytest.raises(NoDataError) as raised:
        champion_reference(champion.store, champion.registry, champion.config, untagged)
    assert "v8 records no training batches" in str(raised.value)
    assert not champion.registry.has_artifact(run_id, REFERENCE_ARTIFACT)


def test_training_batches_no_longer_stored_are_named(champion: Champion) -> None:
    kept = champion.training[0].batch_id
    tags = {"retrainer.training_batches": f"{kept},gone-batch"}
    run_id = champion.registry.start_run("churn", "pruned", {}, tags)
    with pytest.raises(NoDataError) as raised:
        rebuild_reference(champion.store, champion.registry, champion.config, VersionInfo("churn", "9", run_id, {}))
    assert "no longer stored" in str(raised.value) and "'gone-batch'" in str(raised.value)
    assert kept not in str(raised.value)


def test_a_version_without_a_tracking_run_has_no_reference(champion: Champion) -> None:
    orphan = VersionInfo("churn", "7", None, {})
    with pytest.raises(RegistryError) as raised:
        champion_reference(champion.store, champion.registry, champion.config, orphan)
    assert "churn v7 has no tracking run" in str(raised.value)
