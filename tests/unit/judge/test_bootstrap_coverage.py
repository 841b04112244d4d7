"""Calibration of the paired bootstrap: coverage of a known accuracy difference.

Each simulated holdout draws, per row, whether the champion (a) and challenger (b) classify it
correctly from a fixed joint distribution::

    P(both right) = 0.75    P(only a right) = 0.07    P(only b right) = 0.07 + delta

so the population accuracy difference b - a is exactly ``delta``, and the two models are paired
(strongly correlated) as real champion/challenger pairs are.
"""

from __future__ import annotations

import numpy as np

from retrainer.judge.bootstrap import paired_bounds

ROWS = 400
DATASETS = 150
RESAMPLES = 1000
CONFIDENCE = 0.9
BOTH_RIGHT = 0.75
ONLY_A_RIGHT = 0.07
RESAMPLE_SEED_OFFSET = 1_000_000


def _holdout(seed: int, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, champion and challenger probabilities with accuracy difference ``delta`` in the population."""
    rng = np.random.default_rng(seed)
    only_b_right = ONLY_A_RIGHT + delta
    cells = [BOTH_RIGHT, ONLY_A_RIGHT, only_b_right, 1 - BOTH_RIGHT - ONLY_A_RIGHT - only_b_right]
    cell = rng.choice(4, ROWS, p=cells)
    a_right = (cell == 0) | (cell == 1)
    b_right = (cell == 0) | (cell == 2)
    y = rng.integers(0, 2, ROWS)
    return y, _predict(y, a_right), _predict(y, b_right)


def _predict(y: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Probability 0.8 on the predicted class: the true class where ``right``, the other one elsewhere."""
    predicted = np.where(right, y, 1 - y)
    return np.where(predicted == 1, 0.8, 0.2)


def _lower_bounds(delta: float, first_seed: int) -> np.ndarray:
    bounds = []
    for seed in range(first_seed, first_seed + DATASETS):
        y, champion, challenger = _holdout(seed, delta)
        result = paired_bounds(
            "binary",
            ["accuracy"],
            y,
            champion,
            challenger,
            confidence=CONFIDENCE,
            resamples=RESAMPLES,
            seed=RESAMPLE_SEED_OFFSET + seed,  # resamples independent of the data draw
        )["accuracy"]
        assert result.defined == RESAMPLES
        bounds.append(result.lower)
    return np.array(bounds)


def test_simulation_has_the_intended_difference() -> None:
    differences = []
    for seed in range(20):
        y, champion, challenger = _holdout(seed, 0.03)
        a = ((champion >= 0.5) == (y == 1)).mean()
        b = ((challenger >= 0.5) == (y == 1)).mean()
        differences.append(b - a)
    assert abs(float(np.mean(differences)) - 0.03) < 0.01
    assert 0.78 < a < 0.88  # P(a right) = 0.82


def test_lower_bound_covers_a_known_difference() -> None:
    delta = 0.03
    bounds = _lower_bounds(delta, first_seed=1_000)
    coverage = float((bounds <= delta).mean())
    assert 0.83 <= coverage <= 0.97, f"coverage {coverage:.3f} of the {CONFIDENCE:.0%} lower bound"
    # The bound is informative, not trivially low: it sits below delta by roughly 1.28 standard errors.
    assert 0.0 < float(np.median(bounds)) < delta


def test_no_difference_rarely_looks_like_an_improvement() -> None:
    bounds = _lower_bounds(0.0, first_seed=5_000)
    false_promotions = float((bounds > 0).mean())
    assert false_promotions <= 0.15, f"false promotion rate {false_promotions:.3f}"
    assert float(np.median(bounds)) < 0
