"""The promotion decision: a pure function of holdout scores and a policy.

A challenger is promoted only when **every** rule passes:

* the holdout has at least ``min_holdout_rows`` rows and the challenger's predictions are finite;
* every ``floors`` metric meets its bound (≥ for higher-is-better metrics, ≤ for lower-is-better),
  also for the first model;
* with a champion: the one-sided lower confidence bound of the challenger's improvement on the
  primary metric, on identical rows, exceeds ``min_improvement``; every guardrail
  metric is worse by at most its tolerance; and on every slice value with at least
  ``min_slice_rows`` rows the primary metric is worse by at most ``slice_tolerance``.

Ties keep the champion, because a zero improvement never exceeds a bound of zero.

The bound is a paired bootstrap (``resamples`` resamples of the rows, the same for both models).
From ``large_sample_rows`` holdout rows on, metrics that have one use a large-sample bound instead
(:mod:`retrainer.judge.normal_bounds`: DeLong for ROC AUC, the paired mean for log loss, accuracy and MAE),
which the bootstrap converges to at that size: a fraction of a second instead of tens of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from retrainer.config import PromotionPolicy
from retrainer.config.metrics import HIGHER_IS_BETTER, TaskKind, orientation
from retrainer.judge.bootstrap import BoundMethod, PairedBound, paired_bounds
from retrainer.judge.metrics import point_metric, point_metrics
from retrainer.judge.normal_bounds import has_normal_bound, normal_bounds

Verdict = Literal["promote", "reject"]


@dataclass(frozen=True)
class HoldoutScores:
    """Predictions of both models on the **same** holdout rows.

    Attributes:
        y: Labels (class indices or values).
        challenger: Challenger outputs, row-aligned with ``y``.
        champion: Champion outputs, or ``None`` when there is no champion yet.
        slices: Slice column → per-row value (as text), row-aligned with ``y``.
    """

    y: np.ndarray
    challenger: np.ndarray
    champion: np.ndarray | None = None
    slices: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One checked rule: its name, whether it passed, and the numbers behind it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class MetricRow:
    """One metric on the holdout; ``improvement`` is sign-adjusted (positive = challenger better)."""

    metric: str
    challenger: float
    champion: float | None
    improvement: float | None
    lower_bound: float | None
    bound_method: BoundMethod | None = None


@dataclass(frozen=True)
class SliceRow:
    """The primary metric on one slice value."""

    column: str
    value: str
    rows: int
    challenger: float
    champion: float
    improvement: float
    judged: bool


@dataclass(frozen=True)
class Judgement:
    """The decision with everything that led to it."""

    verdict: Verdict
    primary: str
    first_model: bool
    holdout_rows: int
    rules: list[Rule]
    metrics: list[MetricRow]
    slices: list[SliceRow]
    notes: list[str]

    @property
    def failures(self) -> list[Rule]:
        """Every rule that failed (empty when promoted)."""
        return [rule for rule in self.rules if not rule.passed]

    @property
    def reasons(self) -> list[str]:
        """Failed rules as sentences; for a promotion, the rules that carried it."""
        chosen = self.failures or self.rules
        return [f"{rule.name}: {rule.detail}" for rule in chosen]


def judge(task: TaskKind, primary: str, scores: HoldoutScores, policy: PromotionPolicy) -> Judgement:
    """Decide whether the challenger should replace the champion; see the module docstring."""
    usable, notes = _usable_rows(scores)
    rules = [_holdout_size(len(scores.y), policy), _finite_predictions(scores.challenger)]
    rows = scores.y[usable]
    challenger_values = point_metrics(task, rows, scores.challenger[usable])
    rules += [_floor(name, bound, challenger_values[name]) for name, bound in sorted(policy.floors.items())]
    metric_rows = [MetricRow(name, value, None, None, None) for name, value in challenger_values.items()]
    slice_rows: list[SliceRow] = []
    if scores.champion is not None:
        paired = _Paired(scores.y[usable], scores.champion[usable], scores.challenger[usable])
        metric_rows = _compare(task, primary, paired, challenger_values, policy)
        rules.append(_primary_rule(primary, metric_rows, policy))
        rules += [_guardrail(m, policy.guardrails[m.metric]) for m in metric_rows if m.metric in policy.guardrails]
        slice_values = {column: values[usable] for column, values in scores.slices.items()}
        slice_rows = _slice_rows(task, primary, paired, slice_values, policy)
        rules += [_slice_rule(s, policy) for s in slice_rows if s.judged]
    rules.sort(key=_rule_rank)
    verdict: Verdict = "promote" if all(rule.passed for rule in rules) else "reject"
    return Judgement(verdict, primary, scores.champion is None, len(scores.y), rules, metric_rows, slice_rows, notes)


_RULE_ORDER = ("improvement", "floor", "guardrail", "slice", "holdout_size", "finite_predictions")


def _rule_rank(rule: Rule) -> int:
    return _RULE_ORDER.index(rule.name.split(":")[0])


def _usable_rows(scores: HoldoutScores) -> tuple[np.ndarray, list[str]]:
    finite = _finite_rows(scores.challenger)
    notes = []
    if scores.champion is not None:
        champion_finite = _finite_rows(scores.champion)
        if not champion_finite.all():
            notes.append(f"champion predicted NaN on {int((~champion_finite).sum())} rows; they are not compared")
        finite &= champion_finite
    return finite, notes


def _finite_rows(pred: np.ndarray) -> np.ndarray:
    finite: np.ndarray = np.isfinite(pred)
    return np.asarray(finite.all(axis=1)) if finite.ndim == 2 else finite


def _holdout_size(rows: int, policy: PromotionPolicy) -> Rule:
    passed = rows >= policy.min_holdout_rows
    return Rule("holdout_size", passed, f"{rows} rows (minimum {policy.min_holdout_rows})")


def _finite_predictions(challenger: np.ndarray) -> Rule:
    bad = int((~_finite_rows(challenger)).sum())
    return Rule("finite_predictions", bad == 0, f"challenger predicted NaN/inf on {bad} rows")


def _floor(metric: str, bound: float, value: float) -> Rule:
    name = f"floor:{metric}"
    if not np.isfinite(value):
        return Rule(name, False, f"{metric} is undefined on this holdout")
    higher = HIGHER_IS_BETTER[metric]
    passed = value >= bound if higher else value <= bound
    return Rule(name, passed, f"{metric} {value:.4f} {'≥' if higher else '≤'} {bound:.4f} required")


@dataclass(frozen=True)
class _Paired:
    y: np.ndarray
    champion: np.ndarray
    challenger: np.ndarray


def _compare(
    task: TaskKind, primary: str, paired: _Paired, challenger_values: dict[str, float], policy: PromotionPolicy
) -> list[MetricRow]:
    champion_values = point_metrics(task, paired.y, paired.champion)
    bounds = _bounds(task, sorted({primary, *policy.guardrails}), paired, policy)
    rows = []
    for name, value in challenger_values.items():
        improvement = orientation(name) * (value - champion_values[name])
        bound = bounds.get(name)
        lower, method = (bound.lower, bound.method) if bound else (None, None)
        rows.append(MetricRow(name, value, champion_values[name], improvement, lower, method))
    return rows


def _bounds(task: TaskKind, metrics: list[str], paired: _Paired, policy: PromotionPolicy) -> dict[str, PairedBound]:
    large = policy.large_sample_rows is not None and len(paired.y) >= policy.large_sample_rows
    normal = [name for name in metrics if large and has_normal_bound(task, name)]
    bootstrapped = [name for name in metrics if name not in normal]
    bounds = normal_bounds(task, normal, paired.y, paired.champion, paired.challenger, confidence=policy.confidence)
    if bootstrapped:
        bounds |= paired_bounds(
            task,
            bootstrapped,
            paired.y,
            paired.champion,
            paired.challenger,
            confidence=policy.confidence,
            resamples=policy.resamples,
            seed=policy.seed,
        )
    return bounds


def _primary_rule(primary: str, metric_rows: list[MetricRow], policy: PromotionPolicy) -> Rule:
    row = next(m for m in metric_rows if m.metric == primary)
    name = f"improvement:{primary}"
    if row.lower_bound is None or not np.isfinite(row.lower_bound) or row.improvement is None:
        return Rule(name, False, f"{primary} is undefined on this holdout")
    passed = row.lower_bound > policy.min_improvement
    detail = (
        f"{primary} {row.champion:.4f} → {row.challenger:.4f} (improvement {row.improvement:+.4f}, "
        f"{policy.confidence * 100:g}% lower bound {row.lower_bound:+.4f} ({row.bound_method}) "
        f"must exceed {policy.min_improvement:+.4f})"
    )
    return Rule(name, passed, detail)


def _guardrail(row: MetricRow, tolerance: float) -> Rule:
    name = f"guardrail:{row.metric}"
    if row.improvement is None or not np.isfinite(row.improvement):
        return Rule(name, False, f"{row.metric} is undefined on this holdout")
    worse_by = -row.improvement
    change = f"{row.metric} {row.champion:.4f} → {row.challenger:.4f}"
    detail = f"{change} (worse by {max(worse_by, 0):.4f}, allowed {tolerance:.4f})"
    return Rule(name, worse_by <= tolerance, detail)


def _slice_rows(
    task: TaskKind, primary: str, paired: _Paired, slices: dict[str, np.ndarray], policy: PromotionPolicy
) -> list[SliceRow]:
    rows = []
    for column, values in sorted(slices.items()):
        for value in sorted(set(values.tolist())):
            mask = values == value
            challenger = point_metric(task, primary, paired.y[mask], paired.challenger[mask])
            champion = point_metric(task, primary, paired.y[mask], paired.champion[mask])
            improvement = orientation(primary) * (challenger - champion)
            judged = int(mask.sum()) >= policy.min_slice_rows and bool(np.isfinite(improvement))
            rows.append(SliceRow(column, str(value), int(mask.sum()), challenger, champion, improvement, judged))
    return rows


def _slice_rule(row: SliceRow, policy: PromotionPolicy) -> Rule:
    detail = (
        f"{row.rows} rows, {row.champion:.4f} → {row.challenger:.4f} "
        f"(change {row.improvement:+.4f}, allowed −{policy.slice_tolerance:.4f})"
    )
    return Rule(f"slice:{row.column}={row.value}", row.improvement >= -policy.slice_tolerance, detail)
