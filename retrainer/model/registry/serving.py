"""MLflow pyfunc model that serves a retrainer-trained LightGBM booster from raw columns.

MLflow stores this file with each model ("models from code") and runs it on load, so it imports
only numpy, pandas, lightgbm and mlflow, never retrainer: a user loads
``models:/NAME@champion`` with plain ``mlflow.pyfunc`` and predicts on a pandas frame of raw columns.

The serving contract (held by ``tests/unit/model/test_serving_contract.py``):

- a numeric feature may arrive as any integer or unsigned integer, float32/float64, pandas nullable
  ``Int*``/``Float*``/``boolean`` (missing values allowed), bool, or text holding a number;
- a categorical feature may arrive as text, a pandas ``Categorical`` (any category order or
  superset), bool or numbers, each value spelled as the data contract spells it at ingest
  (``retrainer.data.contract.level_text``): bools ``true``/``false``, a whole float as its integer
  (``1.0`` is level ``1``), text as it is; a value the model never saw is the shared "unknown" level;
- a missing value is missing whatever carried it (``None``, ``NaN``, ``pd.NA``);
- extra columns are ignored;
- the same values give the same predictions whatever dtype carried them;
- a missing feature column, or a numeric value that is not a number (free text, a list, a date,
  time or duration, a complex number), is refused
  with an error naming the column and the rule, never turned into a silent prediction.

Output: binary, the positive class probability; multiclass, one probability column per class;
regression, the prediction.
"""

from __future__ import annotations

import datetime
import json
from typing import Any, NoReturn

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel

_EXAMPLES = 3
# Floats below this magnitude hold whole numbers exactly (the training path's bound, too).
_EXACT_INTEGERS = 2**53
_NOT_NUMBERS = (
    complex,
    np.complexfloating,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    np.datetime64,
    np.timedelta64,
)


class RetrainerLightGBM(PythonModel):
    """Encodes raw columns as at training time, then calls the booster."""

    def load_context(self, context: Any) -> None:
        """Load the booster and the feature spec saved beside it."""
        import lightgbm

        with open(context.artifacts["spec"], encoding="utf-8") as handle:
            self.spec = json.load(handle)
        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """Predict from a pandas frame (or anything ``pd.DataFrame`` takes) holding the feature columns.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` naming the column and rule of a refused input.
        """
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        matrix = encode_frame(frame, self.spec)
        # Rows are predicted independently, so every core gives the same numbers faster; the
        # num_threads saved with the model is a training choice.
        raw = self.booster.predict(matrix, num_threads=0)
        if self.spec["task"] == "multiclass":
            return pd.DataFrame(raw, columns=[str(c) for c in self.spec["classes"]])
        return raw


def encode_frame(frame: pd.DataFrame, spec: dict[str, Any]) -> np.ndarray:
    """Encode raw columns: numbers as float, category levels as indices, unseen as the unknown level.

    Raises:
        MlflowException: a feature column is absent, or a numeric one holds values that are not numbers.
    """
    absent = [name for name in spec["features"] if name not in frame.columns]
    if absent:
        _refuse(f"missing feature column(s) {absent} (rule missing_column)")
    columns = []
    for name in spec["features"]:
        levels = spec["categorical"].get(name)
        values = frame[name]
        columns.append(_numbers(values, name) if levels is None else _level_codes(values, levels))
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def _numbers(values: pd.Series, name: str) -> np.ndarray:
    """A numeric feature as float64, missing values as NaN."""
    if pd.api.types.is_complex_dtype(values.dtype) or values.dtype.kind in "mM":
        _refuse(f"column '{name}': {values.dtype} values are not numbers (rule not_castable)")
    if isinstance(values.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)
    ):
        return _numbers_from_objects(values.astype(object), name)
    numbers: np.ndarray = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers


def _numbers_from_objects(values: pd.Series, name: str) -> np.ndarray:
    missing = values.isna().to_numpy()
    present = values[~missing]
    numbers = np.full(len(values), np.nan)
    parsed = pd.to_numeric(present.map(_scalar_number), errors="coerce").to_numpy(dtype=np.float64)
    refused = np.isnan(parsed) & ~present.map(_is_nan_number).to_numpy(dtype=bool)
    if refused.any():
        shown = ", ".join(repr(v) for v in pd.unique(present[refused].astype(str))[:_EXAMPLES])
        _refuse(f"column '{name}': {int(refused.sum())} value(s) are not numbers (rule not_castable), e.g. {shown}")
    numbers[~missing] = parsed
    return numbers


def _scalar_number(value: Any) -> Any:
    """Booleans as 0/1; times, complex numbers and anything not scalar as a value ``to_numeric`` refuses."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, _NOT_NUMBERS) or np.ndim(value) != 0:
        return None
    return value


def _is_nan_number(value: Any) -> bool:
    """True for a value that is itself a NaN number (``float('nan')``, ``"NaN"``), not an unreadable one."""
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return str(value).strip().lower() == "nan"


def _level_codes(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Level ``i`` as ``i``, an unseen value as ``len(levels)``, a missing one as NaN."""
    index = {level: float(i) for i, level in enumerate(levels)}
    objects = values.astype(object)
    missing = objects.isna().to_numpy()
    lookup = {v: index.get(_level_text(v), float(len(levels))) for v in pd.unique(objects[~missing])}
    codes: np.ndarray = objects.map(lookup).to_numpy(dtype=np.float64, na_value=np.nan)
    codes[missing] = np.nan
    return codes


def _level_text(value: Any) -> str:
    """A value's level, spelled as the training path spells it: ``true``/``false``, ``1`` for ``1.0``."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer() and abs(float(value)) < _EXACT_INTEGERS:
        return str(int(value))
    return str(value)


def _refuse(message: str) -> NoReturn:
    raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


mlflow.models.set_model(RetrainerLightGBM())
