"""One retraining cycle, step by step, without Prefect: choose data, train, score, decide, record.

``tasks/`` wraps each public function here in a Prefect task; ``flows/retrain.py`` wires them.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import polars as pl

from retrainer.config import ModelConfig, PromotionMode
from retrainer.contract import schema_for
from retrainer.errors import NoDataError, RollbackError
from retrainer.features import FeatureSpec, label_vector
from retrainer.history import History, HistoryEntry, current_actor
from retrainer.judgement import HoldoutScores, Judgement, judge
from retrainer.registry import CHAMPION, Registry, VersionInfo, decision_json
from retrainer.store import BatchRecord, BatchStore, Manifest, utc_now
from retrainer.training import TrainedModel


class Outcome(StrEnum):
    """How a retrain ended; each is a named ``Completed`` state in Prefect."""

    PROMOTED = "Promoted"
    REJECTED = "Rejected"
    SUPERSEDED = "Superseded"
    DRY_RUN = "DryRun"
    SKIPPED = "Skipped"
    DUPLICATE = "Duplicate"


@dataclass(frozen=True)
class Trigger:
    """Why a retrain runs: a free-text reason, the triggering event and incident, and the Prefect run."""

    reason: str = "manual"
    event_id: str | None = None
    incident_key: str | None = None
    event_name: str | None = None
    event_payload: dict[str, Any] = field(default_factory=dict)
    flow_run_id: str | None = None
    actor: str = field(default_factory=current_actor)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for tags, history and events."""
        return asdict(self)


@dataclass(frozen=True)
class DataSplit:
    """Which accepted batches train the challenger and which judge it.

    When there are not more batches than the holdout needs, ``row_split`` is set and the holdout is a
    seeded fraction of the rows of all batches (the same rows on every run over the same batches).
    """

    training: list[BatchRecord]
    holdout: list[BatchRecord]
    row_split: bool
    features: list[str]

    def lineage(self) -> dict[str, Any]:
        """Batch ids and content hashes of both sides, plus one digest per side."""
        return {
            "training_batches": [b.batch_id for b in self.training],
            "holdout_batches": [b.batch_id for b in self.holdout],
            "training_sha256": _digest(self.training),
            "holdout_sha256": _digest(self.holdout),
            "holdout_is_row_split": self.row_split,
        }


def _digest(batches: list[BatchRecord]) -> str:
    return hashlib.sha256("\n".join(b.sha256 for b in batches).encode()).hexdigest()


def plan_split(manifest: Manifest, config: ModelConfig) -> DataSplit:
    """Pick the holdout (newest batches) and the training window (the next newest).

    Raises:
        NoDataError: no batch has been accepted for the model.
    """
    batches = _newest_last(manifest.batches)
    if not batches:
        raise NoDataError(manifest.model, "no accepted batch yet: ingest labelled data first")
    features = schema_for(config, batches[0].columns, manifest.features).features
    if len(batches) <= config.holdout.batches:
        return DataSplit(training=batches, holdout=batches, row_split=True, features=features)
    holdout = batches[-config.holdout.batches :]
    rest = batches[: -config.holdout.batches]
    return DataSplit(training=rest[-config.window.batches :], holdout=holdout, row_split=False, features=features)


def _newest_last(batches: list[BatchRecord]) -> list[BatchRecord]:
    return sorted(batches, key=lambda b: (b.time_max or "", b.ingested_at))


@dataclass
class Frames:
    """Typed frames for one cycle: training, early-stopping validation and holdout."""

    train: pl.DataFrame
    valid: pl.DataFrame
    holdout: pl.DataFrame
    spec: FeatureSpec


def load_frames(store: BatchStore, split: DataSplit, config: ModelConfig) -> Frames:
    """Read the split's batches once, keeping only the columns the model uses."""
    schema = schema_for(config, [], split.features)
    spec = FeatureSpec.build(config, schema)
    columns = list(dict.fromkeys([*schema.required, *config.slices]))
    if split.row_split:
        pooled = store.read(split.training, columns)
        train, holdout = _split_rows(pooled, config.holdout.fraction, config.holdout.seed)
    else:
        train, holdout = store.read(split.training, columns), store.read(split.holdout, columns)
    fit, valid = _validation_split(train, config)
    return Frames(fit, valid, holdout, spec)


def _split_rows(frame: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    in_holdout = np.random.default_rng(seed).random(frame.height) < fraction
    mask = pl.Series(in_holdout)
    return frame.filter(~mask), frame.filter(mask)


def _validation_split(frame: pl.DataFrame, config: ModelConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    fraction = config.lightgbm.validation_fraction
    if config.time_column is None:
        return _split_rows(frame, fraction, config.lightgbm.seed)
    ordered = frame.sort(config.time_column, maintain_order=True)
    cut = max(1, int(ordered.height * (1 - fraction)))
    return ordered.head(cut), ordered.slice(cut)


def run_params(config: ModelConfig, frames: Frames, trained: TrainedModel) -> dict[str, Any]:
    """Parameters logged on the MLflow run."""
    return {
        **{f"lgbm.{k}": v for k, v in trained.params.items()},
        "n_estimators": config.lightgbm.n_estimators,
        "best_iteration": trained.best_iteration,
        "train_rows": frames.train.height,
        "valid_rows": frames.valid.height,
        "holdout_rows": frames.holdout.height,
        "features": ",".join(frames.spec.features),
        "task": config.task,
    }


def lineage_tags(split: DataSplit, trigger: Trigger) -> dict[str, str]:
    """Run tags that tie a challenger to its data and its trigger."""
    lineage = split.lineage()
    return {
        "retrainer.training_batches": ",".join(lineage["training_batches"]),
        "retrainer.holdout_batches": ",".join(lineage["holdout_batches"]),
        "retrainer.training_sha256": lineage["training_sha256"],
        "retrainer.holdout_sha256": lineage["holdout_sha256"],
        "retrainer.trigger.reason": trigger.reason,
        "retrainer.trigger.event_id": trigger.event_id or "",
        "retrainer.trigger.incident_key": trigger.incident_key or "",
        "prefect.flow_run_id": trigger.flow_run_id or "",
    }


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


@dataclass(frozen=True)
class Rollback:
    """A completed rollback."""

    model: str
    from_version: str
    to_version: str
    reason: str


def rollback(
    registry: Registry, history: History, model: str, reason: str, to: str | None = None, force: bool = False
) -> Rollback:
    """Move ``@champion`` back to ``to`` (default: the version the champion replaced).

    Raises:
        RollbackError: no champion, nothing to roll back to, the target never passed a judgement
            (without ``force``), or the champion moved during the rollback.
        RegistryError: the target version does not exist.
    """
    champion = registry.alias(model, CHAMPION)
    if champion is None:
        raise RollbackError(f"{model} has no champion to roll back")
    target = to or history.replaced_by(champion.version)
    if target is None:
        raise RollbackError(f"{model} v{champion.version} replaced no earlier champion; name one with --to")
    if target == champion.version:
        raise RollbackError(f"{model} v{target} is already the champion")
    found = registry.version(model, target)
    if found.tags.get("retrainer.verdict") != "promote" and not force:
        raise RollbackError(f"{model} v{target} never passed a judgement; use --force to roll back to it anyway")
    if not registry.set_alias_if(model, CHAMPION, target, champion.version):
        raise RollbackError(f"{model}@champion moved during the rollback; nothing changed")
    registry.tag_version(model, target, {"retrainer.rolled_back_at": utc_now(), "retrainer.rollback_reason": reason})
    actor = current_actor()
    history.append(
        HistoryEntry(
            at=utc_now(),
            model=model,
            action="rollback",
            outcome="RolledBack",
            version=target,
            replaced=champion.version,
            champion_before=champion.version,
            reasons=[reason, "forced"] if force else [reason],
            trigger={"reason": reason, "forced": force},
            actor=actor,
        )
    )
    return Rollback(model, champion.version, target, reason)


def lineage_json(split: DataSplit, trigger: Trigger) -> dict[str, Any]:
    """The lineage artifact stored on the run."""
    return {
        **split.lineage(),
        "trigger": trigger.as_dict(),
        "training": [asdict(b) for b in split.training],
        "holdout": [asdict(b) for b in split.holdout],
    }
