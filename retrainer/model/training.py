"""Training a LightGBM challenger: with the stored serving code, the only importer of LightGBM (lazily).

The ownership is an import-linter contract in ``pyproject.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from retrainer.config import LightGBMParams
from retrainer.data.features import FeatureSpec, feature_matrix, label_vector

if TYPE_CHECKING:
    import lightgbm

_OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}


@dataclass
class TrainedModel:
    """A booster with the spec it was trained under.

    Attributes:
        booster: The fitted ``lightgbm.Booster`` (truncated to the best iteration).
        spec: Feature encoding and task.
        best_iteration: Boosting rounds kept after early stopping.
        params: The LightGBM parameters actually used.
    """

    booster: lightgbm.Booster
    spec: FeatureSpec
    best_iteration: int
    params: dict[str, Any] = field(default_factory=dict)

    def predict(self, frame: pl.DataFrame) -> np.ndarray:
        """Positive-class probability (binary), class probabilities (multiclass) or values (on every core)."""
        return np.asarray(self.booster.predict(feature_matrix(frame, self.spec), num_threads=0))

    def save(self, path: Path) -> None:
        """Write the booster as LightGBM's text model."""
        self.booster.save_model(str(path))


def lightgbm_params(spec: FeatureSpec, params: LightGBMParams) -> dict[str, Any]:
    """Translate our typed parameters into LightGBM's dictionary, fixing every seed."""
    out: dict[str, Any] = {
        "objective": _OBJECTIVES[spec.task],
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "min_data_in_leaf": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "max_bin": params.max_bin,
        "num_threads": params.num_threads,
        "seed": params.seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    if spec.task == "multiclass":
        out["num_class"] = len(spec.classes)
    return out


def train(
    train_frame: pl.DataFrame, valid_frame: pl.DataFrame, spec: FeatureSpec, params: LightGBMParams
) -> TrainedModel:
    """Fit a booster on ``train_frame`` with early stopping on ``valid_frame``.

    Same frames and parameters give the same model (all seeds fixed, deterministic mode).
    """
    import lightgbm

    config = lightgbm_params(spec, params)
    train_set = _dataset(lightgbm, train_frame, spec)
    valid_set = _dataset(lightgbm, valid_frame, spec, reference=train_set)
    booster = lightgbm.train(
        config,
        train_set,
        num_boost_round=params.n_estimators,
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(params.early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or params.n_estimators
    booster.free_dataset()
    return TrainedModel(booster=booster, spec=spec, best_iteration=best, params=config)


def refit(frame: pl.DataFrame, spec: FeatureSpec, params: LightGBMParams, rounds: int) -> TrainedModel:
    """Fit a booster on ``frame`` for exactly ``rounds`` boosting rounds, without early stopping.

    The recipe of a judged model (its parameters and best iteration) applied to more rows. Same
    frame, parameters and rounds give the same model.
    """
    import lightgbm

    config = lightgbm_params(spec, params)
    booster = lightgbm.train(config, _dataset(lightgbm, frame, spec), num_boost_round=max(1, rounds))
    booster.free_dataset()
    return TrainedModel(booster=booster, spec=spec, best_iteration=max(1, rounds), params=config)


def _dataset(lgb: Any, frame: pl.DataFrame, spec: FeatureSpec, reference: Any = None) -> Any:
    return lgb.Dataset(
        feature_matrix(frame, spec),
        label=label_vector(frame, spec),
        feature_name=spec.features,
        categorical_feature=spec.categorical_indices,
        reference=reference,
        free_raw_data=True,
    )
