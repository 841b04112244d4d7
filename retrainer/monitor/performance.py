"""The labelled-performance rule: the champion's primary metric on a window against its holdout figure."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl

from retrainer.config import ModelConfig
from retrainer.config.metrics import orientation
from retrainer.data.contract import Schema
from retrainer.data.features import FeatureSpec, label_vector
from retrainer.judge.metrics import point_metric

# The champion and the champions it replaced, this many in all, set the performance baseline.
BASELINE_CHAMPIONS = 3


@dataclass(frozen=True)
class Performance:
    """The champion's primary metric on a labelled window against its holdout figure.

    ``change`` is sign-adjusted: negative means worse. ``degraded`` when it is below ``-tolerance``
    and the window has at least ``min_rows`` labelled rows (fewer are reported, never judged: the
    metric of a handful of rows is mostly noise).
    """

    metric: str
    window: float
    holdout: float | None
    change: float | None
    tolerance: float
    degraded: bool
    rows: int
    min_rows: int


def window_performance(
    config: ModelConfig,
    schema: Schema,
    current: pl.DataFrame,
    predictions: np.ndarray,
    holdout_figure: float | None,
) -> Performance | None:
    """The champion's primary metric on the window's labelled rows, judged against ``holdout_figure``.

    Args:
        config: The model's config (task, primary metric, ``drift.performance_*`` settings).
        schema: The model's schema.
        current: The window's rows; the target may be absent or partly null.
        predictions: The champion's raw predictions on ``current``, row for row.
        holdout_figure: The champion's primary metric on its own holdout; ``None`` reports the
            window's value without judging it.

    Returns:
        ``None`` when the window has no labelled row or the metric is undefined on them (e.g. AUC
        on one class); otherwise the figure, its change and the verdict.
    """
    if schema.target not in current.columns:
        return None
    labelled = current[schema.target].is_not_null().to_numpy()
    if not labelled.any():
        return None
    spec = FeatureSpec(config.task, schema.target, schema.features, schema.categorical, config.class_labels)
    metric = config.primary_metric
    labels = label_vector(current.filter(pl.Series(labelled)), spec)
    value = point_metric(config.task, metric, labels, np.asarray(predictions)[labelled])
    if not np.isfinite(value):
        return None
    change = orientation(metric) * (value - holdout_figure) if holdout_figure is not None else None
    drift, rows = config.drift, int(labelled.sum())
    degraded = change is not None and rows >= drift.performance_min_rows and change < -drift.performance_tolerance
    return Performance(
        metric, value, holdout_figure, change, drift.performance_tolerance, degraded, rows, drift.performance_min_rows
    )


def performance_baseline(figures: list[float | None], metric: str) -> float | None:
    """The figure a champion's labelled performance is judged against: the best of ``figures``.

    ``figures`` are the holdout figures of the champion and of the champions before it (see
    :data:`BASELINE_CHAMPIONS`), newest first. The best of them, not the champion's own, so a
    mediocre champion promoted after a change cannot lower the bar it is held to: it keeps looking
    degraded, and keeps being challenged, until a challenger reaches the earlier level or the
    earlier champions age out of the list.
    """
    known = [figure for figure in figures if figure is not None and np.isfinite(figure)]
    if not known:
        return None
    return max(known, key=lambda figure: orientation(metric) * figure)


def holdout_figure(version_tags: dict[str, str], metric: str) -> float | None:
    """The version's own holdout value of ``metric`` when it was judged, from its decision tags.

    Returns:
        The ``challenger`` value recorded under ``retrainer.metrics`` for ``metric``; ``None`` when
        the version was never judged or the metric was not recorded.
    """
    recorded = version_tags.get("retrainer.metrics")
    if not recorded:
        return None
    value = json.loads(recorded).get(metric, {}).get("challenger")
    return float(value) if value is not None else None
