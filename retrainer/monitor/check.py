"""Drift monitoring without Prefect: the champion's reference, the window, the check and its summary.

Every registered version carries a *reference sample*: a seeded sample of its own training rows
(at most ``drift.reference_rows``) with its predictions on them. A check compares the newest
batches with the reference of the current champion, so promotions and rollbacks re-baseline
monitoring at the moment the champion moves.

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

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from retrainer import events
from retrainer.config import DriftConfig, DriftWindow, ModelConfig
from retrainer.config.drift_methods import ColumnKind
from retrainer.config.metrics import TaskKind, orientation
from retrainer.data.contract import Schema
from retrainer.data.features import FeatureSpec, label_vector
from retrainer.data.store import BatchRecord, Manifest
from retrainer.errors import DataError, NoDataError, Violation
from retrainer.judge.metrics import point_metric
from retrainer.monitor.evidently import EvidentlyRun, run_evidently, with_banner
from retrainer.monitor.fast_stats import (
    ColumnDrift,
    ColumnKinds,
    configured_threshold,
    dataset_verdict,
    fast_drift,
    fast_path_applies,
)
from retrainer.monitor.incidents import Action, Assessment, CheckRecord

PREDICTION = "champion_prediction"
REFERENCE_ARTIFACT = "reference/reference.parquet"
Engine = Literal["polars", "evidently"]


def prediction_kind(task: TaskKind) -> ColumnKind:
    """Multiclass predictions are compared as predicted labels; the others as numbers."""
    return "categorical" if task == "multiclass" else "numerical"


def prediction_column(task: TaskKind, classes: list[Any], raw: np.ndarray) -> pl.Series:
    """The prediction column drift is measured on: probability/value, or the predicted label."""
    if task == "multiclass":
        labels = np.asarray([str(c) for c in classes])[np.asarray(raw).argmax(axis=1)]
        return pl.Series(PREDICTION, labels, dtype=pl.String)
    return pl.Series(PREDICTION, np.asarray(raw, dtype=np.float64).reshape(-1))


def reference_sample(training: pl.DataFrame, spec: FeatureSpec, raw_predictions: np.ndarray) -> pl.DataFrame:
    """The reference rows of a new version: features and target plus the version's own predictions.

    Args:
        training: The sampled training rows, as returned by :func:`reference_rows`.
        spec: The version's feature spec.
        raw_predictions: The version's predictions on ``training``, row for row.
    """
    kept = training.select([*spec.features, spec.target])
    return kept.with_columns(prediction_column(spec.task, spec.classes, raw_predictions))


def reference_rows(training: pl.DataFrame, drift: DriftConfig) -> pl.DataFrame:
    """A seeded sample of at most ``drift.reference_rows`` training rows (all rows when fewer)."""
    return _sample(training, drift.reference_rows, drift.reference_seed)


def reference_batches(manifest: Manifest, run_tags: dict[str, str], version: str) -> list[BatchRecord]:
    """The accepted batches a version was trained on, from its run's lineage tags.

    Used to rebuild the reference of a champion registered without one.

    Raises:
        NoDataError: the run records no training batches, or some are no longer in the store.
    """
    wanted = [b for b in run_tags.get("retrainer.training_batches", "").split(",") if b]
    if not wanted:
        raise NoDataError(manifest.model, f"v{version} records no training batches: cannot build its reference")
    found = {b.batch_id: b for b in manifest.batches}
    missing = [b for b in wanted if b not in found]
    if missing:
        raise NoDataError(manifest.model, f"v{version} was trained on batches no longer stored: {missing}")
    return [found[b] for b in wanted]


@dataclass(frozen=True)
class Window:
    """The accepted batches a check covers, oldest first."""

    batches: list[BatchRecord]

    @property
    def batch_ids(self) -> list[str]:
        """Ids of the batches."""
        return [b.batch_id for b in self.batches]

    @property
    def label(self) -> str:
        """How error messages name the window."""
        return f"window {','.join(self.batch_ids)}"


def select_window(
    manifest: Manifest, window: DriftWindow, last_checked: str | None, batch_id: str | None = None
) -> Window | None:
    """Pick the batches to check; ``None`` when ``since_last_check`` finds nothing new.

    Raises:
        NoDataError: no accepted batch yet, or ``batch_id`` is not an accepted batch.
    """
    batches = manifest.batches
    if not batches:
        raise NoDataError(manifest.model, "no accepted batch to check yet")
    if batch_id is not None:
        chosen = [b for b in batches if b.batch_id == batch_id]
        if not chosen:
            raise NoDataError(manifest.model, f"batch {batch_id!r} is not an accepted batch")
        return Window(chosen)
    if window.mode == "since_last_check" and last_checked is not None:
        ids = [b.batch_id for b in batches]
        newer = batches[ids.index(last_checked) + 1 :] if last_checked in ids else batches
        return Window(newer[-window.batches :]) if newer else None
    return Window(batches[-window.batches :])


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
            self.check_id, self.checked_at, self.champion_version, self.batch_ids, self.alarming, self.drift_share
        )

    def summary(self, incident: str | None = None, action: str | None = None) -> dict[str, Any]:
        """The JSON summary (``retrainer monitor --json``)."""
        return {
            "model": self.model,
            "check_id": self.check_id,
            "checked_at": self.checked_at.isoformat(timespec="seconds"),
            "champion_version": self.champion_version,
            "batch_ids": self.batch_ids,
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
    _validate(current, schema, window.label)
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
        performance=_performance(config, schema, current, champion_predictions, holdout_figure),
    )
    return CheckResult(check, replace(report, html=with_banner(report.html, _report_banner(check, report, drift))))


def _report_banner(check: DriftCheck, report: EvidentlyRun, drift: DriftConfig) -> list[str]:
    """The lines shown above the Evidently report: retrainer's verdict, and what the report covers.

    Evidently's page counts only the features and rows it was given; on big windows that is a
    sample of the most drifted features, so its own dataset verdict can differ from the check's.
    """
    drifted = sum(c.drifted for c in check.columns)
    verdict = "Dataset drift detected" if check.drift_detected else "No dataset drift"
    lines = [
        f"retrainer {check.check_id}: {check.model}, champion v{check.champion_version}, "
        f"batches {', '.join(check.batch_ids)}",
        f"{verdict}: {drifted} of {len(check.columns)} features drifted "
        f"(share {check.drift_share:.2f}; dataset drift needs {drift.drift_share:.2f}).",
    ]
    if check.prediction is not None:
        moved = "drifted" if check.prediction.drifted else "did not drift"
        lines.append(f"The champion's predictions {moved} ({_scored(check.prediction)}).")
    if check.engine == "polars":
        lines.append(
            f"Every feature was scored on all {check.reference_rows:,} reference and {check.current_rows:,} "
            f"window rows. This report draws the {len(report.columns)} most drifted of {len(check.columns)} "
            f"features on seeded samples of {report.reference_rows:,} and {report.current_rows:,} rows, "
            "so its own counts and dataset verdict cover only those."
        )
    elif (report.reference_rows, report.current_rows) != (check.reference_rows, check.current_rows):
        lines.append(
            f"Scores come from this report, drawn on seeded samples of {report.reference_rows:,} reference "
            f"and {report.current_rows:,} window rows (of {check.reference_rows:,} and {check.current_rows:,})."
        )
    ruled = [f"{c.column} ({c.note})" for c in check.columns if c.note]
    if ruled:
        lines.append("Drifted by rule, whatever the score: " + "; ".join(ruled) + ".")
    return lines


def _scored(column: ColumnDrift) -> str:
    score = "no score" if column.score is None else f"{column.score:.4g}"
    return f"{column.method} {score}, threshold {column.threshold:g}"


def _validate(current: pl.DataFrame, schema: Schema, source: str) -> None:
    missing = [c for c in schema.features if c not in current.columns]
    if missing:
        violations = [Violation("missing_column", "feature column absent from the window", c) for c in missing]
        raise DataError(source, violations)
    if current.height == 0:
        raise DataError(source, [Violation("empty_window", "the window has no rows to check")])


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
            _sample(reference, drift.report_rows, drift.reference_seed),
            _sample(current, drift.report_rows, drift.reference_seed),
            shown,
            _pinned(drift, [verdicts[c] for c in [*shown.all, PREDICTION]]),
            (PREDICTION, predicted),
        )
        return verdicts, "polars", report
    rows = drift.fast_above if big else max(reference.height, current.height)
    report = run_evidently(
        _sample(reference, rows, drift.reference_seed),
        _sample(current, rows, drift.reference_seed),
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


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    return frame if frame.height <= rows else frame.sample(n=rows, seed=seed)


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


def _performance(
    config: ModelConfig,
    schema: Schema,
    current: pl.DataFrame,
    predictions: np.ndarray,
    holdout_figure: float | None,
) -> Performance | None:
    """The champion's primary metric on the window's labelled rows, if it has any."""
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


def holdout_figure(version_tags: dict[str, str], metric: str) -> float | None:
    """The version's own holdout value of ``metric`` when it was judged, from its decision tags."""
    recorded = version_tags.get("retrainer.metrics")
    if not recorded:
        return None
    value = json.loads(recorded).get(metric, {}).get("challenger")
    return float(value) if value is not None else None


def incident_events(check: DriftCheck, assessment: Assessment, report_uri: str) -> list[events.Event]:
    """The events a newly opened incident announces (none for any other action).

    ``drift.detected`` when the dataset drifted, ``performance.degraded`` when labelled performance
    fell beyond tolerance; both keyed by the incident, so repeats collapse.
    """
    incident = assessment.incident
    if assessment.action is not Action.OPENED or incident is None:
        return []
    payload = events.drift_payload(
        incident_key=incident.key,
        reason=f"drift incident {incident.key}",
        drift_share=check.drift_share,
        drift_detected=check.drift_detected,
        top_columns=[{"column": c.column, "score": c.score, "method": c.method} for c in check.top_drifted()],
        prediction_drift=check.prediction.score if check.prediction else None,
        report_uri=report_uri,
        champion_version=check.champion_version,
        batch_ids=check.batch_ids,
        check_id=check.check_id,
    )
    related = [events.incident_resource(incident.key)]
    found = []
    if check.drift_detected:
        found.append(events.Event(events.DRIFT_DETECTED, check.model, payload, key=incident.key, related=related))
    if check.performance is not None and check.performance.degraded:
        performance = {**payload, "performance": asdict(check.performance)}
        found.append(
            events.Event(events.PERFORMANCE_DEGRADED, check.model, performance, key=incident.key, related=related)
        )
    return found
