"""The champion's reference sample: what it holds, where it is stored, and rebuilding a missing one.

Every registered version carries a *reference sample* on its tracking run
(:data:`REFERENCE_ARTIFACT`): a seeded sample of its own training rows (at most
``drift.reference_rows``) with its predictions on them in the column :data:`PREDICTION`. A check
compares the newest batches with the reference of the current champion, so promotions and
rollbacks re-baseline monitoring at the moment the champion moves.

Versions retrainer registers store their sample when registered; a champion registered otherwise
(or before drift monitoring) gets one on its first check, rebuilt from the training batches its
run records (:func:`champion_reference`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrainer.config import DriftConfig, ModelConfig
from retrainer.config.drift_methods import ColumnKind
from retrainer.config.metrics import TaskKind
from retrainer.data.contract import schema_for
from retrainer.data.features import FeatureSpec
from retrainer.data.store import BatchRecord, BatchStore, Manifest, split_latest
from retrainer.errors import NoDataError, RegistryError
from retrainer.model.registry import Registry, VersionInfo

PREDICTION = "champion_prediction"
REFERENCE_ARTIFACT = "reference/reference.parquet"
TRAINING_BATCHES_TAG = "retrainer.training_batches"
HOLDOUT_BATCHES_TAG = "retrainer.holdout_batches"
HOLDOUT_SHARE_TAG = "retrainer.holdout_share"


def prediction_kind(task: TaskKind) -> ColumnKind:
    """Multiclass predictions are compared as predicted labels; the others as numbers."""
    return "categorical" if task == "multiclass" else "numerical"


def prediction_column(task: TaskKind, classes: list[Any], raw: np.ndarray) -> pl.Series:
    """The prediction column drift is measured on: probability/value, or the predicted label.

    Args:
        task: The model's task.
        classes: The class labels, in the order of ``raw``'s columns (multiclass only).
        raw: Raw predictions, one row (multiclass: one row of probabilities) per frame row.

    Returns:
        A series named :data:`PREDICTION`: strings for multiclass, float64 otherwise.
    """
    if task == "multiclass":
        labels = np.asarray([str(c) for c in classes])[np.asarray(raw).argmax(axis=1)]
        return pl.Series(PREDICTION, labels, dtype=pl.String)
    return pl.Series(PREDICTION, np.asarray(raw, dtype=np.float64).reshape(-1))


def served_predictions(
    registry: Registry, model: str, version: str, rows: pl.DataFrame, features: list[str]
) -> np.ndarray:
    """A registered version's raw predictions on ``rows``, as its stored model serves them.

    Args:
        registry: The registry holding the version.
        model: Model name.
        version: The version that predicts.
        rows: The rows; only ``features`` are passed to the model.
        features: The model's feature columns.

    Raises:
        RegistryError: the version cannot be loaded.
    """
    return registry.predict(model, version, rows.select(features).to_pandas())


def reference_sample(training: pl.DataFrame, spec: FeatureSpec, raw_predictions: np.ndarray) -> pl.DataFrame:
    """The reference rows of a version: features and target plus the version's own predictions.

    Args:
        training: The sampled training rows, as returned by :func:`reference_rows`.
        spec: The version's feature spec.
        raw_predictions: The version's predictions on ``training``, row for row.
    """
    kept = training.select([*spec.features, spec.target])
    return kept.with_columns(prediction_column(spec.task, spec.classes, raw_predictions))


def reference_rows(training: pl.DataFrame, drift: DriftConfig) -> pl.DataFrame:
    """A seeded sample of at most ``drift.reference_rows`` training rows (all rows when fewer)."""
    return seeded_sample(training, drift.reference_rows, drift.reference_seed)


def seeded_sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """``frame`` itself when it has at most ``rows`` rows, else ``rows`` of them drawn with ``seed``."""
    return frame if frame.height <= rows else frame.sample(n=rows, seed=seed)


@dataclass(frozen=True)
class TrainedOn:
    """The rows a version trained on, from its run's lineage tags.

    Attributes:
        batches: Whole batches it trained on, in recorded order.
        holdout_batches: Its holdout batches, whose earlier rows it trained on when ``holdout_share`` < 1.
        holdout_share: The latest share of the holdout batches' rows it was judged on.
    """

    batches: list[BatchRecord]
    holdout_batches: list[BatchRecord]
    holdout_share: float

    def rows(self, store: BatchStore, columns: list[str], time_column: str | None) -> pl.DataFrame:
        """Read those rows: the whole batches, then the holdout batches' earlier rows."""
        frames = [store.read(self.batches, columns)] if self.batches else []
        if self.holdout_share < 1:
            earlier, _ = split_latest(store.read(self.holdout_batches, columns), self.holdout_share, time_column)
            frames.append(earlier)
        return pl.concat(frames, how="diagonal_relaxed")


def trained_on(manifest: Manifest, run_tags: dict[str, str], version: str) -> TrainedOn:
    """The accepted batches a version was trained on, from its run's lineage tags.

    Used to rebuild the reference of a champion registered without one.

    Raises:
        NoDataError: the run records no training rows, or some of its batches are no longer in the store.
    """
    wanted = [b for b in run_tags.get(TRAINING_BATCHES_TAG, "").split(",") if b]
    share = float(run_tags.get(HOLDOUT_SHARE_TAG) or 1.0)
    held = [b for b in run_tags.get(HOLDOUT_BATCHES_TAG, "").split(",") if b] if share < 1 else []
    if not wanted and not held:
        raise NoDataError(manifest.model, f"v{version} records no training batches: cannot build its reference")
    found = {b.batch_id: b for b in manifest.batches}
    missing = [b for b in [*wanted, *held] if b not in found]
    if missing:
        raise NoDataError(manifest.model, f"v{version} was trained on batches no longer stored: {missing}")
    return TrainedOn([found[b] for b in wanted], [found[b] for b in held], share)


def store_reference(registry: Registry, run_id: str, sample: pl.DataFrame) -> None:
    """Write a reference sample as Parquet and store it on the version's run at :data:`REFERENCE_ARTIFACT`.

    Raises:
        RegistryError: the run does not take the file.
    """
    folder, name = REFERENCE_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch, name)
        sample.write_parquet(local)
        registry.log_file(run_id, local, folder)


def champion_reference(
    store: BatchStore, registry: Registry, config: ModelConfig, champion: VersionInfo
) -> pl.DataFrame:
    """The champion's reference sample: the one on its run, else one rebuilt and stored there.

    Args:
        store: The model's batch store (read only when the sample must be rebuilt).
        registry: The registry holding the champion.
        config: The model's config.
        champion: The version checked against.

    Raises:
        RegistryError: the champion has no tracking run, or the registry fails.
        NoDataError: the sample must be rebuilt and the run's training batches are unknown or gone.
    """
    run_id = _run_of(champion)
    if not registry.has_artifact(run_id, REFERENCE_ARTIFACT):
        return rebuild_reference(store, registry, config, champion)
    with tempfile.TemporaryDirectory() as scratch:
        return pl.read_parquet(registry.download(run_id, REFERENCE_ARTIFACT, Path(scratch)))


def rebuild_reference(
    store: BatchStore, registry: Registry, config: ModelConfig, champion: VersionInfo
) -> pl.DataFrame:
    """Build a version's reference from its recorded training rows, predicted as served; store it on its run.

    The rows are the seeded sample :func:`reference_rows` draws from the recorded training batches
    (and the earlier rows of its holdout batches, when they trained it; see :func:`trained_on`),
    read in the recorded order: the same population as a registration's own sample, not the same
    rows (a registration samples its training rows after the holdout and validation split).

    Args:
        store: The model's batch store.
        registry: The registry holding ``champion``.
        config: The model's config.
        champion: The version whose reference is rebuilt (overwritten when one exists).

    Returns:
        The stored sample: features, target and :data:`PREDICTION`.

    Raises:
        RegistryError: the version has no tracking run, or the registry fails.
        NoDataError: the run records no training batches, or some are no longer in the store.
    """
    run_id = _run_of(champion)
    manifest = store.manifest()
    source = trained_on(manifest, registry.run_details(run_id)[0], champion.version)
    schema = schema_for(config, [], manifest.features)
    timed = [config.time_column] if config.time_column else []
    columns = list(dict.fromkeys([*schema.features, schema.target, *timed]))
    rows = reference_rows(source.rows(store, columns, config.time_column), config.drift)
    predictions = served_predictions(registry, champion.model, champion.version, rows, schema.features)
    sample = reference_sample(rows, FeatureSpec.build(config, schema), predictions)
    store_reference(registry, run_id, sample)
    return sample


def _run_of(version: VersionInfo) -> str:
    if version.run_id is None:
        raise RegistryError(f"{version.model} v{version.version} has no tracking run: no reference sample")
    return version.run_id
