"""Paired bootstrap of metric differences, vectorised over resamples."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from retrainer.metric_catalog import TaskKind, orientation
from retrainer.metrics import weighted_metric

_CELLS_PER_CHUNK = 4_000_000


def resample_counts(rows: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield chunks of bootstrap count matrices (resamples × rows); row sums equal ``rows``.

    The sequence depends only on ``(rows, resamples, seed)``, so both models of a pair, and a
    re-run, see identical resamples.
    """
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CELLS_PER_CHUNK // max(rows, 1))
    for start in range(0, resamples, per_chunk):
        size = min(per_chunk, resamples - start)
        drawn = rng.integers(0, rows, (size, rows), dtype=np.int64) + (np.arange(size) * rows)[:, None]
        yield np.bincount(drawn.ravel(), minlength=size * rows).reshape(size, rows).astype(np.float64)


@dataclass(frozen=True)
class PairedBound:
    """Distribution summary of ``orientation × (challenger − champion)`` over resamples.

    Attributes:
        lower: One-sided lower confidence bound of the improvement (NaN when undefined).
        mean: Mean improvement over defined resamples.
        defined: Resamples on which the metric was defined for both models.
    """

    lower: float
    mean: float
    defined: int


def paired_bounds(
    task: TaskKind,
    metrics: list[str],
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, PairedBound]:
    """Bootstrap the improvement of ``challenger`` over ``champion`` on the same resampled rows.

    Improvements are sign-adjusted, so positive always means the challenger is better.
    """
    if len(y) == 0:
        return {name: PairedBound(lower=float("nan"), mean=float("nan"), defined=0) for name in metrics}
    improvements: dict[str, list[np.ndarray]] = {name: [] for name in metrics}
    for weights in resample_counts(len(y), resamples, seed):
        for name in metrics:
            score = weighted_metric(task, name)
            delta = score(y, challenger, weights) - score(y, champion, weights)
            improvements[name].append(orientation(name) * delta)
    return {name: _summarise(np.concatenate(chunks), confidence) for name, chunks in improvements.items()}


def _summarise(improvement: np.ndarray, confidence: float) -> PairedBound:
    defined = improvement[np.isfinite(improvement)]
    if len(defined) == 0:
        return PairedBound(lower=float("nan"), mean=float("nan"), defined=0)
    lower = float(np.quantile(defined, 1 - confidence, method="linear"))
    return PairedBound(lower=lower, mean=float(defined.mean()), defined=len(defined))
