"""A champion registered the way an outside tool would: real LightGBM, real MLflow on SQLite, no reference.

Shared by the tests of the monitor's core pieces that read the store and the registry (no Prefect).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from retrainer.config import ModelConfig
from retrainer.data.contract import Schema, schema_for
from retrainer.data.features import FeatureSpec
from retrainer.data.ingest import ingest_file
from retrainer.data.store import BatchRecord, BatchStore
from retrainer.data.synth import demo_config, make_batch
from retrainer.model.registry import Registry, VersionInfo
from retrainer.model.training import TrainedModel, train
from tests.conftest import Project

ROWS = 2000
REFERENCE_ROWS = 3000  # fewer than the two training batches hold: the reference is a sample
HOLDOUT_AUC = 0.99  # recorded as the champion's own holdout figure: far above what it reaches


@dataclass(frozen=True)
class Champion:
    """A registered champion, the data it was trained on, and a newer, shifted batch."""

    config: ModelConfig
    schema: Schema
    store: BatchStore
    registry: Registry
    trained: TrainedModel
    version: VersionInfo
    training: list[BatchRecord]
    newer: BatchRecord

    @property
    def training_rows(self) -> pl.DataFrame:
        """Features and target of the training batches, in recorded order."""
        return self.store.read(self.training, [*self.schema.features, self.schema.target])


def _ingest(project: Project, store: BatchStore, config: ModelConfig, name: str, frame: pl.DataFrame) -> BatchRecord:
    outcome = ingest_file(store, config, Path(project.file(name, frame)))
    assert outcome.accepted is not None, outcome.error
    return outcome.accepted


@pytest.fixture
def champion(project: Project) -> Champion:
    """Two batches, a champion trained on them and registered with lineage tags only, then a shifted batch."""
    raw = demo_config()
    raw["models"]["churn"]["drift"]["reference_rows"] = REFERENCE_ROWS  # type: ignore[index]
    project.write_config(raw)
    ws = project.workspace()
    config, store, registry = ws.model("churn"), ws.store("churn"), ws.registry
    training = [_ingest(project, store, config, f"d{day}", make_batch(ROWS, seed=day, day=day)) for day in (0, 1)]
    newer = _ingest(project, store, config, "d2", make_batch(ROWS, seed=2, day=2, shift=0.8))
    schema = schema_for(config, [], store.manifest().features)
    rows = store.read(training, [*schema.features, schema.target])
    cut = int(rows.height * 0.9)
    trained = train(rows.head(cut), rows.slice(cut), FeatureSpec.build(config, schema), config.lightgbm)
    tags = {"retrainer.training_batches": ",".join(b.batch_id for b in training)}  # the lineage tag retrain writes
    run_id = registry.start_run("churn", "registered-elsewhere", {}, tags)
    registered = registry.register("churn", run_id, trained, rows.head(5).to_pandas())
    metrics = {"roc_auc": {"challenger": HOLDOUT_AUC, "champion": None}}
    registry.tag_version("churn", registered.version, {"retrainer.metrics": json.dumps(metrics)})
    version = registry.version("churn", registered.version)
    return Champion(config, schema, store, registry, trained, version, training, newer)
