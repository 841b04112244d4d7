"""Decision rules of ``judge`` and its edge cases, on seeded synthetic holdouts."""

from __future__ import annotations

import numpy as np
import pytest

from retrainer.config import PromotionPolicy
from retrainer.judge.metrics import point_metric
from retrainer.judge.policy import HoldoutScores, Judgement, MetricRow, judge


def _policy(**overrides: object) -> PromotionPolicy:
    base: dict[str, object] = {
        "guardrails": {"log_loss": 0.01},
        "floors": {"roc_auc": 0.6},
        "min_holdout_rows": 100,
        "min_slice_rows": 200,
        "slice_tolerance": 0.02,
        "confidence": 0.95,
        "resamples": 1000,
    }
    base.update(overrides)
    return PromotionPolicy.model_validate(base)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1 / (1 + np.exp(-x))
    return result


def _labels(seed: int, rows: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, rows)


def _probs(seed: int, y: np.ndarray, strength: float) -> np.ndarray:
    """Positive-class probabilities whose ranking quality grows with ``strength``."""
    noise = np.random.default_rng(seed).normal(0, 1, len(y))
    return _sigmoid(strength * (2 * y - 1) + noise)


def _metric(judgement: Judgement, name: str) -> MetricRow:
    return next(row for row in judgement.metrics if row.metric == name)


def _failed(judgement: Judgement) -> list[str]:
    """Names of the failed rules, sorted (the order rules are reported in is presentation, not semantics)."""
    return sorted(rule.name for rule in judgement.failures)


def _rule_names(judgement: Judgement) -> list[str]:
    return sorted(rule.name for rule in judgement.rules)


def _binary_pair(rows: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, a weak champion (AUC ~0.80) and a clearly better challenger (AUC ~0.95)."""
    y = _labels(1, rows)
    return y, _probs(2, y, 0.6), _probs(3, y, 1.2)


# --- first model -------------------------------------------------------------------------------


def test_first_model_is_promoted_when_floors_are_met() -> None:
    y, _, challenger = _binary_pair()
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger), _policy())
    assert judgement.verdict == "promote"
    assert judgement.first_model is True
    assert judgement.failures == []
    assert _rule_names(judgement) == ["finite_predictions", "floor:roc_auc", "holdout_size"]
    assert judgement.slices == []
    row = _metric(judgement, "roc_auc")
    assert row.champion is None and row.improvement is None and row.lower_bound is None
    assert row.challenger == pytest.approx(point_metric("binary", "roc_auc", y, challenger))
    assert row.challenger > 0.9


def test_first_model_is_rejected_below_the_floor() -> None:
    y = _labels(1, 2000)
    useless = np.random.default_rng(9).random(len(y))
    judgement = judge("binary", "roc_auc", HoldoutScores(y, useless), _policy())
    assert judgement.verdict == "reject"
    assert judgement.first_model is True
    assert _failed(judgement) == ["floor:roc_auc"]
    auc = point_metric("binary", "roc_auc", y, useless)
    assert judgement.reasons == [f"floor:roc_auc: roc_auc {auc:.4f} ≥ 0.6000 required"]


# --- with a champion ---------------------------------------------------------------------------


def test_clearly_better_challenger_is_promoted() -> None:
    y, champion, challenger = _binary_pair()
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), _policy())
    assert judgement.verdict == "promote"
    assert judgement.first_model is False
    assert judgement.holdout_rows == 2000
    assert judgement.failures == []
    assert _rule_names(judgement) == [
        "finite_predictions",
        "floor:roc_auc",
        "guardrail:log_loss",
        "holdout_size",
        "improvement:roc_auc",
    ]
    assert judgement.reasons == [f"{rule.name}: {rule.detail}" for rule in judgement.rules]
    row = _metric(judgement, "roc_auc")
    assert row.champion is not None and row.improvement is not None and row.lower_bound is not None
    assert row.improvement == pytest.approx(row.challenger - row.champion)
    assert row.champion == pytest.approx(point_metric("binary", "roc_auc", y, champion))
    assert 0 < row.lower_bound < row.improvement
    # Only the primary metric and guardrails are bootstrapped.
    assert _metric(judgement, "log_loss").lower_bound is not None
    assert _metric(judgement, "accuracy").lower_bound is None
    # log_loss is lower-is-better: a smaller value is a positive improvement.
    log_loss = _metric(judgement, "log_loss")
    assert log_loss.champion is not None and log_loss.challenger < log_loss.champion
    assert log_loss.improvement == pytest.approx(log_loss.champion - log_loss.challenger)


def test_tie_keeps_the_champion() -> None:
    y, champion, _ = _binary_pair()
    judgement = judge("binary", "roc_auc", HoldoutScores(y, champion.copy(), champion), _policy())
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["improvement:roc_auc"]
    row = _metric(judgement, "roc_auc")
    assert row.improvement == 0.0
    assert row.lower_bound == 0.0
    assert judgement.reasons[0].startswith("improvement:roc_auc: ")
    assert "lower bound +0.0000 (bootstrap) must exceed +0.0000" in judgement.reasons[0]


def _slight_gain(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    base = rng.normal(0, 1, rows) + 0.8 * (2 * y - 1)
    challenger = _sigmoid(base + 0.3 * rng.normal(0, 1, rows) + 0.05 * (2 * y - 1))
    return y, _sigmoid(base), challenger


def test_slightly_better_but_not_significant_is_rejected_on_a_small_holdout() -> None:
    y, champion, challenger = _slight_gain(1, 150)
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), _policy())
    row = _metric(judgement, "roc_auc")
    assert row.improvement is not None and row.lower_bound is not None
    assert row.improvement > 0.005  # the point estimate favours the challenger ...
    assert row.lower_bound < 0  # ... but the bound does not
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["improvement:roc_auc"]


def test_guardrail_breach_rejects_even_with_better_auc() -> None:
    y = _labels(1, 2000)
    champion = _probs(2, y, 0.6)
    sharper = _probs(4, y, 0.8)
    logit = np.log(sharper / (1 - sharper))
    overconfident = _sigmoid(6 * logit)  # same ranking, badly calibrated
    judgement = judge("binary", "roc_auc", HoldoutScores(y, overconfident, champion), _policy())
    auc = _metric(judgement, "roc_auc")
    assert auc.lower_bound is not None and auc.lower_bound > 0
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["guardrail:log_loss"]
    log_loss = _metric(judgement, "log_loss")
    assert log_loss.champion is not None and log_loss.improvement is not None
    assert log_loss.challenger - log_loss.champion > 0.1
    (reason,) = judgement.reasons
    expected = (
        f"guardrail:log_loss: log_loss {log_loss.champion:.4f} → {log_loss.challenger:.4f} "
        f"(worse by {-log_loss.improvement:.4f}, allowed 0.0100)"
    )
    assert reason == expected


def test_guardrail_within_tolerance_passes() -> None:
    y, champion, challenger = _binary_pair()
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), _policy(guardrails={"f1": 0.5}))
    guard = next(rule for rule in judgement.rules if rule.name == "guardrail:f1")
    assert guard.passed is True
    assert judgement.verdict == "promote"


def test_floor_breach_rejects_a_better_challenger() -> None:
    y, champion, challenger = _binary_pair()
    policy = _policy(floors={"roc_auc": 0.99, "log_loss": 0.5})
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), policy)
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["floor:roc_auc"]  # log_loss (~0.35) is within its ≤ 0.5 floor
    (reason,) = judgement.reasons
    auc = _metric(judgement, "roc_auc").challenger
    assert reason == f"floor:roc_auc: roc_auc {auc:.4f} ≥ 0.9900 required"
    log_loss_rule = next(rule for rule in judgement.rules if rule.name == "floor:log_loss")
    assert log_loss_rule.passed and "≤ 0.5000 required" in log_loss_rule.detail


def test_lower_is_better_floor_breach() -> None:
    y, champion, challenger = _binary_pair()
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), _policy(floors={"log_loss": 0.1}))
    assert _failed(judgement) == ["floor:log_loss"]


# --- slices ------------------------------------------------------------------------------------


def test_worse_slice_rejects_while_small_slice_is_not_judged() -> None:
    y, champion, challenger = _binary_pair()
    index = np.arange(len(y))
    plan = np.where(index < 600, "pro", np.where(index < 650, "enterprise", "basic"))
    degraded = challenger.copy()
    other = plan != "basic"
    degraded[other] = _probs(5, y[other], 0.1)  # nearly useless on pro and enterprise
    scores = HoldoutScores(y, degraded, champion, slices={"plan": plan})
    judgement = judge("binary", "roc_auc", scores, _policy())
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["slice:plan=pro"]
    by_value = {row.value: row for row in judgement.slices}
    assert sorted(by_value) == ["basic", "enterprise", "pro"]
    assert [(by_value[v].rows, by_value[v].judged) for v in ("basic", "enterprise", "pro")] == [
        (1350, True),
        (50, False),
        (600, True),
    ]
    # The small slice got worse too, by far more than the tolerance, but has no rule.
    assert by_value["enterprise"].improvement < -0.02
    assert not any(rule.name == "slice:plan=enterprise" for rule in judgement.rules)
    pro = by_value["pro"]
    assert pro.improvement == pytest.approx(pro.challenger - pro.champion)
    assert pro.improvement < -0.2
    (reason,) = judgement.reasons
    assert reason.startswith("slice:plan=pro: 600 rows, ")
    assert f"(change {pro.improvement:+.4f}, allowed −0.0200)" in reason


def test_slice_within_tolerance_passes() -> None:
    y, champion, challenger = _binary_pair()
    plan = np.where(np.arange(len(y)) % 2 == 0, "basic", "pro")
    scores = HoldoutScores(y, challenger, champion, slices={"plan": plan})
    judgement = judge("binary", "roc_auc", scores, _policy())
    assert judgement.verdict == "promote"
    assert [name for name in _rule_names(judgement) if name.startswith("slice:")] == [
        "slice:plan=basic",
        "slice:plan=pro",
    ]


# --- holdout problems --------------------------------------------------------------------------


def test_tiny_holdout_is_rejected() -> None:
    y, champion, challenger = _binary_pair(rows=60)
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), _policy())
    assert judgement.verdict == "reject"
    assert "holdout_size" in _failed(judgement)
    assert "holdout_size: 60 rows (minimum 100)" in judgement.reasons
    first = judge("binary", "roc_auc", HoldoutScores(y, challenger), _policy())
    assert _failed(first) == ["holdout_size"]


def test_one_class_holdout_is_rejected_without_an_exception() -> None:
    y = np.zeros(500, dtype=np.int64)
    rng = np.random.default_rng(8)
    champion, challenger = rng.random(500) * 0.5, rng.random(500) * 0.4
    scores = HoldoutScores(y, challenger, champion, slices={"plan": np.array(["basic", "pro"] * 250)})
    judgement = judge("binary", "roc_auc", scores, _policy())
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["floor:roc_auc", "improvement:roc_auc"]
    assert "floor:roc_auc: roc_auc is undefined on this holdout" in judgement.reasons
    assert "improvement:roc_auc: roc_auc is undefined on this holdout" in judgement.reasons
    assert all("undefined" in reason for reason in judgement.reasons)
    assert np.isnan(_metric(judgement, "roc_auc").challenger)
    # Slices with an undefined primary metric are reported but not judged.
    assert [row.judged for row in judgement.slices] == [False, False]


def test_nan_in_challenger_predictions_is_rejected() -> None:
    y, champion, challenger = _binary_pair()
    broken = challenger.copy()
    broken[[3, 70, 1999]] = [np.nan, np.inf, np.nan]
    judgement = judge("binary", "roc_auc", HoldoutScores(y, broken, champion), _policy())
    assert judgement.verdict == "reject"
    assert _failed(judgement) == ["finite_predictions"]
    assert judgement.reasons == ["finite_predictions: challenger predicted NaN/inf on 3 rows"]
    # The other rules were still evaluated on the finite rows.
    assert np.isfinite(_metric(judgement, "roc_auc").challenger)
    first = judge("binary", "roc_auc", HoldoutScores(y, broken), _policy())
    assert _failed(first) == ["finite_predictions"]


def test_nan_in_champion_predictions_excludes_rows_and_records_a_note() -> None:
    y, champion, challenger = _binary_pair()
    broken = champion.copy()
    missing = [0, 5, 10, 500, 1500]
    broken[missing] = np.nan
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, broken), _policy())
    assert judgement.verdict == "promote"
    assert judgement.notes == ["champion predicted NaN on 5 rows; they are not compared"]
    assert judgement.holdout_rows == 2000
    keep = np.ones(len(y), dtype=bool)
    keep[missing] = False
    row = _metric(judgement, "roc_auc")
    assert row.champion == pytest.approx(point_metric("binary", "roc_auc", y[keep], champion[keep]), rel=1e-12)
    assert row.challenger == pytest.approx(point_metric("binary", "roc_auc", y[keep], challenger[keep]), rel=1e-12)
    assert row.challenger != pytest.approx(point_metric("binary", "roc_auc", y, challenger), rel=1e-12)


def test_no_note_when_champion_is_finite() -> None:
    y, champion, challenger = _binary_pair()
    assert judge("binary", "roc_auc", HoldoutScores(y, challenger, champion), _policy()).notes == []


def test_every_failed_rule_is_listed() -> None:
    y = _labels(1, 80)
    champion = _probs(2, y, 1.0)
    weak = np.random.default_rng(6).random(80)
    weak[:2] = np.nan
    plan = np.array(["basic"] * 80)
    policy = _policy(min_slice_rows=50, floors={"roc_auc": 0.9, "accuracy": 0.95})
    judgement = judge("binary", "roc_auc", HoldoutScores(y, weak, champion, slices={"plan": plan}), policy)
    assert judgement.verdict == "reject"
    assert _failed(judgement) == [
        "finite_predictions",
        "floor:accuracy",
        "floor:roc_auc",
        "guardrail:log_loss",
        "holdout_size",
        "improvement:roc_auc",
        "slice:plan=basic",
    ]
    assert len(judgement.reasons) == 7
    assert all(rule.passed is False for rule in judgement.rules)


# --- other tasks -------------------------------------------------------------------------------


def _softmax_probs(seed: int, y: np.ndarray, strength: float, classes: int = 3) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(0, 1, (len(y), classes))
    logits[np.arange(len(y)), y] += strength
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


def test_multiclass_better_challenger_is_promoted_and_worse_rejected() -> None:
    y = np.random.default_rng(1).integers(0, 3, 1500)
    champion, challenger = _softmax_probs(2, y, 1.0), _softmax_probs(3, y, 2.0)
    policy = _policy(guardrails={"log_loss": 0.02}, floors={"accuracy": 0.5})
    better = judge("multiclass", "macro_f1", HoldoutScores(y, challenger, champion), policy)
    assert better.verdict == "promote"
    assert [m.metric for m in better.metrics] == ["macro_f1", "accuracy", "log_loss"]
    row = _metric(better, "macro_f1")
    assert row.lower_bound is not None and row.lower_bound > 0
    assert row.champion == pytest.approx(point_metric("multiclass", "macro_f1", y, champion))
    worse = judge("multiclass", "macro_f1", HoldoutScores(y, champion, challenger), policy)
    assert worse.verdict == "reject"
    assert _failed(worse) == ["guardrail:log_loss", "improvement:macro_f1"]


def test_multiclass_nan_row_in_probability_matrix() -> None:
    y = np.random.default_rng(1).integers(0, 3, 1500)
    champion, challenger = _softmax_probs(2, y, 1.0), _softmax_probs(3, y, 2.0)
    challenger[7, 1] = np.nan
    judgement = judge(
        "multiclass", "macro_f1", HoldoutScores(y, challenger, champion), _policy(guardrails={}, floors={})
    )
    assert _failed(judgement) == ["finite_predictions"]
    assert judgement.reasons == ["finite_predictions: challenger predicted NaN/inf on 1 rows"]


def test_regression_lower_rmse_is_an_improvement() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(100, 20, 1000)
    champion = y + rng.normal(0, 10, 1000)
    challenger = y + rng.normal(0, 5, 1000)
    policy = _policy(guardrails={"mae": 0.0}, floors={"rmse": 8.0})
    better = judge("regression", "rmse", HoldoutScores(y, challenger, champion), policy)
    assert better.verdict == "promote"
    rmse = _metric(better, "rmse")
    assert rmse.champion is not None and rmse.improvement is not None and rmse.lower_bound is not None
    assert rmse.challenger < rmse.champion
    assert rmse.improvement == pytest.approx(rmse.champion - rmse.challenger)
    assert rmse.improvement > 4 and rmse.lower_bound > 0
    r2_improvement = _metric(better, "r2").improvement
    assert r2_improvement is not None and r2_improvement > 0  # higher-is-better metric, same direction
    worse = judge("regression", "rmse", HoldoutScores(y, champion, challenger), policy)
    assert worse.verdict == "reject"
    assert _failed(worse) == ["floor:rmse", "guardrail:mae", "improvement:rmse"]
    worse_rmse = _metric(worse, "rmse")
    assert worse_rmse.improvement == pytest.approx(-rmse.improvement)
    assert f"floor:rmse: rmse {worse_rmse.challenger:.4f} ≤ 8.0000 required" in worse.reasons


# --- determinism -------------------------------------------------------------------------------


def test_same_inputs_give_identical_judgements() -> None:
    y, champion, challenger = _slight_gain(4, 300)
    plan = np.where(np.arange(len(y)) % 3 == 0, "pro", "basic")
    scores = HoldoutScores(y, challenger, champion, slices={"plan": plan})
    policy = _policy(min_slice_rows=50)
    first = judge("binary", "roc_auc", scores, policy)
    second = judge(
        "binary", "roc_auc", HoldoutScores(y.copy(), challenger.copy(), champion.copy(), {"plan": plan}), policy
    )
    assert first == second
    assert first.reasons == second.reasons
    reseeded = judge("binary", "roc_auc", scores, _policy(min_slice_rows=50, seed=1))
    assert _metric(reseeded, "roc_auc").lower_bound != _metric(first, "roc_auc").lower_bound


def test_all_champion_predictions_nan_is_rejected_not_raised() -> None:
    y, champion, challenger = _binary_pair(rows=300)
    judgement = judge("binary", "roc_auc", HoldoutScores(y, challenger, np.full_like(champion, np.nan)), _policy())
    assert judgement.verdict == "reject"
