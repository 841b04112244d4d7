"""The plan of a retrain, without Prefect: why it runs, which batches train and judge, and its lineage."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from retrainer.config import ModelConfig
from retrainer.data.contract import schema_for
from retrainer.data.features import FeatureSpec
from retrainer.data.store import BatchRecord, BatchStore, Manifest, split_latest
from retrainer.errors import NoDataError
from retrainer.model.history import current_actor
from retrainer.model.training import TrainedModel

# Fewer rows than this do not make a candidate worth judging (and may not fit at all).
MIN_FIT_ROWS = 20


@dataclass(frozen=True)
class Trigger:
    """Why a retrain runs: a free-text reason, the triggering event and incident, and the Prefect run.

    ``answers`` counts the alerts the retrain answers (its own trigger and those the server coalesced
    into it, see ``retrainer.monitor.incidents.attach_alerts``); ``answers_sample`` names the first
    few of their incident keys (the model's incident book has them all).
    """

    reason: str = "manual"
    event_id: str | None = None
    incident_key: str | None = None
    event_name: str | None = None
    event_payload: dict[str, Any] = field(default_factory=dict)
    flow_run_id: str | None = None
    actor: str = field(default_factory=current_actor)
    answers: int = 0
    answers_sample: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for tags, history and events."""
        return asdict(self)


@dataclass(frozen=True)
class DataSplit:
    """Which accepted batches train the candidates and which judge them.

    ``training`` are the older batches of the widest window, oldest first. The holdout is the latest
    ``newest_share`` of the ``holdout`` batches' rows; their earlier rows train every candidate. When
    there are not more batches than the holdout needs, ``row_split`` is set and the holdout is a
    seeded fraction of the rows of all batches (the same rows on every run over the same batches).
    """

    training: list[BatchRecord]
    holdout: list[BatchRecord]
    row_split: bool
    features: list[str]
    newest_share: float = 1.0

    def trained_batches(self, older: int | None) -> list[BatchRecord]:
        """The batches a window with ``older`` older batches trained on (a row split: all of them)."""
        if older is None or self.row_split:
            return self.training
        return self.training[len(self.training) - older :] if older else []

    def lineage(self, older: int | None = None, refit: bool = False) -> dict[str, Any]:
        """Batch ids and content hashes of both sides, plus one digest per side.

        Args:
            older: How many older batches the chosen window trained on (default: all of ``training``).
            refit: The lineage of the chosen recipe refit on its window plus the holdout: every
                holdout batch counts as trained on, whole.
        """
        trained = self.trained_batches(older)
        if refit:
            trained = [*trained, *(b for b in self.holdout if b not in trained)]
        earlier_rows_train = not self.row_split and not refit and self.newest_share < 1
        return {
            "training_batches": [b.batch_id for b in trained],
            "holdout_batches": [b.batch_id for b in self.holdout],
            "training_sha256": _digest(trained),
            "holdout_sha256": _digest(self.holdout),
            "holdout_is_row_split": self.row_split,
            "holdout_share_of_holdout_batches": 1.0 if self.row_split or refit else self.newest_share,
            "holdout_batches_earlier_rows_train": earlier_rows_train,
            "refit_on_holdout": refit,
        }

    def earlier_lineage(self, version: str, run_tags: dict[str, str]) -> dict[str, Any]:
        """The lineage of an earlier champion brought back: what it trained on (its run's tags) and this holdout."""
        share = run_tags.get("retrainer.holdout_share") or "1.0"
        partly = [b for b in run_tags.get("retrainer.holdout_batches", "").split(",") if b and float(share) < 1]
        return {
            "reinstated_version": version,
            "training_batches": [b for b in run_tags.get("retrainer.training_batches", "").split(",") if b],
            "training_batches_earlier_rows": partly,
            "training_sha256": run_tags.get("retrainer.training_sha256", ""),
            "holdout_batches": [b.batch_id for b in self.holdout],
            "holdout_sha256": _digest(self.holdout),
            "holdout_is_row_split": self.row_split,
            "holdout_share_of_holdout_batches": 1.0 if self.row_split else self.newest_share,
            "refit_on_holdout": False,
        }


def _digest(batches: list[BatchRecord]) -> str:
    return hashlib.sha256("\n".join(b.sha256 for b in batches).encode()).hexdigest()


def plan_split(manifest: Manifest, config: ModelConfig) -> DataSplit:
    """Pick the holdout batches (newest) and the widest training window (the next newest).

    "Newest" is by data time capped at arrival time (see :func:`_newest_last`). The holdout is the
    latest ``holdout.newest_share`` of the holdout batches' rows, unless that is fewer rows than
    ``promotion.min_holdout_rows``: then whole batches are held out, so small batches still judge.

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
    training = rest[-config.window.batches :]
    share = config.holdout.newest_share
    if sum(b.rows for b in holdout) * share < config.promotion.min_holdout_rows:
        share = 1.0
    return DataSplit(training, holdout, row_split=False, features=features, newest_share=share)


def _newest_last(batches: list[BatchRecord]) -> list[BatchRecord]:
    """Order batches by how recent their data is, never later than their arrival; ties keep acceptance order.

    A batch's data cannot be newer than the moment it was ingested, so its latest timestamp is capped
    at its ingest time: a batch stamped in the far future (year 9999, or anything within the ingest
    tolerance) ranks as of its arrival and gives up the holdout once data newer than that arrives.
    """
    return sorted(batches, key=_recency)


def _recency(batch: BatchRecord) -> datetime:
    arrived = _as_naive_utc(batch.ingested_at) or datetime.min
    latest = _as_naive_utc(batch.time_max) if batch.time_max else None
    return min(latest, arrived) if latest is not None else arrived


def _as_naive_utc(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Window:
    """One candidate's training rows: the holdout batches' earlier rows plus ``older`` older batches.

    Attributes:
        older: How many older batches it adds (in a row split: all batches).
        fit: Rows the booster fits.
        valid: Rows for early stopping (the latest of the window when there is a time column).
        pooled: Whether it is the seeded row split of all batches (too few batches for a holdout batch).
    """

    older: int
    fit: pl.DataFrame
    valid: pl.DataFrame
    pooled: bool = False

    @property
    def rows(self) -> int:
        """Training rows in all (fit and validation)."""
        return self.fit.height + self.valid.height

    @property
    def name(self) -> str:
        """How the window reads in records: ``newest``, ``newest+3`` or ``all batches (row split)``."""
        if self.pooled:
            return "all batches (row split)"
        return "newest" if self.older == 0 else f"newest+{self.older}"

    @property
    def trainable(self) -> bool:
        """Enough rows to fit and to stop early on (LightGBM refuses an empty validation set)."""
        return self.fit.height >= MIN_FIT_ROWS and self.valid.height > 0


@dataclass
class Frames:
    """Typed frames for one cycle: the candidates' training windows (widest first) and the holdout."""

    windows: list[Window]
    holdout: pl.DataFrame
    spec: FeatureSpec


def load_frames(store: BatchStore, split: DataSplit, config: ModelConfig) -> Frames:
    """Read the split's batches once, keeping only the columns the model uses, and cut the windows.

    No window holds a holdout row. A window too small to train (:attr:`Window.trainable`; e.g.
    ``older`` 0 when whole batches are held out) is left out; when no configured window can train,
    the widest window is used.
    """
    schema = schema_for(config, [], split.features)
    spec = FeatureSpec.build(config, schema)
    columns = list(dict.fromkeys([*schema.required, *config.slices]))
    if split.row_split:
        pooled = store.read(split.training, columns)
        train, holdout = _split_rows(pooled, config.holdout.fraction, config.holdout.seed)
        fit, valid = _validation_split(train, config)
        return Frames([Window(len(split.training), fit, valid, pooled=True)], holdout, spec)
    newest, holdout = split_latest(store.read(split.holdout, columns), split.newest_share, config.time_column)
    older = [store.read([batch], columns) for batch in split.training]
    counts = sorted({min(k, len(older)) for k in config.window.candidate_batches}, reverse=True)
    windows = [
        _window(k, pl.concat([*older[len(older) - k :], newest], how="diagonal_relaxed"), config) for k in counts
    ]
    trainable = [w for w in windows if w.trainable]
    if trainable:
        return Frames(trainable, holdout, spec)
    return Frames([_window(len(older), _rows(older, newest.clear()), config)], holdout, spec)


def _rows(older: list[pl.DataFrame], newest: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([*older, newest], how="diagonal_relaxed")


def _window(older: int, rows: pl.DataFrame, config: ModelConfig) -> Window:
    fit, valid = _validation_split(rows, config)
    return Window(older, fit, valid)


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


def run_params(config: ModelConfig, window: Window, holdout_rows: int, trained: TrainedModel) -> dict[str, Any]:
    """Parameters logged on the MLflow run of the challenger trained on ``window``."""
    return {
        **{f"lgbm.{k}": v for k, v in trained.params.items()},
        "n_estimators": config.lightgbm.n_estimators,
        "best_iteration": trained.best_iteration,
        "train_rows": window.fit.height,
        "valid_rows": window.valid.height,
        "holdout_rows": holdout_rows,
        "training_window": window.name,
        "features": ",".join(trained.spec.features),
        "task": config.task,
    }


def lineage_tags(split: DataSplit, trigger: Trigger, older: int | None = None, refit: bool = False) -> dict[str, str]:
    """Run tags that tie a challenger (trained with ``older`` older batches, maybe refit) to its data and trigger."""
    lineage = split.lineage(older, refit)
    return {
        "retrainer.training_batches": ",".join(lineage["training_batches"]),
        "retrainer.holdout_batches": ",".join(lineage["holdout_batches"]),
        "retrainer.training_sha256": lineage["training_sha256"],
        "retrainer.holdout_sha256": lineage["holdout_sha256"],
        "retrainer.holdout_share": str(lineage["holdout_share_of_holdout_batches"]),
        "retrainer.trigger.reason": trigger.reason,
        "retrainer.trigger.event_id": trigger.event_id or "",
        "retrainer.trigger.incident_key": trigger.incident_key or "",
        "prefect.flow_run_id": trigger.flow_run_id or "",
    }


def holdout_batches_seen(run_tags: dict[str, str], split: DataSplit) -> list[str]:
    """The holdout batches of ``split`` some of whose holdout rows a version may have trained on.

    From the version's run lineage tags: a batch it trained on whole, or a batch of its own holdout
    whose earlier rows trained it when this holdout is cut differently (other batches, a larger
    share, or a row split). Empty for runs without lineage tags.
    """
    whole = {b for b in run_tags.get("retrainer.training_batches", "").split(",") if b}
    share = float(run_tags.get("retrainer.holdout_share") or 1.0)
    held = {b for b in run_tags.get("retrainer.holdout_batches", "").split(",") if b} if share < 1 else set()
    current = [b.batch_id for b in split.holdout]
    cut_differs = split.row_split or held != set(current) or split.newest_share > share
    return [b for b in current if b in whole or (b in held and cut_differs)]


def lineage_json(split: DataSplit, trigger: Trigger, older: int | None = None, refit: bool = False) -> dict[str, Any]:
    """The lineage artifact stored on the run of a challenger trained with ``older`` older batches (maybe refit)."""
    lineage = split.lineage(older, refit)
    known = {b.batch_id: b for b in [*split.training, *split.holdout]}
    trained = [known[b] for b in lineage["training_batches"]]
    return {
        **lineage,
        "trigger": trigger.as_dict(),
        "training": [asdict(b) for b in trained],
        "holdout": [asdict(b) for b in split.holdout],
    }
