"""Metric values: point estimates from scikit-learn, and the same metrics under resampling weights.

Predictions are the serving model's outputs: the positive-class probability (binary), one
probability column per class (multiclass) or the predicted value (regression). Labels are class
indices or values.

The weighted forms take a ``(resamples, rows)`` matrix of bootstrap counts and return one value per
resample, so a whole bootstrap is a handful of matrix products instead of a Python loop. With a row
of ones they equal scikit-learn's value (a test checks this). Metrics that are the mean of a per-row
value (log loss, accuracy, MAE) also expose that value, for the large-sample bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from retrainer.config.metrics import METRICS_BY_TASK, TaskKind

_EPS = 1e-15
WeightedMetric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def point_metrics(task: TaskKind, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of ``task`` computed by scikit-learn; NaN where a metric is undefined."""
    return {name: point_metric(task, name, y, pred) for name in METRICS_BY_TASK[task]}


def point_metric(task: TaskKind, name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """One metric computed by scikit-learn; NaN where it is undefined (e.g. AUC on one class)."""
    from sklearn import metrics as sk

    if len(y) == 0:
        return float("nan")
    if task == "binary":
        labels = (pred >= 0.5).astype(np.int64)
        if name == "roc_auc":
            return float(sk.roc_auc_score(y, pred)) if len(np.unique(y)) == 2 else float("nan")
        if name == "log_loss":
            return float(sk.log_loss(y, np.clip(pred, _EPS, 1 - _EPS), labels=[0, 1]))
        scorer = {"f1": sk.f1_score, "precision": sk.precision_score, "recall": sk.recall_score}.get(name)
        if scorer is not None:
            return float(scorer(y, labels, zero_division=0))
        return float(sk.accuracy_score(y, labels))
    if task == "multiclass":
        classes = list(range(pred.shape[1]))
        if name == "log_loss":
            return float(sk.log_loss(y, np.clip(pred, _EPS, 1), labels=classes))
        labels = pred.argmax(axis=1)
        if name == "macro_f1":
            return float(sk.f1_score(y, labels, average="macro", zero_division=0))
        return float(sk.accuracy_score(y, labels))
    if name == "rmse":
        return float(sk.root_mean_squared_error(y, pred))
    if name == "mae":
        return float(sk.mean_absolute_error(y, pred))
    return float(sk.r2_score(y, pred)) if len(y) > 1 and np.ptp(y) > 0 else float("nan")


def weighted_metric(task: TaskKind, name: str) -> WeightedMetric:
    """Return ``f(y, pred, weights) -> values``: the metric under each row of ``weights``."""
    return _WEIGHTED[(task, name)]


def prepared_metric(task: TaskKind, name: str, y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``f(weights) -> values`` for fixed ``y`` and ``pred``, equal to ``weighted_metric``'s.

    Work that does not depend on the weights (sorting, for ROC AUC) is done once, here, so that a
    bootstrap in many chunks does not repeat it.
    """
    if (task, name) == ("binary", "roc_auc"):
        return RocAuc(y, pred)
    return partial(_WEIGHTED[(task, name)], y, pred)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), empty)


def _mean(weights: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    return _ratio(weights @ per_row, weights.sum(axis=1), np.nan)


def _roc_auc(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return RocAuc(y, pred)(weights)


class RocAuc:
    """Weighted ROC AUC of fixed labels and scores (ties count half) under many weight matrices.

    Sorting is done once here; each call then costs a gather and a cumulative sum over the weights.
    For every positive row, the weight of the negatives scored below it (plus half of those tied with
    it) is read from the cumulative weight of the negatives in score order.
    """

    def __init__(self, y: np.ndarray, pred: np.ndarray) -> None:
        positive = y == 1
        self.positives = np.flatnonzero(positive)
        negatives = np.flatnonzero(~positive)
        order = np.argsort(pred[negatives], kind="mergesort")
        self.negatives = negatives[order]
        negative_scores = pred[self.negatives]
        positive_scores = pred[self.positives]
        self.below = np.searchsorted(negative_scores, positive_scores, side="left")
        self.below_or_tied = np.searchsorted(negative_scores, positive_scores, side="right")
        self.ties = not np.array_equal(self.below, self.below_or_tied)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """AUC under each row of ``weights`` (resamples × rows); NaN where a class has no weight."""
        cumulative = np.zeros((weights.shape[0], len(self.negatives) + 1))
        np.cumsum(weights[:, self.negatives], axis=1, out=cumulative[:, 1:])
        negatives_below = cumulative[:, self.below]
        if self.ties:
            negatives_below = 0.5 * (negatives_below + cumulative[:, self.below_or_tied])
        positive_weights = weights[:, self.positives]
        concordant = np.einsum("ij,ij->i", positive_weights, negatives_below)
        return _ratio(concordant, positive_weights.sum(axis=1) * cumulative[:, -1], np.nan)


def _binary_log_loss_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    p = np.clip(pred, _EPS, 1 - _EPS)
    rows: np.ndarray = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return rows


def _binary_counts(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    predicted = (pred >= 0.5).astype(np.float64)
    actual = y.astype(np.float64)
    return weights @ (predicted * actual), weights @ predicted, weights @ actual


def _precision(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    tp, predicted, _ = _binary_counts(y, pred, weights)
    return _ratio(tp, predicted, 0.0)


def _recall(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    tp, _, actual = _binary_counts(y, pred, weights)
    return _ratio(tp, actual, 0.0)


def _f1(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    tp, predicted, actual = _binary_counts(y, pred, weights)
    return _ratio(2 * tp, predicted + actual, 0.0)


def _binary_accuracy_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.asarray((pred >= 0.5) == (y == 1), dtype=np.float64)


def _multiclass_log_loss_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    p = np.clip(pred, _EPS, 1)
    p = p / p.sum(axis=1, keepdims=True)
    rows: np.ndarray = -np.log(p[np.arange(len(y)), y])
    return rows


def _multiclass_accuracy_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.asarray(pred.argmax(axis=1) == y, dtype=np.float64)


def _macro_f1(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    classes = np.arange(pred.shape[1])
    predicted = (pred.argmax(axis=1)[:, None] == classes).astype(np.float64)
    actual = (y[:, None] == classes).astype(np.float64)
    tp = weights @ (predicted * actual)
    support = weights @ predicted + weights @ actual
    per_class = _ratio(2 * tp, support, 0.0)
    present = support > 0
    return _ratio((per_class * present).sum(axis=1), present.sum(axis=1).astype(np.float64), np.nan)


def _rmse(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    root: np.ndarray = np.sqrt(_mean(weights, (y - pred) ** 2))
    return root


def _absolute_error_rows(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.asarray(np.abs(y - pred), dtype=np.float64)


def _r2(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    # Centring on the plain mean first keeps a constant target's spread exactly zero.
    centred = y - y.mean()
    total = weights.sum(axis=1)
    mean_centred = _ratio(weights @ centred, total, np.nan)
    spread = weights @ (centred**2) - total * mean_centred**2
    residual = weights @ ((y - pred) ** 2)
    return _ratio(-residual, spread, np.nan) + np.where(spread > 0, 1.0, np.nan)


PerRow = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Metrics that are the mean of a per-row value.
_PER_ROW: dict[tuple[TaskKind, str], PerRow] = {
    ("binary", "log_loss"): _binary_log_loss_rows,
    ("binary", "accuracy"): _binary_accuracy_rows,
    ("multiclass", "accuracy"): _multiclass_accuracy_rows,
    ("multiclass", "log_loss"): _multiclass_log_loss_rows,
    ("regression", "mae"): _absolute_error_rows,
}


def per_row_values(task: TaskKind, name: str) -> PerRow | None:
    """Return ``f(y, pred) -> values`` when the metric is the mean of a per-row value, else ``None``."""
    return _PER_ROW.get((task, name))


def _mean_of(rows: PerRow) -> WeightedMetric:
    def weighted(y: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return _mean(weights, rows(y, pred))

    return weighted


_WEIGHTED: dict[tuple[TaskKind, str], WeightedMetric] = {
    ("binary", "roc_auc"): _roc_auc,
    ("binary", "f1"): _f1,
    ("binary", "precision"): _precision,
    ("binary", "recall"): _recall,
    ("multiclass", "macro_f1"): _macro_f1,
    ("regression", "rmse"): _rmse,
    ("regression", "r2"): _r2,
    **{key: _mean_of(rows) for key, rows in _PER_ROW.items()},
}
