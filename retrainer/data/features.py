"""Turning typed batches into model inputs, on the polars/Arrow path.

The same encoding is implemented for pandas in :mod:`retrainer.model.registry.serving` (which must not import
retrainer); a test proves the two agree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from retrainer.config import ClassLabel, ModelConfig
from retrainer.config.metrics import TaskKind
from retrainer.data.contract import Schema, level_text


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to turn raw columns into the model's numeric matrix, and labels into indices.

    Categorical level ``i`` encodes as ``i``; an unseen value as ``len(levels)`` (the shared
    "unknown" level); a null as NaN (missing).
    """

    task: TaskKind
    target: str
    features: list[str]
    categorical: dict[str, list[str]]
    classes: list[ClassLabel]

    @classmethod
    def build(cls, config: ModelConfig, schema: Schema) -> FeatureSpec:
        """Combine a model's config with its resolved schema."""
        return cls(config.task, config.target, schema.features, schema.categorical, config.class_labels)

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of categorical columns in the feature matrix."""
        return [i for i, name in enumerate(self.features) if name in self.categorical]

    def to_json(self) -> str:
        """Serialise for the model artifact."""
        return json.dumps(asdict(self), indent=2)


def feature_matrix(frame: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Return the float64 matrix (rows × features) the booster is trained and scored on."""
    expressions = [_encode(name, spec.categorical.get(name), frame.schema[name]) for name in spec.features]
    return frame.select(expressions).to_numpy().astype(np.float64, copy=False)


def _encode(name: str, levels: list[str] | None, dtype: pl.DataType) -> pl.Expr:
    column = pl.col(name)
    if levels is None:
        return column.cast(pl.Float64)
    codes = level_text(name, dtype).replace_strict(
        {level: float(i) for i, level in enumerate(levels)}, default=float(len(levels)), return_dtype=pl.Float64
    )
    return pl.when(level_text(name, dtype).is_null()).then(None).otherwise(codes).alias(name)


def label_vector(frame: pl.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Return labels as float values (regression) or class indices (classification)."""
    target = frame[spec.target]
    if spec.task == "regression":
        return target.cast(pl.Float64).to_numpy()
    mapping = {str(label): i for i, label in enumerate(spec.classes)}
    return target.cast(pl.String).replace_strict(mapping, return_dtype=pl.Int64).to_numpy()
