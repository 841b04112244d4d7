"""Deciding a retrain, without Prefect: score both versions on the same rows, judge, move the alias, record."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import polars as pl

from retrainer import events
from retrainer.config import ModelConfig, PromotionMode, PromotionPolicy
from retrainer.cycle.plan import DataSplit, Frames, Trigger, holdout_batches_seen
from retrainer.cycle.windows import EarlierChampion
from retrainer.data.features import label_vector
from retrainer.data.store import utc_now
from retrainer.errors import TransientRegistryError
from retrainer.judge.policy import HoldoutScores, Judgement, judge
from retrainer.model.history import History, HistoryEntry, Intent, new_intent_key
from retrainer.model.registry import CHAMPION, Registry, VersionInfo, decision_json
from retrainer.monitor.check import replaced_champions


class Outcome(StrEnum):
    """How a retrain ended; each is a named ``Completed`` state in Prefect."""

    PROMOTED = "Promoted"
    REJECTED = "Rejected"
    SUPERSEDED = "Superseded"
    DRY_RUN = "DryRun"
    SKIPPED = "Skipped"
    DUPLICATE = "Duplicate"
    WAITING_FOR_LABELS = "WaitingForLabels"


@dataclass(frozen=True)
class ChampionScores:
    """The champion a challenger is judged against, and its predictions on the holdout (as served).

    Attributes:
        version: The current champion (None without one).
        predictions: Its holdout predictions (None when not judging).
        saw_holdout_batches: Holdout batches some rows of which the champion trained on.
        earlier: Earlier champions that never trained on this holdout, with their predictions:
            candidates besides the new windows (see ``retrainer.cycle.windows``).
        passed_over: Earlier champions left out, each with why (e.g. trained on holdout rows).
    """

    version: VersionInfo | None
    predictions: np.ndarray | None
    saw_holdout_batches: list[str] = field(default_factory=list)
    earlier: list[EarlierChampion] = field(default_factory=list)
    passed_over: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What the decision record must say about the champion's side of the comparison."""
        notes = [f"not a candidate: {why}" for why in self.passed_over]
        if not self.saw_holdout_batches or self.version is None:
            return notes
        return [
            f"champion v{self.version.version} trained on some rows of {', '.join(self.saw_holdout_batches)}, which"
            " this holdout holds: its figures there may be optimistic, which favours the champion",
            *notes,
        ]


def predict_holdout(registry: Registry, model: str, version: str, frames: Frames) -> np.ndarray:
    """Predict the holdout rows with a registered version exactly as it is served."""
    return registry.predict(model, version, frames.holdout.select(frames.spec.features).to_pandas())


def earlier_candidates(
    registry: Registry, history: History, champion: VersionInfo, split: DataSplit, frames: Frames, count: int
) -> tuple[list[EarlierChampion], list[str]]:
    """Up to ``count`` champions before ``champion`` that can be judged on this holdout, with their predictions.

    A candidate must never have trained on a row of the holdout (:func:`holdout_batches_seen`), so
    that "judged on unseen rows" holds for it as for the new windows: a version whose run has no
    lineage tags (registered outside retrainer, or without a run) cannot show that and is passed
    over. So is a version with other features than this retrain's (its reference would not match
    the monitored columns), one that cannot be loaded or refuses the holdout, and, by
    :func:`replaced_champions`, a withdrawn (rolled back from) or deleted one. Only an unreachable
    registry is raised: one broken old version must not stop every retrain.

    Returns:
        The candidates, newest first, and one line for each earlier champion left out and why.
    """
    found: list[EarlierChampion] = []
    passed_over: list[str] = []
    for earlier in replaced_champions(registry, history, champion, count):
        try:
            candidate = _judgeable(registry, earlier, split, frames)
        except TransientRegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever broke one old version, it is only left out
            candidate = f"cannot be judged on this holdout ({type(exc).__name__}: {str(exc)[:200]})"
        if isinstance(candidate, str):
            passed_over.append(f"earlier champion v{earlier.version} {candidate}")
        else:
            found.append(candidate)
    return found, passed_over


_LINEAGE_TAGS = ("retrainer.training_batches", "retrainer.holdout_batches")


def _judgeable(registry: Registry, earlier: VersionInfo, split: DataSplit, frames: Frames) -> EarlierChampion | str:
    """The earlier champion as a candidate, or why it is not one."""
    tags = registry.run_details(earlier.run_id)[0] if earlier.run_id else {}
    if not all(key in tags for key in _LINEAGE_TAGS):
        return "has no lineage of its training rows (not trained by retrainer)"
    seen = holdout_batches_seen(tags, split)
    if seen:
        return f"trained on rows of {', '.join(seen)}"
    features = registry.feature_names(earlier.model, earlier.version)
    if features is None or set(features) != set(frames.spec.features):
        return "has other features than this retrain"
    return EarlierChampion(earlier, predict_holdout(registry, earlier.model, earlier.version, frames), tags)


def holdout_scores(
    frames: Frames, challenger: np.ndarray, champion: np.ndarray | None, slices: list[str]
) -> HoldoutScores:
    """Both versions' predictions on the same holdout rows, with the labels and slice values."""
    slice_values = {c: frames.holdout[c].cast(pl.String).fill_null("<null>").to_numpy() for c in slices}
    return HoldoutScores(label_vector(frames.holdout, frames.spec), challenger, champion, slice_values)


def evaluate(config: ModelConfig, scores: HoldoutScores, policy: PromotionPolicy | None = None) -> Judgement:
    """Apply ``policy`` (default: the model's promotion policy) to the scores."""
    return judge(config.task, config.primary_metric, scores, policy or config.promotion)


@dataclass(frozen=True)
class Decision:
    """The recorded end of a retrain."""

    model: str
    version: str
    outcome: Outcome
    champion_before: str | None
    reasons: list[str]
    judgement: Judgement | None
    intent_key: str | None = field(default=None, compare=False)

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
    reinstated: bool = False,
) -> Decision:
    """Turn a judgement into an outcome, move ``@champion`` if earned, and record everything.

    ``reinstated`` marks an earlier champion judged again as it is: the reasons say it is brought
    back, and its version tags change only when it is promoted (a dry run or a lost race leaves
    its recorded decision as it was).

    The champion moves only by compare-and-set against the version judged against; if it moved
    meanwhile, the outcome is ``Superseded``. Under the model's promotion lock an intent is written
    first, then the alias moves, then the version tags and the history line follow: a process killed
    at any point leaves an intent that :func:`reconcile` completes or abandons. The intent stays until
    the decision is announced (:func:`announced`); its key is ``Decision.intent_key``.
    """
    expected = champion.version if champion else None
    outcome, reasons = _outcome(judgement, mode)
    if reinstated:
        reasons = [f"brings back earlier champion v{version.version}, judged as it is", *reasons]
    with history.promotion_lock():
        earlier = _resume(registry, history, version.version, trigger.flow_run_id)
        if earlier is not None:  # a retried task: the first attempt already decided
            reasons = list(earlier.entry.reasons)
            outcome = Outcome(earlier.entry.outcome)
            return Decision(version.model, version.version, outcome, expected, reasons, judgement, earlier.key)
        now = registry.alias(version.model, CHAMPION)
        if outcome is Outcome.PROMOTED and (now.version if now else None) != expected:
            outcome = Outcome.SUPERSEDED
            reasons = [
                f"champion moved to v{now.version if now else '?'} while v{version.version} was judged against"
                f" v{expected}"
            ]
        decision = Decision(version.model, version.version, outcome, expected, reasons, judgement)
        intent = _decision_intent(decision, trigger)
        if reinstated and outcome is not Outcome.PROMOTED:
            intent = replace(intent, tags={})
        history.write_intent(intent)
        if intent.alias_to is not None:
            history.confirm_lock()
            registry.set_alias(version.model, CHAMPION, intent.alias_to)
        complete(registry, history, intent)
    return replace(decision, intent_key=intent.key)


def _resume(registry: Registry, history: History, version: str, flow_run_id: str | None) -> Intent | None:
    """The intent an earlier attempt of this retrain wrote for ``version`` (the same flow run), if any.

    An earlier champion brought back is a version an older retrain decided on: only an intent of
    this run counts, so an older one still waiting to be announced is not taken for this decision.
    """
    for intent in history.intents():
        same_run = intent.entry.trigger.get("flow_run_id") == flow_run_id
        if intent.version == version and intent.entry.action == "judged" and same_run:
            if intent.state == "pending":
                _repair(registry, history, intent)
            return next((i for i in history.intents() if i.key == intent.key), None)
    return None


def _decision_intent(decision: Decision, trigger: Trigger) -> Intent:
    promoted = decision.outcome is Outcome.PROMOTED
    announcement = {
        "event": "decided",
        "model": decision.model,
        "version": decision.version,
        "outcome": decision.outcome.value,
        "champion_before": decision.champion_before,
        "champion_after": decision.champion_after,
        "reasons": decision.reasons,
        "trigger": trigger.as_dict(),
    }
    return Intent(
        key=new_intent_key(),
        model=decision.model,
        version=decision.version,
        alias_from=decision.champion_before,
        alias_to=decision.version if promoted else None,
        tags=_decision_tags(decision, trigger),
        entry=HistoryEntry(
            at=utc_now(),
            model=decision.model,
            action="judged",
            outcome=decision.outcome.value,
            version=decision.version,
            replaced=decision.champion_before if promoted else None,
            champion_before=decision.champion_before,
            reasons=decision.reasons,
            trigger=trigger.as_dict(),
            actor=trigger.actor,
        ),
        announcement=announcement,
    )


def _decision_tags(decision: Decision, trigger: Trigger) -> dict[str, str]:
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
    return tags


def complete(registry: Registry, history: History, intent: Intent) -> bool:
    """Write the intent's tags and history line (both idempotent) and mark it recorded.

    Call under the promotion lock, once the alias (if the intent moves it) points at ``alias_to``.

    Returns:
        True when the history line was written now (False: it was already there).
    """
    registry.tag_version(intent.model, intent.version, intent.tags)
    if intent.alias_to is not None:  # the mirror shows the new tags too, also after a repair
        registry.mirror_alias(intent.model, CHAMPION)
    appended = history.append_once(intent.entry)
    history.write_intent(replace(intent, state="recorded"))
    return appended


@dataclass(frozen=True)
class Reconciliation:
    """What :func:`reconcile` repaired, and the events still to announce.

    Attributes:
        notes: One line per repaired intent (empty when nothing was left unfinished).
        unannounced: Recorded intents whose event may not have been emitted; emit
            :func:`announcement_event` of each, then call :func:`announced`.
    """

    notes: list[str]
    unannounced: list[Intent]


def reconcile(registry: Registry, history: History, model: str) -> Reconciliation:
    """Finish or abandon what a killed process left half-done in ``model``'s promotion record.

    Holds the promotion lock. A pending intent whose alias move happened (or needed none) gets its
    version tags and history line; one whose alias never moved is recorded as ``Abandoned`` in the
    history and dropped. Cheap when the journal is empty (no registry call).
    """
    if not history.intents():
        return Reconciliation([], [])
    notes: list[str] = []
    with history.promotion_lock():
        for intent in history.intents():
            if intent.state == "pending":
                notes.append(_repair(registry, history, intent))
        return Reconciliation(notes, history.intents())


def _repair(registry: Registry, history: History, intent: Intent) -> str:
    what = f"{intent.model} v{intent.version} {intent.entry.outcome}"
    now = registry.alias(intent.model, CHAMPION)
    if intent.alias_to is None or (now is not None and now.version == intent.alias_to):
        line = "history line written" if complete(registry, history, intent) else "history line was already there"
        return f"repaired: completed the interrupted {what} (version tags written, {line})"
    history.append_once(
        replace(
            intent.entry, outcome="Abandoned", replaced=None, reasons=[f"interrupted before @champion moved; {what}"]
        )
    )
    history.drop_intent(intent)
    champion = f"v{now.version}" if now else "unset"
    return f"repaired: the interrupted {what} never moved @champion (still {champion}); recorded as abandoned"


def announced(history: History, key: str | None) -> None:
    """Forget the intent ``key`` once its event was emitted (``None``: nothing to forget)."""
    for intent in history.intents():
        if intent.key == key and intent.state == "recorded":
            history.drop_intent(intent)


def announcement_event(intent: Intent) -> events.Event:
    """The event a recorded intent announces (``model.promoted``/``rejected`` or ``model.rolled_back``)."""
    said: dict[str, Any] = intent.announcement
    if said["event"] == "rolled_back":
        return events.rolled_back(
            model=said["model"], from_version=said["from_version"], to_version=said["to_version"], reason=said["reason"]
        )
    return events.model_decided(
        model=said["model"],
        version=said["version"],
        outcome=said["outcome"],
        champion_before=said["champion_before"],
        champion_after=said["champion_after"],
        reasons=said["reasons"],
        trigger=Trigger(**said["trigger"]),
    )


def _outcome(judgement: Judgement | None, mode: PromotionMode) -> tuple[Outcome, list[str]]:
    if judgement is None or mode == "disabled":
        return Outcome.SKIPPED, ["promotion mode is 'disabled': not judged"]
    if mode == "dry_run":
        would = "would promote" if judgement.verdict == "promote" else "would reject"
        return Outcome.DRY_RUN, [f"dry run, {would}", *judgement.reasons]
    return (Outcome.PROMOTED if judgement.verdict == "promote" else Outcome.REJECTED), judgement.reasons


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
