"""Large-sample bounds: DeLong for ROC AUC and the paired mean for per-row metrics.

They must give the bootstrap's answer on a big holdout (checked side by side), cover a known
difference at their stated confidence, and be chosen by the judgement only from
``large_sample_rows`` rows on.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from retrainer.config import PromotionPolicy
from retrainer.judge.bootstrap import paired_bounds
from retrainer.judge.normal_bounds import has_normal_bound, normal_bounds
from retrainer.judge.policy import HoldoutScores, judge


def _pair(seed: int, rows: int, gain: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated probability models; the challenger separates the classes by ``gain`` more."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.3).astype(np.int64)
    shared = rng.normal(0, 1, rows)
    champion = 1 / (1 + np.exp(-(1.0 * (2 * y - 1) + shared + rng.normal(0, 0.5, rows))))
    challenger = 1 / (1 + np.exp(-((1.0 + gain) * (2 * y - 1) + shared + rng.normal(0, 0.5, rows))))
    # Four decimals: tied scores within and across the classes, as boosted trees produce.
    return y, np.round(champion, 4), np.round(challenger, 4)


def test_delong_improvement_is_the_difference_of_the_two_aucs() -> None:
    y, champion, challenger = _pair(1, 5_000, 0.1)
    bound = normal_bounds("binary", ["roc_auc"], y, champion, challenger, confidence=0.95)["roc_auc"]
    assert bound.method == "delong" and bound.defined == 5_000
    assert bound.mean == pytest.approx(roc_auc_score(y, challenger) - roc_auc_score(y, champion), abs=1e-12)


def test_paired_mean_improvement_is_sign_adjusted() -> None:
    y, champion, challenger = _pair(2, 5_000, 0.1)
    bound = normal_bounds("binary", ["log_loss"], y, champion, challenger, confidence=0.95)["log_loss"]
    assert bound.method == "normal"
    # Lower is better for log loss: a positive improvement means the challenger's loss is smaller.
    assert bound.mean == pytest.approx(log_loss(y, champion) - log_loss(y, challenger), rel=1e-9)
    assert bound.mean > 0


@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("metric", ["roc_auc", "log_loss", "accuracy"])
def test_large_sample_bound_agrees_with_the_bootstrap_on_a_big_holdout(seed: int, metric: str) -> None:
    y, champion, challenger = _pair(seed, 20_000, 0.03)
    normal = normal_bounds("binary", [metric], y, champion, challenger, confidence=0.95)[metric]
    resampled = paired_bounds("binary", [metric], y, champion, challenger, confidence=0.95, resamples=2000, seed=seed)
    boot = resampled[metric]
    half_width = boot.mean - boot.lower
    assert half_width > 0
    # Within 8 % of the half-width of the interval: the bootstrap's own Monte Carlo error at 2000
    # resamples is of that order.
    assert abs(normal.lower - boot.lower) <= 0.08 * half_width, (normal, boot)


def _binormal(seed: int, rows: int, separation: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores whose within-class spread is N(0, 2): the population AUC of separation s is Φ(s / 2)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    shared = rng.normal(0, 1, rows)
    a, b = separation
    return y, a * y + shared + rng.normal(0, 1, rows), b * y + shared + rng.normal(0, 1, rows)


def test_delong_bound_covers_a_known_auc_difference() -> None:
    separation = (1.0, 1.2)
    phi = NormalDist().cdf
    true_gain = phi(separation[1] / 2) - phi(separation[0] / 2)
    bounds = np.array(
        [
            normal_bounds("binary", ["roc_auc"], *_binormal(seed, 2_000, separation), confidence=0.9)["roc_auc"].lower
            for seed in range(300)
        ]
    )
    coverage = float((bounds <= true_gain).mean())
    assert 0.85 <= coverage <= 0.95, f"coverage {coverage:.3f} of the 90% lower bound"
    assert 0 < float(np.median(bounds)) < true_gain


def test_no_auc_difference_rarely_looks_like_an_improvement() -> None:
    bounds = np.array(
        [
            normal_bounds("binary", ["roc_auc"], *_binormal(seed, 2_000, (1.0, 1.0)), confidence=0.9)["roc_auc"].lower
            for seed in range(1_000, 1_300)
        ]
    )
    assert float((bounds > 0).mean()) <= 0.15


def test_one_class_holdout_has_no_auc_bound() -> None:
    y = np.zeros(100, dtype=np.int64)
    scores = np.linspace(0, 1, 100)
    bound = normal_bounds("binary", ["roc_auc"], y, scores, scores[::-1], confidence=0.95)["roc_auc"]
    assert np.isnan(bound.lower) and bound.defined == 0


def test_metrics_without_a_large_sample_bound_are_refused() -> None:
    assert not has_normal_bound("binary", "f1") and not has_normal_bound("regression", "rmse")
    assert has_normal_bound("regression", "mae") and has_normal_bound("multiclass", "log_loss")
    y, champion, challenger = _pair(6, 100, 0.1)
    with pytest.raises(ValueError, match="f1"):
        normal_bounds("binary", ["f1"], y, champion, challenger, confidence=0.95)


def _methods(rows: int, large_sample_rows: int | None) -> dict[str, str | None]:
    y, champion, challenger = _pair(7, rows, 0.3)
    policy = PromotionPolicy(
        guardrails={"log_loss": 0.01, "f1": 0.05}, resamples=1000, large_sample_rows=large_sample_rows
    )
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), policy)
    assert judgement.verdict == "promote"
    return {m.metric: m.bound_method for m in judgement.metrics if m.lower_bound is not None}


def test_judgement_uses_large_sample_bounds_only_from_the_configured_size() -> None:
    assert _methods(3_000, 2_000) == {"roc_auc": "delong", "log_loss": "normal", "f1": "bootstrap"}
    assert _methods(1_500, 2_000) == {"roc_auc": "bootstrap", "log_loss": "bootstrap", "f1": "bootstrap"}
    assert _methods(3_000, None) == {"roc_auc": "bootstrap", "log_loss": "bootstrap", "f1": "bootstrap"}
