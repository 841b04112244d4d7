"""Deciding a retrain, without Prefect: score both versions on the same rows, judge, move the alias, record."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np
import polars as pl

from retrainer.config import ModelConfig, PromotionMode
from retrainer.cycle.plan import Frames, Trigger
from retrainer.data.features import label_vector
from retrainer.data.store import utc_now
from retrainer.judge.policy import HoldoutScores, Judgement, judge
from retrainer.model.history import History, HistoryEntry
from retrainer.model.registry import CHAMPION, Registry, VersionInfo, decision_json


class Outcome(StrEnum):
    """How a retrain ended; each is a named ``Completed`` state in Prefect."""

    PROMOTED = "Promoted"
    REJECTED = "Rejected"
    SUPERSEDED = "Superseded"
    DRY_RUN = "DryRun"
    SKIPPED = "Skipped"
    DUPLICATE = "Duplicate"


@dataclass(frozen=True)
class ChampionScores:
    """The champion a challenger is judged against, and its predictions on the holdout (as served)."""

    version: VersionInfo | None
    predictions: np.ndarray | None


def predict_holdout(registry: Registry, model: str, version: str, frames: Frames) -> np.ndarray:
    """Predict the holdout rows with a registered version exactly as it is served."""
    return registry.predict(model, version, frames.holdout.select(frames.spec.features).to_pandas())


def holdout_scores(
    frames: Frames, challenger: np.ndarray, champion: np.ndarray | None, slices: list[str]
) -> HoldoutScores:
    """Both versions' predictions on the same holdout rows, with the labels and slice values."""
    slice_values = {c: frames.holdout[c].cast(pl.String).fill_null("<null>").to_numpy() for c in slices}
    return HoldoutScores(label_vector(frames.holdout, frames.spec), challenger, champion, slice_values)


def evaluate(config: ModelConfig, scores: HoldoutScores) -> Judgement:
    """Apply the model's promotion policy to the scores."""
    return judge(config.task, config.primary_metric, scores, config.promotion)


@dataclass(frozen=True)
class Decision:
    """The recorded end of a retrain."""

    model: str
    version: str
    outcome: Outcome
    champion_before: str | None
    reasons: list[str]
    judgement: Judgement | None

    @property
    def champion_after(self) -> str | None:
        """The champion once this decision took effect."""
        return self.version if self.outcome is Outcome.PROMOTED else self.champion_before

    @property
    def message(self) -> str:
        """One line for the Prefect state and the CLI."""
        return f"{self.model} v{self.version}: {self.outcome.value} — " + "; ".join(self.reasons[:3])


def conclude(
    registry: Registry,
    history: History,
    version: VersionInfo,
    champion: VersionInfo | None,
    judgement: Judgement | None,
    mode: PromotionMode,
    trigger: Trigger,
) -> Decision:
    """Turn a judgement into an outcome, move ``@champion`` if earned, and record everything.

    The champion moves only by compare-and-set against the version judged against; if it moved
    meanwhile, the outcome is ``Superseded``.
    """
    expected = champion.version if champion else None
    outcome, reasons = _outcome(judgement, mode)
    if outcome is Outcome.PROMOTED and not registry.set_alias_if(version.model, CHAMPION, version.version, expected):
        now = registry.alias(version.model, CHAMPION)
        outcome = Outcome.SUPERSEDED
        reasons = [
            f"champion moved to v{now.version if now else '?'} while v{version.version} was judged against v{expected}"
        ]
    decision = Decision(version.model, version.version, outcome, expected, reasons, judgement)
    _record(registry, history, decision, trigger)
    return decision


def _outcome(judgement: Judgement | None, mode: PromotionMode) -> tuple[Outcome, list[str]]:
    if judgement is None or mode == "disabled":
        return Outcome.SKIPPED, ["promotion mode is 'disabled': not judged"]
    if mode == "dry_run":
        would = "would promote" if judgement.verdict == "promote" else "would reject"
        return Outcome.DRY_RUN, [f"dry run, {would}", *judgement.reasons]
    return (Outcome.PROMOTED if judgement.verdict == "promote" else Outcome.REJECTED), judgement.reasons


def _record(registry: Registry, history: History, decision: Decision, trigger: Trigger) -> None:
    judgement = decision.judgement
    tags = {
        "retrainer.outcome": decision.outcome.value,
        "retrainer.verdict": judgement.verdict if judgement else "none",
        "retrainer.reasons": decision_json(decision.reasons),
        "retrainer.judged_against": decision.champion_before or "none",
        "retrainer.trigger": decision_json(trigger.as_dict()),
        "retrainer.decided_at": utc_now(),
    }
    if judgement is not None:
        tags["retrainer.metrics"] = decision_json({m.metric: asdict(m) for m in judgement.metrics})
    registry.tag_version(decision.model, decision.version, tags)
    replaced = decision.champion_before if decision.outcome is Outcome.PROMOTED else None
    history.append(
        HistoryEntry(
            at=utc_now(),
            model=decision.model,
            action="judged",
            outcome=decision.outcome.value,
            version=decision.version,
            replaced=replaced,
            champion_before=decision.champion_before,
            reasons=decision.reasons,
            trigger=trigger.as_dict(),
            actor=trigger.actor,
        )
    )


def holdout_metric_values(judgement: Judgement) -> dict[str, float]:
    """Flat metric dict for the MLflow run (challenger and champion values, improvements, bounds)."""
    values: dict[str, float] = {}
    for row in judgement.metrics:
        values[f"holdout_{row.metric}"] = row.challenger
        if row.champion is not None:
            values[f"champion_holdout_{row.metric}"] = row.champion
        if row.lower_bound is not None:
            values[f"improvement_lower_bound_{row.metric}"] = row.lower_bound
    return values
