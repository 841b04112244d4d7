"""Large-sample (normal) lower bounds of a paired improvement, in O(n log n) instead of a bootstrap.

On a big holdout the bootstrap's resamples × rows work dominates a retrain, while its answer
converges to the normal bound these compute on the same rows:

* ROC AUC: DeLong, DeLong & Clarke-Pearson (1988)'s variance of the difference of two correlated
  AUCs, from each model's placement values (computed with midranks, as in Sun & Xu 2014);
* a metric that is the mean of a per-row value (log loss, accuracy, MAE): the central limit
  theorem on the per-row differences, which pairs the models row by row.

Other metrics (F1, precision, recall, macro F1, RMSE, R²) have no bound here; they are bootstrapped.
"""

from __future__ import annotations

from collections.abc import Callable
from statistics import NormalDist

import numpy as np

from retrainer.config.metrics import TaskKind, orientation
from retrainer.judge.bootstrap import BoundMethod, PairedBound
from retrainer.judge.metrics import per_row_values

Estimate = tuple[float, float, int]  # mean improvement, its variance, rows it rests on (0: undefined)
Estimator = Callable[[np.ndarray, np.ndarray, np.ndarray], Estimate]  # (y, champion, challenger)


def has_normal_bound(task: TaskKind, name: str) -> bool:
    """True when :func:`normal_bounds` covers ``name`` for ``task``."""
    return _estimator(task, name) is not None


def normal_bounds(
    task: TaskKind,
    metrics: list[str],
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    confidence: float,
) -> dict[str, PairedBound]:
    """One-sided lower ``confidence`` bound of each metric's improvement of ``challenger`` over ``champion``.

    Improvements are sign-adjusted (positive = challenger better), as for the bootstrap.

    Raises:
        ValueError: a metric without a large-sample bound (see :func:`has_normal_bound`).
    """
    z = NormalDist().inv_cdf(confidence)
    bounds = {}
    for name in metrics:
        found = _estimator(task, name)
        if found is None:
            raise ValueError(f"{task} metric {name} has no large-sample bound")
        method, estimator = found
        mean, variance, rows = estimator(y, champion, challenger)
        lower = mean - z * float(np.sqrt(variance)) if rows else float("nan")
        bounds[name] = PairedBound(lower=lower, mean=mean, defined=rows, method=method)
    return bounds


def _estimator(task: TaskKind, name: str) -> tuple[BoundMethod, Estimator] | None:
    """How ``name``'s improvement is estimated: DeLong for ROC AUC, else the paired mean of a per-row metric."""
    if (task, name) == ("binary", "roc_auc"):
        return "delong", _delong
    per_row = per_row_values(task, name)
    if per_row is None:
        return None
    sign = orientation(name)
    return "normal", lambda y, champion, challenger: _paired_mean(
        sign * (per_row(y, challenger) - per_row(y, champion))
    )


def _paired_mean(differences: np.ndarray) -> Estimate:
    if len(differences) < 2:
        return float("nan"), float("nan"), 0
    return float(differences.mean()), float(differences.var(ddof=1)) / len(differences), len(differences)


def _delong(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> Estimate:
    positive = y == 1
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if positives < 2 or negatives < 2:
        return float("nan"), float("nan"), 0
    new_pos, new_neg = _placements(challenger[positive], challenger[~positive])
    old_pos, old_neg = _placements(champion[positive], champion[~positive])
    difference = float(new_pos.mean() - old_pos.mean())
    variance = float((new_pos - old_pos).var(ddof=1)) / positives + float((new_neg - old_neg).var(ddof=1)) / negatives
    return difference, variance, positives + negatives


def _placements(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per positive: share of negatives scored below it; per negative: share of positives above it (ties half)."""
    combined = _midranks(np.concatenate([positive, negative]))
    below = (combined[: len(positive)] - _midranks(positive)) / len(negative)
    above = 1 - (combined[len(positive) :] - _midranks(negative)) / len(positive)
    return below, above


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks
