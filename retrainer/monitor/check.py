"""The drift check: a window's rows and the champion's predictions on them against its reference.

Owns the check's typed summary (:class:`DriftCheck`), the verdict rules, the check of a stored
window against the champion (:func:`check_champion`) and the metrics its MLflow monitoring run
records (:func:`check_metrics`). The reference sample is :mod:`~retrainer.monitor.reference`'s,
the window :mod:`~retrainer.monitor.window`'s, the labelled-performance rule
:mod:`~retrainer.monitor.performance`'s and the verdict opening the report's page
:mod:`~retrainer.monitor.page`'s.

Verdicts per column:

* a feature with no value in the window (or in the reference) has drifted (rule ``all_null``);
* a categorical feature with values the reference never had has drifted (``unseen_categories``),
  whatever its score;
* every other feature gets Evidently's method and threshold; when either side has more than
  ``drift.fast_above`` rows and every method is a distance the fast path reproduces, the scores
  are computed in polars on the full frames (``retrainer.monitor.fast_stats``) and Evidently only draws the
  HTML report, on a seeded sample of ``drift.report_rows`` rows per side and for the
  ``drift.report_columns`` most drifted features (Evidently's cost is mostly per column: one set
  of plots each). Otherwise Evidently's
  verdicts are used, on at most ``drift.fast_above`` sampled rows per side.

The dataset drifts when the share of drifted features is at least ``drift.drift_share``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from retrainer import events
from retrainer.config import DriftConfig, ModelConfig
from retrainer.config.drift_methods import ColumnKind
from retrainer.data.contract import Schema, schema_for
from retrainer.data.store import BatchStore
from retrainer.errors import RegistryError, TransientRegistryError
from retrainer.model.history import History
from retrainer.model.registry import Registry, VersionInfo
from retrainer.monitor.evidently import EvidentlyRun, run_evidently
from retrainer.monitor.fast_stats import (
    ColumnDrift,
    ColumnKinds,
    configured_threshold,
    dataset_verdict,
    fast_drift,
    fast_path_applies,
)
from retrainer.monitor.incidents import CheckRecord
from retrainer.monitor.page import opened_report
from retrainer.monitor.performance import Performance, holdout_figure, performance_baseline, window_performance
from retrainer.monitor.reference import PREDICTION, prediction_column, prediction_kind, seeded_sample
from retrainer.monitor.window import Window, predict_window, require_features

Engine = Literal["polars", "evidently"]


@dataclass(frozen=True)
class DriftCheck:
    """The typed summary of one check."""

    model: str
    check_id: str
    checked_at: datetime
    champion_version: str
    batch_ids: list[str]
    reference_rows: int
    current_rows: int
    engine: Engine
    columns: list[ColumnDrift]
    drift_share: float
    drift_detected: bool
    prediction: ColumnDrift | None
    performance: Performance | None
    window_kind: str = "labelled"
    label_lag_seconds: float | None = None

    @property
    def labelled(self) -> bool:
        """Whether the checked window is labelled data (not unlabelled inference traffic)."""
        return self.window_kind == "labelled"

    @property
    def alarming(self) -> bool:
        """Drift of the dataset, or degraded labelled performance."""
        return self.drift_detected or bool(self.performance and self.performance.degraded)

    def top_drifted(self, count: int = events.TOP_COLUMNS) -> list[ColumnDrift]:
        """The drifted columns, most severe first (:attr:`ColumnDrift.severity`)."""
        return sorted((c for c in self.columns if c.drifted), key=lambda c: -c.severity)[:count]

    def record(self) -> CheckRecord:
        """This check as the incident rules see it."""
        return CheckRecord(
            self.check_id,
            self.checked_at,
            self.champion_version,
            self.batch_ids,
            self.alarming,
            self.drift_share,
            self.labelled,
        )

    def summary(self, incident: str | None = None, action: str | None = None) -> dict[str, Any]:
        """The JSON summary (``retrainer monitor --json``)."""
        return {
            "model": self.model,
            "check_id": self.check_id,
            "checked_at": self.checked_at.isoformat(timespec="seconds"),
            "champion_version": self.champion_version,
            "batch_ids": self.batch_ids,
            "window_kind": self.window_kind,
            "label_lag_seconds": self.label_lag_seconds,
            "rows": {"reference": self.reference_rows, "current": self.current_rows},
            "engine": self.engine,
            "drift_detected": self.drift_detected,
            "drift_share": self.drift_share,
            "columns": {c.column: _column_json(c) for c in self.columns},
            "prediction": _column_json(self.prediction) if self.prediction else None,
            "performance": asdict(self.performance) if self.performance else None,
            "action": action,
            "incident": incident,
        }


def _column_json(column: ColumnDrift) -> dict[str, Any]:
    return {
        "score": column.score,
        "method": column.method,
        "threshold": column.threshold,
        "drifted": column.drifted,
        "note": column.note,
    }


@dataclass(frozen=True)
class CheckResult:
    """A check and the Evidently report drawn for it."""

    check: DriftCheck
    report: EvidentlyRun


def new_check_id(now: datetime) -> str:
    """A sortable id for a check taken at ``now``."""
    return now.astimezone(UTC).strftime("check-%Y%m%dT%H%M%S%fZ")


def check_window(
    model: str,
    config: ModelConfig,
    schema: Schema,
    champion_version: str,
    reference: pl.DataFrame,
    window: Window,
    current: pl.DataFrame,
    champion_predictions: np.ndarray,
    holdout_figure: float | None,
    now: datetime | None = None,
) -> CheckResult:
    """Compare the window's rows and the champion's predictions on them with the champion's reference.

    Args:
        model: Model name.
        config: The model's config (drift settings, task, primary metric).
        schema: The model's schema.
        champion_version: The version whose reference ``reference`` is.
        reference: The champion's reference sample (features and ``PREDICTION``).
        window: The batches checked.
        current: The window's rows (features, and the target when labelled).
        champion_predictions: The champion's raw predictions on ``current``, row for row.
        holdout_figure: The champion's primary metric on its own holdout, if recorded.
        now: When the check happens (default: now).

    Raises:
        DataError: the window has no rows or lacks feature columns (naming each column).
    """
    now = now or datetime.now(UTC)
    require_features(current, schema, window.label)
    current = current.with_columns(prediction_column(config.task, config.class_labels, champion_predictions))
    drift = config.drift
    kinds = ColumnKinds(list(schema.numeric), list(schema.categorical))
    empty = _all_null(reference, current, kinds)
    testable = kinds.without(set(empty))
    verdicts, engine, report = _drift_verdicts(reference, current, testable, drift, prediction_kind(config.task))
    unseen = _unseen_categories(reference, current, testable, schema)
    columns = [_apply_rules(verdicts.get(c), c, kinds.kind(c), empty, unseen, drift) for c in kinds.all]
    share, detected = dataset_verdict(columns, drift.drift_share)
    check = DriftCheck(
        model=model,
        check_id=new_check_id(now),
        checked_at=now,
        champion_version=champion_version,
        batch_ids=window.batch_ids,
        reference_rows=reference.height,
        current_rows=current.height,
        engine=engine,
        columns=columns,
        drift_share=share,
        drift_detected=detected,
        prediction=verdicts.get(PREDICTION),
        performance=window_performance(config, schema, current, champion_predictions, holdout_figure),
        window_kind=window.kind,
        label_lag_seconds=window.label_lag_seconds,
    )
    return CheckResult(check, opened_report(check, report, drift))


def check_champion(
    store: BatchStore,
    registry: Registry,
    config: ModelConfig,
    champion: VersionInfo,
    reference: pl.DataFrame,
    window: Window,
    now: datetime | None = None,
    predecessors: list[VersionInfo] | None = None,
) -> CheckResult:
    """Check a stored window: read it once, predict it with the champion as served, compare with the reference.

    Args:
        store: The model's batch store.
        registry: The registry holding ``champion``.
        config: The model's config.
        champion: The version checked; its ``retrainer.metrics`` tag gives its holdout figure.
        reference: The champion's reference sample (:func:`~retrainer.monitor.reference.champion_reference`).
        window: The batches to check.
        now: When the check happens (default: now).
        predecessors: The champions ``champion`` replaced, newest first: the labelled performance
            is judged against the best holdout figure among them and ``champion``
            (:func:`~retrainer.monitor.performance.performance_baseline`).

    Raises:
        DataError: the window has no rows or lacks feature columns (naming each column).
        RegistryError: the champion cannot be loaded.
    """
    schema = schema_for(config, [], store.manifest().features)
    read = predict_window(store, registry, champion, window, schema)
    versions = [champion, *(predecessors or [])]
    figure = performance_baseline(
        [holdout_figure(v.tags, config.primary_metric) for v in versions], config.primary_metric
    )
    return check_window(
        champion.model, config, schema, champion.version, reference, window, read.rows, read.predictions, figure, now
    )


def replaced_champions(registry: Registry, history: History, champion: VersionInfo, count: int) -> list[VersionInfo]:
    """Up to ``count`` champions before ``champion``, newest first, by the versions each promotion replaced.

    A version a rollback replaced is passed over (it was withdrawn, its figure is no bar), and so is
    one the registry no longer has (deleted versions are ordinary cleanup).
    """
    withdrawn = history.rolled_back_from()
    found: list[VersionInfo] = []
    seen = {champion.version}
    replaced = history.promoted_over(champion.version)
    while replaced is not None and replaced not in seen and len(found) < count:
        seen.add(replaced)
        if replaced not in withdrawn:
            found += _still_registered(registry, champion.model, replaced)
        replaced = history.promoted_over(replaced)
    return found


def _still_registered(registry: Registry, model: str, version: str) -> list[VersionInfo]:
    try:
        return [registry.version(model, version)]
    except TransientRegistryError:
        raise
    except RegistryError:
        return []


def check_metrics(check: DriftCheck) -> dict[str, float]:
    """The metrics a check's MLflow monitoring run records.

    Returns:
        ``drift_share`` and ``drifted_columns`` always; ``drift_score.<column>`` for every column
        with a score (rule verdicts have none); ``prediction_drift_score`` when the prediction was
        scored; ``window_<metric>`` when labelled performance was measured.
    """
    metrics = {"drift_share": check.drift_share, "drifted_columns": float(sum(c.drifted for c in check.columns))}
    metrics.update({f"drift_score.{c.column}": c.score for c in check.columns if c.score is not None})
    if check.prediction is not None and check.prediction.score is not None:
        metrics["prediction_drift_score"] = check.prediction.score
    if check.performance is not None:
        metrics[f"window_{check.performance.metric}"] = check.performance.window
    return metrics


def _all_null(reference: pl.DataFrame, current: pl.DataFrame, kinds: ColumnKinds) -> dict[str, str]:
    """Columns without a single valid value on one side, with the side named."""
    empty: dict[str, str] = {}
    for side, frame in (("window", current), ("reference", reference)):
        counts = frame.select([_valid(c, kinds.kind(c)).sum() for c in kinds.all]).row(0, named=True)
        for column, valid in counts.items():
            if valid == 0:
                empty.setdefault(column, f"no valid value in the {side}")
    return empty


def _valid(column: str, kind: ColumnKind) -> pl.Expr:
    if kind == "categorical":
        return pl.col(column).is_not_null().alias(column)
    return pl.col(column).cast(pl.Float64).is_finite().fill_null(False).alias(column)


def _unseen_categories(
    reference: pl.DataFrame, current: pl.DataFrame, kinds: ColumnKinds, schema: Schema
) -> dict[str, list[str]]:
    """Per categorical column, the window's values that neither the reference nor the config knows."""
    unseen = {}
    for column in kinds.categorical:
        known = set(reference[column].drop_nulls().cast(pl.String).unique().to_list())
        known |= set(schema.categorical.get(column, []))
        values = set(current[column].drop_nulls().cast(pl.String).unique().to_list())
        new = sorted(values - known)
        if new:
            unseen[column] = new
    return unseen


def _drift_verdicts(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: ColumnKinds,
    drift: DriftConfig,
    predicted: ColumnKind,
) -> tuple[dict[str, ColumnDrift], Engine, EvidentlyRun]:
    """Verdict per testable column and the prediction column, the engine used, and the report.

    The prediction column is not a feature, so per-column settings cannot name it: defaults apply.
    """
    with_prediction = ColumnKinds(
        [*kinds.numerical, *([PREDICTION] if predicted == "numerical" else [])],
        [*kinds.categorical, *([PREDICTION] if predicted == "categorical" else [])],
    )
    big = max(reference.height, current.height) > drift.fast_above
    if big and fast_path_applies(drift, kinds, reference.height):
        found = fast_drift(reference, current, with_prediction, drift, unconfigured=frozenset({PREDICTION}))
        verdicts = {v.column: v for v in found}
        shown = _most_drifted(kinds, verdicts, drift.report_columns)
        report = run_evidently(
            seeded_sample(reference, drift.report_rows, drift.reference_seed),
            seeded_sample(current, drift.report_rows, drift.reference_seed),
            shown,
            _pinned(drift, [verdicts[c] for c in [*shown.all, PREDICTION]]),
            (PREDICTION, predicted),
        )
        return verdicts, "polars", report
    rows = drift.fast_above if big else max(reference.height, current.height)
    report = run_evidently(
        seeded_sample(reference, rows, drift.reference_seed),
        seeded_sample(current, rows, drift.reference_seed),
        kinds,
        drift,
        (PREDICTION, predicted),
    )
    verdicts = {v.column: v for v in report.columns}
    if report.prediction is not None:
        verdicts[PREDICTION] = report.prediction
    return verdicts, "evidently", report


def _pinned(drift: DriftConfig, verdicts: list[ColumnDrift]) -> DriftConfig:
    """``drift`` with each column's method and threshold fixed to its verdict's.

    Evidently picks its default method from the data it is given (K-S on 1000 reference rows or
    fewer, Jensen-Shannon for few distinct values): a sample could get other methods than the
    full frames did, and the report would then contradict the verdicts it illustrates.
    """
    return drift.model_copy(
        update={
            "per_column_method": {v.column: v.method for v in verdicts},
            "per_column_threshold": {v.column: v.threshold for v in verdicts},
        }
    )


def _most_drifted(kinds: ColumnKinds, verdicts: dict[str, ColumnDrift], count: int) -> ColumnKinds:
    """The ``count`` most severely drifted columns (:attr:`ColumnDrift.severity`)."""
    ranked = sorted(kinds.all, key=lambda c: -verdicts[c].severity)
    return kinds.without(set(ranked[count:]))


def _apply_rules(
    verdict: ColumnDrift | None,
    column: str,
    kind: ColumnKind,
    empty: dict[str, str],
    unseen: dict[str, list[str]],
    drift: DriftConfig,
) -> ColumnDrift:
    threshold = configured_threshold(drift, column)
    if column in empty:
        return ColumnDrift(column, kind, "all_null", None, threshold, True, empty[column])
    if verdict is None:
        raise AssertionError(f"no verdict for {column}")  # pragma: no cover - every testable column has one
    if column in unseen:
        note = "unseen categories: " + ", ".join(unseen[column][:10])
        return ColumnDrift(column, kind, verdict.method, verdict.score, verdict.threshold, True, note)
    return verdict
