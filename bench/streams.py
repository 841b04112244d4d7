"""Seeded labelled streams for the decision benchmark (``bench/decisions.py``).

Every stream is a list of daily batches sharing one schema: the float features ``x0`` … ``x4``, the
categorical ``segment`` (levels :data:`SEGMENTS`), a timestamp ``event_time`` spread over the batch's
day in random (unsorted) order, and the target ``y`` (0/1 for classification, a float for
regression). Two labelling rules, concept A and concept B, give the label from the features; a
scenario says which rule (or which mixture of the two) labels each batch and whether the feature
distributions move.

Scenarios (``c`` is the first changed batch, :func:`change_points`):

* ``abrupt``: binary; concept A, then concept B from batch ``c`` on;
* ``gradual``: binary; each row follows B with probability 1/3 at ``c``, 2/3 at ``c + 1``, 1 after;
* ``recurring``: binary; A, B for four batches from ``c``, then A again (features never change);
* ``covariate``: binary; the feature distributions shift at ``c``, the rule stays A;
* ``stationary_noise``: binary; concept A throughout with 10 % of the labels flipped;
* ``regression``: a numeric target; concept A, B for four batches from ``c``, then A again.

The same ``(scenario, batch, rows, seed)`` always gives the same frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

NUMERIC = ["x0", "x1", "x2", "x3", "x4"]
CATEGORICAL = "segment"
SEGMENTS = ["a", "b", "c", "d"]
FEATURES = [*NUMERIC, CATEGORICAL]
TARGET = "y"
TIME = "event_time"
START = datetime(2026, 3, 1)
DAY_SECONDS = 86_400
BOUNDARY_NOISE = 0.3
REGRESSION_NOISE = 0.5
LABEL_NOISE = 0.10
SCENARIOS = ("abrupt", "gradual", "recurring", "covariate", "stationary_noise", "regression")
MIN_BATCHES = 7
BOOTSTRAP = 3

Task = Literal["binary", "regression"]

_SEGMENT_A = np.array([0.6, 0.0, -0.6, 0.3])
_SEGMENT_B = np.array([-0.7, 0.5, 0.3, -0.4])
_SEGMENT_P = np.array([0.4, 0.3, 0.2, 0.1])
_SEGMENT_P_SHIFTED = np.array([0.1, 0.2, 0.3, 0.4])


@dataclass(frozen=True)
class Scenario:
    """One stream's shape.

    Attributes:
        name: One of :data:`SCENARIOS`.
        task: ``binary`` or ``regression``.
        metric: The primary metric the benchmark scores (``accuracy`` or ``rmse``).
        batches: Number of daily batches.
        changes: Batch indices where the labelling rule (or the feature distribution) changes,
            ascending; empty for a stationary stream.
        abrupt: Whether the labelling rule changes from one batch to the next (not over several batches,
            and not a shift of the features alone).
        description: One line for the report.
    """

    name: str
    task: Task
    metric: str
    batches: int
    changes: tuple[int, ...]
    abrupt: bool
    description: str


def change_points(batches: int) -> tuple[int, int]:
    """The first changed batch and the batch where a four-batch change reverts.

    With 14 batches: 8 and 12. Fewer batches move both earlier, keeping the first change after the
    bootstrap batches and at least two batches after the return.

    Raises:
        ValueError: fewer than :data:`MIN_BATCHES` batches.
    """
    if batches < MIN_BATCHES:
        raise ValueError(f"a stream needs at least {MIN_BATCHES} batches, got {batches}")
    change = max(BOOTSTRAP + 1, batches * 4 // 7)
    back = change + max(1, min(4, batches - change - 2))
    return change, back


def scenario(name: str, batches: int) -> Scenario:
    """The scenario ``name`` over ``batches`` batches.

    Raises:
        ValueError: unknown name, or too few batches.
    """
    change, back = change_points(batches)
    described = {
        "abrupt": ("binary", (change,), True, f"concept A, then concept B from batch {change} on"),
        "gradual": (
            "binary",
            (change,),
            False,
            f"A to B over two batches: share of B rows 1/3 at batch {change}, 2/3 at {change + 1}, then B",
        ),
        "recurring": ("binary", (change, back), True, f"A, B on batches {change}-{back - 1}, A again from {back}"),
        "covariate": (
            "binary",
            (change,),
            False,
            f"features shift at batch {change} (x0 mean +1.5, x1 scale x1.5, segment mix reversed); P(y|x) unchanged",
        ),
        "stationary_noise": ("binary", (), False, f"concept A throughout, {LABEL_NOISE:.0%} of labels flipped"),
        "regression": ("regression", (change, back), True, f"A, B on batches {change}-{back - 1}, A again from {back}"),
    }
    if name not in described:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    task, changes, abrupt, text = described[name]
    metric = "rmse" if task == "regression" else "accuracy"
    return Scenario(name, task, metric, batches, changes, abrupt, text)  # type: ignore[arg-type]


def share_of_b(spec: Scenario, batch: int) -> float:
    """The probability that a row of ``batch`` is labelled by concept B (0 for covariate and noise)."""
    if spec.name in {"covariate", "stationary_noise"} or not spec.changes:
        return 0.0
    change = spec.changes[0]
    if spec.name == "gradual":
        return min(1.0, max(0.0, (batch - change + 1) / 3))
    if batch < change:
        return 0.0
    return 1.0 if len(spec.changes) == 1 or batch < spec.changes[1] else 0.0


def features_shifted(spec: Scenario, batch: int) -> bool:
    """Whether ``batch``'s features come from the shifted distribution (covariate scenario only)."""
    return spec.name == "covariate" and batch >= spec.changes[0]


def make_batch(spec: Scenario, batch: int, rows: int, seed: int) -> pl.DataFrame:
    """Return batch ``batch`` of the stream: ``rows`` rows, in random time order.

    Args:
        spec: The scenario.
        batch: Batch index, 0-based; its day is :data:`START` plus ``batch`` days.
        rows: Number of rows.
        seed: Stream seed; every draw of the batch is seeded by it, the scenario and the batch.
    """
    rng = np.random.default_rng([seed, SCENARIOS.index(spec.name), batch])
    numeric, segment = _features(rng, rows, features_shifted(spec, batch))
    use_b = rng.random(rows) < share_of_b(spec, batch)
    if spec.task == "regression":
        value = np.where(use_b, value_b(numeric, segment), value_a(numeric, segment))
        target = pl.Series(TARGET, value + rng.normal(0, REGRESSION_NOISE, rows), dtype=pl.Float64)
    else:
        score = np.where(use_b, score_b(numeric, segment), score_a(numeric, segment))
        label = score + rng.normal(0, BOUNDARY_NOISE, rows) > 0
        if spec.name == "stationary_noise":
            label ^= rng.random(rows) < LABEL_NOISE
        target = pl.Series(TARGET, label.astype(np.int64), dtype=pl.Int64)
    seconds = rng.integers(0, DAY_SECONDS, rows)
    times = np.datetime64(START + timedelta(days=batch), "us") + seconds.astype("timedelta64[s]")
    columns = {TIME: pl.Series(TIME, times, dtype=pl.Datetime("us"))}
    columns.update({name: pl.Series(name, numeric[:, i], dtype=pl.Float64) for i, name in enumerate(NUMERIC)})
    columns[CATEGORICAL] = pl.Series(CATEGORICAL, np.array(SEGMENTS)[segment], dtype=pl.String)
    columns[TARGET] = target
    return pl.DataFrame(columns)


def make_stream(spec: Scenario, rows: int, seed: int) -> list[pl.DataFrame]:
    """Every batch of the scenario, oldest first."""
    return [make_batch(spec, batch, rows, seed) for batch in range(spec.batches)]


def _features(rng: np.random.Generator, rows: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    numeric = rng.normal(0.0, 1.0, (rows, len(NUMERIC)))
    if shifted:
        numeric[:, 0] += 1.5
        numeric[:, 1] *= 1.5
    segment = rng.choice(len(SEGMENTS), rows, p=_SEGMENT_P_SHIFTED if shifted else _SEGMENT_P)
    return numeric, segment


def score_a(numeric: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Concept A's decision score (label 1 when positive, before noise)."""
    x0, x1, x2, x3 = numeric[:, 0], numeric[:, 1], numeric[:, 2], numeric[:, 3]
    result: np.ndarray = 1.2 * x0 - 0.8 * x1 + 0.6 * x2 * x3 + _SEGMENT_A[segment]
    return result


def score_b(numeric: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Concept B's decision score: mostly opposed to A on x0, and driven by x4 and x1·x3."""
    x0, x1, x3, x4 = numeric[:, 0], numeric[:, 1], numeric[:, 3], numeric[:, 4]
    result: np.ndarray = -0.9 * x0 + 1.0 * x4 - 0.6 * x1 * x3 + _SEGMENT_B[segment]
    return result


def value_a(numeric: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Concept A's regression mean."""
    return 2.0 * score_a(numeric, segment)


def value_b(numeric: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Concept B's regression mean."""
    return 2.0 * score_b(numeric, segment)


def frame_arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The numeric features (rows × 5) and the segment codes of a stream batch."""
    numeric = frame.select(NUMERIC).to_numpy()
    segment = frame[CATEGORICAL].replace_strict({s: i for i, s in enumerate(SEGMENTS)}, return_dtype=pl.Int64)
    return numeric, segment.to_numpy()
