"""Choosing the challenger among candidate training windows, with the confidence corrected for the choice.

Each candidate (see ``retrainer.cycle.plan.Window``) trained on rows before the holdout and is
judged on the same holdout rows as the champion. Picking the best of ``m`` candidates on that
holdout would let a challenger that is no better pass more often than the policy's confidence
allows, so every bound is computed at the Bonferroni-corrected confidence ``1 - (1 - c) / m``: the
chance that the chosen candidate's bound overstates its improvement stays at most ``1 - c``. The
chosen candidate is the one whose judgement promotes with the highest lower bound on the primary
metric (without a champion: the best primary metric); ties go to the wider window. The final
judgement of the registered challenger, scored as served, uses the same corrected confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrainer.config import PromotionPolicy
from retrainer.config.metrics import TaskKind, orientation
from retrainer.cycle.plan import Window
from retrainer.judge.policy import HoldoutScores, Judgement, judge
from retrainer.model.training import TrainedModel


@dataclass(frozen=True)
class WindowScore:
    """How one candidate did on the holdout.

    Attributes:
        name: The window's name (``newest``, ``newest+3``).
        rows: Its training rows.
        value: Its primary metric on the holdout.
        improvement: Sign-adjusted improvement over the champion (None without a champion).
        lower_bound: The corrected lower confidence bound of that improvement.
        promotes: Whether its judgement passed every rule.
    """

    name: str
    rows: int
    value: float
    improvement: float | None
    lower_bound: float | None
    promotes: bool


@dataclass(frozen=True)
class WindowChoice:
    """The candidates' scores, which one is the challenger and the confidence used for every bound."""

    chosen: int
    scores: list[WindowScore]
    confidence: float
    nominal_confidence: float

    @property
    def note(self) -> str:
        """One sentence for the decision record."""
        chosen = self.scores[self.chosen]
        if len(self.scores) == 1:
            return f"challenger trained on window {chosen.name} ({chosen.rows} rows)"
        return (
            f"challenger: window {chosen.name} ({chosen.rows} rows), chosen among {len(self.scores)} candidates on"
            f" this holdout; bounds at {self.confidence:.2%} confidence ({self.nominal_confidence:.0%}"
            f" Bonferroni-corrected for {len(self.scores)} candidates)"
        )


@dataclass(frozen=True)
class ChosenChallenger:
    """The candidate that becomes the challenger: its window, its model and the choice that picked it."""

    window: Window
    trained: TrainedModel
    choice: WindowChoice


def corrected_policy(policy: PromotionPolicy, candidates: int) -> PromotionPolicy:
    """``policy`` with its confidence corrected for choosing among ``candidates`` (Bonferroni)."""
    if candidates <= 1:
        return policy
    return policy.model_copy(update={"confidence": 1 - (1 - policy.confidence) / candidates})


def choose_window(
    task: TaskKind,
    primary: str,
    y: np.ndarray,
    candidates: list[tuple[str, int, np.ndarray]],
    champion: np.ndarray | None,
    policy: PromotionPolicy,
) -> WindowChoice:
    """Judge every candidate against the champion on the same rows and choose the challenger.

    Args:
        task: The model's task.
        primary: The primary metric.
        y: Holdout labels.
        candidates: ``(window name, training rows, holdout predictions)`` per candidate, widest first.
        champion: The champion's holdout predictions, or None without a champion.
        policy: The promotion policy (its nominal confidence).

    Returns:
        The choice, with every candidate's score at the corrected confidence.
    """
    corrected = corrected_policy(policy, len(candidates))
    scores = [
        _score(name, rows, judge(task, primary, HoldoutScores(y, predictions, champion), corrected))
        for name, rows, predictions in candidates
    ]
    ranks = [_rank(score, primary) for score in scores]
    chosen = max(range(len(scores)), key=lambda i: (ranks[i], -i))
    return WindowChoice(chosen, scores, corrected.confidence, policy.confidence)


def _score(name: str, rows: int, judgement: Judgement) -> WindowScore:
    row = next(m for m in judgement.metrics if m.metric == judgement.primary)
    promotes = judgement.verdict == "promote"
    return WindowScore(name, rows, row.challenger, row.improvement, row.lower_bound, promotes)


def _rank(score: WindowScore, primary: str) -> tuple[bool, float]:
    measure = score.lower_bound if score.lower_bound is not None else orientation(primary) * score.value
    return score.promotes, measure if np.isfinite(measure) else -np.inf
