"""MLflow pyfunc model that serves a retrainer-trained LightGBM booster from raw columns.

MLflow stores this file with each model ("models from code") and runs it on load, so it imports
only numpy, pandas, lightgbm and mlflow, never retrainer: a user loads
``models:/NAME@champion`` with plain ``mlflow.pyfunc`` and predicts on a pandas frame of raw columns.

Output: binary, the positive class probability; multiclass, one probability column per class;
regression, the prediction.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel


class RetrainerLightGBM(PythonModel):
    """Encodes raw columns as at training time, then calls the booster."""

    def load_context(self, context: Any) -> None:
        """Load the booster and the feature spec saved beside it."""
        import lightgbm

        with open(context.artifacts["spec"], encoding="utf-8") as handle:
            self.spec = json.load(handle)
        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """Predict from a pandas frame holding (at least) the feature columns."""
        matrix = encode_frame(model_input, self.spec)
        # Rows are predicted independently, so every core gives the same numbers faster; the
        # num_threads saved with the model is a training choice.
        raw = self.booster.predict(matrix, num_threads=0)
        if self.spec["task"] == "multiclass":
            return pd.DataFrame(raw, columns=[str(c) for c in self.spec["classes"]])
        return raw


def encode_frame(frame: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """Encode raw columns: numbers as float, category levels as indices, unseen as the unknown level."""
    columns = []
    for name in spec["features"]:
        levels = spec["categorical"].get(name)
        if levels is None:
            columns.append(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64))
            continue
        values = frame[name]
        codes = pd.Categorical(values.astype(str), categories=levels).codes.astype(np.float64)
        codes[codes < 0] = float(len(levels))
        codes[values.isna().to_numpy()] = np.nan
        columns.append(codes)
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


mlflow.models.set_model(RetrainerLightGBM())
