"""Evidently behind a small interface: the drift report of a window against the champion's reference.

The only module that imports Evidently (lazily: importing it takes seconds). Evidently works on
pandas, so frames are converted here, with every column's kind declared (integer columns with few
values would otherwise be taken for categories).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from retrainer.config import DriftConfig
from retrainer.config.drift_methods import ColumnKind
from retrainer.errors import ConfigError
from retrainer.monitor.fast_stats import ColumnDrift, ColumnKinds
from retrainer.monitor.snapshot import snapshot_columns

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class EvidentlyRun:
    """What one Evidently report found, and the report itself.

    Attributes:
        columns: Per-feature verdicts, in the order of the kinds given.
        prediction: Verdict on the prediction column, when one was given.
        html: The standalone HTML report.
        snapshot_json: The snapshot as Evidently serialises it (``snapshot.json()``).
        reference_rows: Rows of the reference frame the report was drawn on.
        current_rows: Rows of the current frame the report was drawn on.
    """

    columns: list[ColumnDrift]
    prediction: ColumnDrift | None
    html: str
    snapshot_json: str
    reference_rows: int
    current_rows: int


def run_evidently(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: ColumnKinds,
    config: DriftConfig,
    prediction: tuple[str, ColumnKind] | None = None,
) -> EvidentlyRun:
    """Run Evidently's data drift preset (plus value drift of the prediction column) on two frames.

    The prediction column gets Evidently's default method and threshold unless ``config`` names it in
    ``per_column_method`` / ``per_column_threshold`` (only retrainer does: users configure features).

    Args:
        reference: The champion's reference rows.
        current: The window's rows.
        kinds: Feature columns to check, by kind; each must have a valid value on both sides.
        config: Methods, thresholds and the dataset drift share (Evidently's parameter names).
        prediction: Name and kind of the prediction column, present in both frames, if any.

    Raises:
        ConfigError: a configured method is unknown to Evidently or does not apply to a column's kind.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    extra = [prediction] if prediction else []
    numerical = [*kinds.numerical, *(name for name, kind in extra if kind == "numerical")]
    categorical = [*kinds.categorical, *(name for name, kind in extra if kind == "categorical")]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    metrics: list[Any] = [
        DataDriftPreset(
            columns=kinds.all,
            drift_share=config.drift_share,
            method=config.method,
            num_method=config.num_method,
            cat_method=config.cat_method,
            per_column_method=config.per_column_method or None,
            threshold=config.threshold,
            per_column_threshold=config.per_column_threshold or None,
        )
    ]
    if prediction:
        name = prediction[0]
        metrics.append(
            ValueDrift(
                column=name,
                method=config.per_column_method.get(name),
                threshold=config.per_column_threshold.get(name),
            )
        )
    from evidently.legacy.calculations.stattests.registry import (
        StatTestInvalidFeatureTypeError,
        StatTestNotFoundError,
    )

    try:
        snapshot = Report(metrics, include_tests=True).run(
            Dataset.from_pandas(_pandas(current, numerical, categorical), data_definition=definition),
            Dataset.from_pandas(_pandas(reference, numerical, categorical), data_definition=definition),
        )
    except (StatTestNotFoundError, StatTestInvalidFeatureTypeError) as exc:
        raise ConfigError(f"drift settings: {exc}") from None
    verdicts = _column_verdicts(
        snapshot.dict(), {**dict.fromkeys(numerical, "numerical"), **dict.fromkeys(categorical, "categorical")}
    )
    return EvidentlyRun(
        columns=[verdicts[c] for c in kinds.all],
        prediction=verdicts.get(prediction[0]) if prediction else None,
        html=snapshot.get_html_str(as_iframe=False),
        snapshot_json=snapshot.json(),
        reference_rows=reference.height,
        current_rows=current.height,
    )


def _pandas(frame: pl.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    typed = frame.select(
        [pl.col(c).cast(pl.Float64) for c in numerical] + [pl.col(c).cast(pl.String) for c in categorical]
    )
    return typed.to_pandas()


def _column_verdicts(snapshot: dict[str, Any], kinds: dict[str, ColumnKind]) -> dict[str, ColumnDrift]:
    """Per-column verdicts from a snapshot, each method by its name rather than its display name."""
    names = _method_names()
    return {
        c.column: ColumnDrift(
            column=c.column,
            kind=kinds[c.column],
            method=names.get(c.method, c.method),
            score=c.score,
            threshold=c.threshold,
            drifted=c.drifted,
        )
        for c in snapshot_columns(snapshot)
    }


def _method_names() -> dict[str, str]:
    """Evidently's display name of each registered drift method mapped to the method's name."""
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest

    found = (getattr(stattests, name) for name in dir(stattests))
    return {test.display_name: test.name for test in found if isinstance(test, StatTest)}
