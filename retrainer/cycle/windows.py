"""Choosing the challenger among candidate training windows, with the confidence corrected for the choice.

Each candidate (see ``retrainer.cycle.plan.Window``) trained on rows before the holdout and is
judged on the same holdout rows as the champion. The champions before the current one that never
trained on those rows are candidates too (:class:`EarlierChampion`), judged as they are: when the
data returns to an earlier concept, that concept's champion can win back its place.

Picking the best of ``m`` candidates on that holdout would let a challenger that is no better pass
more often than the policy's confidence allows, so every bound is computed at the
Bonferroni-corrected confidence ``1 - (1 - c) / m``: the chance that the chosen candidate's bound overstates
its improvement stays at most ``1 - c``. The chosen candidate is the one whose judgement promotes
with the highest lower bound on the primary metric (without a champion: the best primary metric);
ties go to the wider window, and a newly trained candidate wins a tie with an earlier champion. An
earlier champion is chosen only when its judgement promotes: it cannot be the challenger of a
rejection, which would leave this retrain's new model unregistered. The
final judgement of the registered challenger, scored as served, uses the same corrected confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrainer.config import PromotionPolicy
from retrainer.config.metrics import TaskKind, orientation
from retrainer.cycle.plan import Window
from retrainer.judge.policy import HoldoutScores, Judgement, judge
from retrainer.model.registry import VersionInfo
from retrainer.model.training import TrainedModel


@dataclass(frozen=True)
class EarlierChampion:
    """A champion before the current one, as a candidate.

    Attributes:
        version: The registered version.
        predictions: Its holdout predictions, as served.
        run_tags: The tags of the run that trained it (its lineage).
    """

    version: VersionInfo
    predictions: np.ndarray
    run_tags: dict[str, str]


@dataclass(frozen=True)
class WindowScore:
    """How one candidate did on the holdout.

    Attributes:
        name: The window's name (``newest``, ``newest+3``), or ``earlier champion v2``.
        rows: Its training rows (None for an earlier champion: it trained in its own retrain).
        value: Its primary metric on the holdout.
        improvement: Sign-adjusted improvement over the champion (None without a champion).
        lower_bound: The corrected lower confidence bound of that improvement.
        promotes: Whether its judgement passed every rule.
        version: The registered version of an earlier champion (None for a newly trained window).
    """

    name: str
    rows: int | None
    value: float
    improvement: float | None
    lower_bound: float | None
    promotes: bool
    version: str | None = None


@dataclass(frozen=True)
class WindowChoice:
    """The candidates' scores, which one is the challenger and the confidence used for every bound.

    ``best_new`` is the newly trained window ranked first (``chosen`` itself unless the choice fell
    on an earlier champion).
    """

    chosen: int
    scores: list[WindowScore]
    confidence: float
    nominal_confidence: float
    best_new: int = 0

    @property
    def reinstates(self) -> str | None:
        """The earlier champion's version when the choice fell on one (None: a newly trained window)."""
        return self.scores[self.chosen].version

    @property
    def note(self) -> str:
        """One sentence for the decision record."""
        chosen = self.scores[self.chosen]
        what = f"{chosen.name}, judged as it is" if chosen.version else f"window {chosen.name} ({chosen.rows} rows)"
        if len(self.scores) == 1:
            return f"challenger trained on {what}"
        return (
            f"challenger: {what}, chosen among {len(self.scores)} candidates on"
            f" this holdout; bounds at {self.confidence:.2%} confidence ({self.nominal_confidence:.0%}"
            f" Bonferroni-corrected for {len(self.scores)} candidates)"
        )


@dataclass(frozen=True)
class ChosenChallenger:
    """The candidate that becomes the challenger, and the choice that picked it.

    Attributes:
        window: The newly trained candidate ranked first: the challenger, unless ``earlier`` is set.
        trained: Its model.
        choice: Every candidate's score and the corrected confidence.
        earlier: The earlier champion the choice fell on, brought back as it is (nothing new is
            registered or refit); None when the challenger is ``trained``.
    """

    window: Window
    trained: TrainedModel
    choice: WindowChoice
    earlier: EarlierChampion | None = None


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
    earlier: list[EarlierChampion] | None = None,
) -> WindowChoice:
    """Judge every candidate against the champion on the same rows and choose the challenger.

    Args:
        task: The model's task.
        primary: The primary metric.
        y: Holdout labels.
        candidates: ``(window name, training rows, holdout predictions)`` per candidate, widest first.
        champion: The champion's holdout predictions, or None without a champion.
        policy: The promotion policy (its nominal confidence).
        earlier: Earlier champions judged as candidates too (scored after the windows, which win ties).

    Returns:
        The choice, with every candidate's score at the corrected confidence (corrected for the
        windows and the earlier champions together).
    """
    entries: list[tuple[str, int | None, np.ndarray, str | None]] = [
        (name, rows, predictions, None) for name, rows, predictions in candidates
    ]
    for champion_before in earlier or []:
        version = champion_before.version.version
        entries.append((f"earlier champion v{version}", None, champion_before.predictions, version))
    corrected = corrected_policy(policy, len(entries))
    scores = [
        _score(name, rows, judge(task, primary, HoldoutScores(y, predictions, champion), corrected), version)
        for name, rows, predictions, version in entries
    ]
    ranks = [_rank(score, primary) for score in scores]
    best_new = max(range(len(candidates)), key=lambda i: (ranks[i], -i))
    promoting = [i for i in range(len(candidates), len(scores)) if scores[i].promotes]
    chosen = max([best_new, *promoting], key=lambda i: (ranks[i], -i))
    return WindowChoice(chosen, scores, corrected.confidence, policy.confidence, best_new)


def _score(name: str, rows: int | None, judgement: Judgement, version: str | None) -> WindowScore:
    row = next(m for m in judgement.metrics if m.metric == judgement.primary)
    promotes = judgement.verdict == "promote"
    return WindowScore(name, rows, row.challenger, row.improvement, row.lower_bound, promotes, version)


def _rank(score: WindowScore, primary: str) -> tuple[bool, float]:
    measure = score.lower_bound if score.lower_bound is not None else orientation(primary) * score.value
    return score.promotes, measure if np.isfinite(measure) else -np.inf
