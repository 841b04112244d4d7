"""Drift statistics computed in polars and numpy: the fast path for big windows.

Reproduces the two methods Evidently picks by default on more than 1000 reference rows, on the full
frames instead of a sample:

* ``wasserstein``: the first Wasserstein distance divided by the reference's population standard
  deviation (at least 0.001), computed exactly from the two sorted columns;
* ``jensenshannon``: the Jensen-Shannon distance (natural log) between the two value distributions
  (numeric columns with more than 20 reference values are binned on Sturges edges over both sides).

Like Evidently, each column drops nulls, NaNs and infinities first, and a column drifts when its score
is at least its threshold. This module does not import Evidently; ``retrainer.monitor.evidently`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import polars as pl

from retrainer.config import DriftConfig
from retrainer.config.drift_methods import P_VALUE_METHODS, ColumnKind

FAST_METHODS = frozenset({"wasserstein", "jensenshannon"})
DEFAULT_THRESHOLD = 0.1
# Evidently switches from p-value tests to distances above this many reference rows.
EVIDENTLY_DISTANCE_ROWS = 1000
_FEW_VALUES = 5
_DEFAULTS = DriftConfig()
_BINNED_ABOVE = 20


@dataclass(frozen=True)
class ColumnDrift:
    """The drift verdict of one column.

    Attributes:
        column: Column name.
        kind: ``numerical`` or ``categorical``.
        method: Evidently's method name, or a retrainer rule (``unseen_categories``, ``all_null``).
        score: The method's score; ``None`` when a rule decided without one.
        threshold: The threshold the score was compared with.
        drifted: The verdict.
        note: Why a rule overrode the score, if one did.
    """

    column: str
    kind: ColumnKind
    method: str
    score: float | None
    threshold: float
    drifted: bool
    note: str | None = None

    @property
    def severity(self) -> float:
        """How far the score lies past its threshold, in the method's own direction (over 1: drifted).

        ``score / threshold`` for distances, ``threshold / score`` for p-values; infinite when a
        rule decided without a score or a p-value is 0. Used only to rank columns.
        """
        if self.score is None:
            return math.inf
        if self.method in P_VALUE_METHODS:
            return self.threshold / self.score if self.score > 0 else math.inf
        return self.score / self.threshold


@dataclass(frozen=True)
class ColumnKinds:
    """The columns a check covers, by kind."""

    numerical: list[str]
    categorical: list[str]

    def kind(self, column: str) -> ColumnKind:
        """The kind of ``column``."""
        return "categorical" if column in self.categorical else "numerical"

    @property
    def all(self) -> list[str]:
        """Every column, numerical first."""
        return [*self.numerical, *self.categorical]

    def without(self, dropped: set[str]) -> ColumnKinds:
        """The same kinds minus ``dropped``."""
        return ColumnKinds(
            [c for c in self.numerical if c not in dropped], [c for c in self.categorical if c not in dropped]
        )


def configured_method(config: DriftConfig, column: str, kind: ColumnKind) -> str | None:
    """The method the config asks for on ``column`` (``None``: Evidently's default choice)."""
    by_kind = config.cat_method if kind == "categorical" else config.num_method
    return config.per_column_method.get(column) or by_kind or config.method


def configured_threshold(config: DriftConfig, column: str) -> float:
    """The threshold the config asks for on ``column`` (default: 0.1, Evidently's for both distances)."""
    return config.per_column_threshold.get(column) or config.threshold or DEFAULT_THRESHOLD


def fast_path_applies(config: DriftConfig, kinds: ColumnKinds, reference_rows: int) -> bool:
    """True when every column's method is one the fast path reproduces exactly."""
    if reference_rows <= EVIDENTLY_DISTANCE_ROWS:
        return False
    numerical = {configured_method(config, c, "numerical") for c in kinds.numerical}
    categorical = {configured_method(config, c, "categorical") for c in kinds.categorical}
    # Wasserstein is for numbers only: Evidently refuses it on categories, so the fast path must too.
    return numerical <= FAST_METHODS | {None} and categorical <= {"jensenshannon", None}


def fast_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    kinds: ColumnKinds,
    config: DriftConfig,
    unconfigured: frozenset[str] = frozenset(),
) -> list[ColumnDrift]:
    """Per-column drift on the full frames (see the module docstring for the methods).

    Both frames must hold every column in ``kinds`` with at least one valid value on each side;
    callers screen empty and all-null columns first. Columns in ``unconfigured`` ignore ``config``
    and get Evidently's default method and threshold.
    """
    reference_numbers, reference_counts = _summaries(reference, kinds)
    current_numbers, current_counts = _summaries(current, kinds)
    settings = {c: _DEFAULTS if c in unconfigured else config for c in kinds.all}
    numerical = [
        _numerical_drift(column, reference_numbers[column], current_numbers[column], settings[column])
        for column in kinds.numerical
    ]
    categorical = [
        _categorical_drift(column, reference_counts[column], current_counts[column], settings[column])
        for column in kinds.categorical
    ]
    return [*numerical, *categorical]


def _summaries(frame: pl.DataFrame, kinds: ColumnKinds) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]]]:
    """Sorted finite values of each numerical column and value counts of each categorical one."""
    lazy = frame.lazy()
    numeric = [lazy.select(_finite(c).sort()) for c in kinds.numerical]
    counts = [lazy.select(_value_counts(c)) for c in kinds.categorical]
    # Collected together so that polars works on the columns in parallel.
    collected = pl.collect_all([*numeric, *counts])
    sorted_values = {part.columns[0]: part.to_series().to_numpy() for part in collected[: len(numeric)]}
    value_counts = {}
    for column, part in zip(kinds.categorical, collected[len(numeric) :], strict=True):
        rows = part.unnest(part.columns[0])
        value_counts[column] = dict(zip(rows[column].to_list(), rows[_count_name(column)].to_list(), strict=True))
    return sorted_values, value_counts


def _value_counts(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).drop_nulls().value_counts(name=_count_name(column))


def _count_name(column: str) -> str:
    # Derived from the column's own name so that the two fields of the count struct never clash.
    return f"{column}:count"


def _finite(column: str) -> pl.Expr:
    values = pl.col(column).cast(pl.Float64)
    return values.filter(values.is_finite())


def _numerical_drift(column: str, reference: np.ndarray, current: np.ndarray, config: DriftConfig) -> ColumnDrift:
    threshold = configured_threshold(config, column)
    method = configured_method(config, column, "numerical") or _default_numerical_method(reference, current)
    if method == "wasserstein":
        score = normed_wasserstein(reference, current)
    elif _distinct_sorted(reference).size > _BINNED_ABOVE:
        edges = sturges_edges(np.concatenate([reference, current]))
        score = jensen_shannon(np.histogram(reference, edges)[0], np.histogram(current, edges)[0])
    else:
        keys = np.union1d(_distinct_sorted(reference), _distinct_sorted(current))
        score = jensen_shannon(_sorted_counts(reference, keys), _sorted_counts(current, keys))
    return ColumnDrift(column, "numerical", method, score, threshold, score >= threshold)


def _categorical_drift(
    column: str, reference: dict[str, int], current: dict[str, int], config: DriftConfig
) -> ColumnDrift:
    threshold = configured_threshold(config, column)
    keys = sorted(set(reference) | set(current))
    score = jensen_shannon(
        np.array([reference.get(k, 0) for k in keys], dtype=float),
        np.array([current.get(k, 0) for k in keys], dtype=float),
    )
    return ColumnDrift(column, "categorical", "jensenshannon", score, threshold, score >= threshold)


def _default_numerical_method(reference: np.ndarray, current: np.ndarray) -> str:
    distinct = np.union1d(_distinct_sorted(reference)[: _FEW_VALUES + 1], _distinct_sorted(current)[: _FEW_VALUES + 1])
    return "jensenshannon" if distinct.size <= _FEW_VALUES else "wasserstein"


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values
    starts: np.ndarray = np.concatenate([[True], values[1:] != values[:-1]])
    return np.asarray(values[starts])


def _sorted_counts(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    left = np.searchsorted(values, keys, side="left")
    right = np.searchsorted(values, keys, side="right")
    return (right - left).astype(float)


def normed_wasserstein(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> float:
    """First Wasserstein distance of two sorted samples over the reference's std (floored at 0.001).

    Exact: the integral of |Q_ref(u) - Q_cur(u)| over the merged steps of both quantile functions.
    """
    norm = max(float(np.std(reference_sorted)), 0.001)
    if reference_sorted.size == current_sorted.size:
        # Equal sizes: both quantile functions step together, so the integral is a mean of gaps.
        return float(np.mean(np.abs(reference_sorted - current_sorted))) / norm
    widths, reference_index, current_index = _quantile_steps(reference_sorted.size, current_sorted.size)
    gap = np.abs(reference_sorted[reference_index] - current_sorted[current_index])
    return float(np.dot(gap, widths)) / norm


@lru_cache(maxsize=4)
def _quantile_steps(n_ref: int, n_cur: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Widths of the merged steps of two empirical quantile functions and each side's index on them.

    Cached: every column of a window without missing values shares the same sizes.
    """
    steps = np.union1d(np.arange(n_ref) / n_ref, np.arange(n_cur) / n_cur)
    widths = np.diff(np.append(steps, 1.0))
    return widths, _step_index(steps, n_ref), _step_index(steps, n_cur)


def _step_index(steps: np.ndarray, size: int) -> np.ndarray:
    # The tiny offset keeps u = i/size on step i despite floating-point rounding of i/size * size.
    return np.minimum(np.floor(steps * size + 1e-9).astype(np.int64), size - 1)


def sturges_edges(values: np.ndarray) -> np.ndarray:
    """Bin edges as ``numpy.histogram_bin_edges(values, bins="sturges")`` computes them."""
    return np.histogram_bin_edges(values, bins="sturges")


def jensen_shannon(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) of two count vectors over the same keys."""
    p = reference_counts / reference_counts.sum()
    q = current_counts / current_counts.sum()
    m = (p + q) / 2
    divergence = (_kl(p, m) + _kl(q, m)) / 2
    return math.sqrt(max(divergence, 0.0))


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / m[mask])))


def dataset_verdict(columns: list[ColumnDrift], drift_share: float) -> tuple[float, bool]:
    """Share of drifted columns and the dataset verdict (share at least ``drift_share``)."""
    if not columns:
        return 0.0, False
    share = sum(c.drifted for c in columns) / len(columns)
    return share, share >= drift_share
