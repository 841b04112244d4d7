"""Unlabelled inference traffic and the labels that join it later, by the model's ``id_column``.

A model keeps three stores side by side (:class:`ModelData`, each a
:class:`~retrainer.data.store.BatchStore`): its labelled batches, its traffic (inference batches:
the features, the time and the id, no target) and its label files (id, target, optionally when the
label became known). Labels join the traffic by id:

* an inference batch is checked by :func:`~retrainer.data.contract.check_inference`, and its ids
  must be new to the model's traffic (rule ``id_seen_before``): a label must name one row;
* a label file is checked whole: the id and target present, ids never null and unique in the file
  (``duplicate_id``), labels within the classes, and no id an earlier label file already labelled
  (``label_conflict``: the first label stands, the file is quarantined). A refused file joins nothing;
* :func:`join_labels` joins every waiting label whose inference row is stored into one new
  labelled batch (origin ``joined``: both halves were checked when they came), with the label
  files and inference batches it came from and the label lag in its lineage. Training, holdouts and the
  monitor then use it like any labelled batch. A label whose row has not been observed waits
  (pending) and joins when the row arrives; one still waiting ``labels.pending_wait_seconds`` after
  its file arrived is quarantined with rule ``unknown_id``, naming its file.

Every join runs under the model's store locks (labelled, then traffic, then labels: always in that
order, held by the metadata store across machines), so a join never sees half a file and no label
joins twice. A joined batch stays
*unannounced* (in every later :class:`JoinReport`) until :func:`mark_announced` records that its
``labels.joined`` event left, so a process killed between the two loses no event.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import polars as pl

from retrainer.config import ModelConfig
from retrainer.data.contract import (
    check_inference,
    check_labels,
    flag_rows,
    read_table,
    schema_for,
)
from retrainer.data.ingest import Checker, IngestOutcome, batch_record, ingest_file
from retrainer.data.store import BatchRecord, BatchStore, Manifest
from retrainer.errors import DataError, Violation
from retrainer.storage import Storage

TRAFFIC, LABELS = "traffic", "labels"
OBSERVED, LABEL_FILE, JOINED, EXPIRED = "observed", "label_file", "joined", "expired"
_FILE = "_label_file"
_RECEIVED = "_received_at"
_INFERENCE = "_inference_batch"
_INFERRED_AT = "_inferred_at"
_INTERNAL = {_FILE, _RECEIVED, _INFERENCE, _INFERRED_AT}
ANNOUNCED = "announced"


@dataclass(frozen=True)
class ModelData:
    """The model's labelled batches, its inference traffic and its label files."""

    labelled: BatchStore
    traffic: BatchStore
    labels: BatchStore

    @classmethod
    def of(cls, storage: Storage, model: str) -> ModelData:
        """The three stores of ``model`` (nothing is created)."""
        return cls(BatchStore(storage, model), BatchStore(storage, model, TRAFFIC), BatchStore(storage, model, LABELS))

    @contextmanager
    def writing(self) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
        """Lock the three stores (always in the same order) and yield their manifests."""
        with self.labelled.writing() as labelled, self.traffic.writing() as traffic, self.labels.writing() as labels:
            yield labelled, traffic, labels


@dataclass(frozen=True)
class LabelLag:
    """How late labels came: seconds from each row's inference time to when its label was known."""

    median_seconds: float
    max_seconds: float

    @property
    def text(self) -> str:
        """For records: ``median 2.0 d, max 3.1 d``."""
        return f"median {_days(self.median_seconds)}, max {_days(self.max_seconds)}"


def _days(seconds: float) -> str:
    return f"{seconds / 86_400:.1f} d" if seconds >= 86_400 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class JoinReport:
    """What one :func:`join_labels` did.

    Attributes:
        batch: The new labelled batch of joined rows (None when nothing joined).
        joined_rows: Rows joined now.
        pending_rows: Labels still waiting for their inference rows.
        expired: The quarantined copies of labels that waited too long (one per label file).
        lag: The label lag of the rows joined now.
        unannounced: Joined batches (this one and any an interrupted run left) whose
            ``labels.joined`` event has not been recorded as sent, oldest first.
    """

    batch: BatchRecord | None
    joined_rows: int
    pending_rows: int
    expired: list[str]
    lag: LabelLag | None
    unannounced: list[BatchRecord] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: what joined (and how late), what waits, what expired."""
        joined = f"{self.joined_rows} label(s) joined"
        if self.batch is not None:
            joined += f" into batch {self.batch.batch_id}" + (f" (label lag {self.lag.text})" if self.lag else "")
        expired = f"; labels of {len(self.expired)} file(s) waited too long, quarantined" if self.expired else ""
        return f"{joined}; {self.pending_rows} waiting for their inference rows{expired}"


def traffic_summary(data: ModelData) -> dict[str, Any]:
    """Inference batches, the share of their rows labelled, labels waiting, and the latest label lag.

    Read from the three manifests alone (no batch is opened): each label row joins once or expires
    once, so the labels waiting are the accepted label rows less the joined and expired ones.
    """
    traffic = [b for b in data.traffic.manifest().batches if b.origin == OBSERVED]
    joined = [b for b in data.labelled.manifest().batches if b.origin == JOINED]
    labels = data.labels.manifest().batches
    observed_rows = sum(b.rows for b in traffic)
    joined_rows = sum(b.rows for b in joined)
    received = sum(b.rows for b in labels if b.origin == LABEL_FILE)
    expired = sum(b.rows for b in labels if b.origin == EXPIRED)
    lag = joined[-1].lineage.get("label_lag_seconds") if joined else None
    return {
        "inference_batches": len(traffic),
        "inference_rows": observed_rows,
        "labelled_rows": joined_rows,
        "labelled_share": joined_rows / observed_rows if observed_rows else None,
        "pending_labels": received - joined_rows - expired,
        "expired_labels": expired,
        "label_lag_seconds": lag,
        "quarantined": data.traffic.quarantined() + data.labels.quarantined(),
    }


def observe_file(data: ModelData, config: ModelConfig, source: str) -> IngestOutcome:
    """Check an unlabelled inference file and store it as a traffic batch, or quarantine it.

    As :func:`~retrainer.data.ingest.ingest_file`, with the inference contract and the rule that its
    ids are new to the model's traffic. Never raises for a bad file.
    """
    pinned = data.labelled.manifest().features
    checker = _inference_checker(config, data.traffic, pinned)
    return ingest_file(data.traffic, config, source, checker, origin=OBSERVED)


def label_file(data: ModelData, config: ModelConfig, source: str) -> IngestOutcome:
    """Check a label file and keep it (whole) for joining, or quarantine it whole.

    Never raises for a bad file. The accepted file joins on the next :func:`join_labels`.
    """
    checker = _label_checker(config, data.labels)
    return ingest_file(data.labels, config, source, checker, time_column=config.labels.time_column, origin=LABEL_FILE)


def _inference_checker(config: ModelConfig, traffic: BatchStore, pinned: list[str] | None) -> Checker:
    def check(raw: bytes, source: str, traffic_pinned: list[str] | None) -> tuple[pl.DataFrame, list[str]]:
        frame = read_table(raw, source, text_columns=(str(config.id_column),))
        schema = schema_for(config, frame.columns, pinned or traffic_pinned)
        typed = check_inference(frame, schema, config, source)
        _refuse_known_ids(typed, traffic, config, source)
        return typed, schema.features

    return check


def _refuse_known_ids(typed: pl.DataFrame, traffic: BatchStore, config: ModelConfig, source: str) -> None:
    column = str(config.id_column)
    known = _ids(traffic, [b for b in traffic.manifest().batches if b.origin == OBSERVED], column)
    seen = typed[column].is_in(known.implode())
    violations = flag_rows(typed, column, seen, "id_seen_before", "row(s) repeat an id of an earlier inference batch")
    if violations:
        raise DataError(source, violations)


def _label_checker(config: ModelConfig, labels: BatchStore) -> Checker:
    def check(raw: bytes, source: str, _: list[str] | None) -> tuple[pl.DataFrame, list[str]]:
        column = str(config.id_column)
        typed = check_labels(read_table(raw, source, text_columns=(column,)), config, source)
        batches = labels.manifest().batches
        earlier = _ids(labels, [b for b in batches if b.origin == LABEL_FILE], column)
        # A label that expired waiting for its row is no label: it may be sent again.
        expired = _ids(labels, [b for b in batches if b.origin == EXPIRED], column)
        labelled = typed[column].is_in(earlier.implode()) & ~typed[column].is_in(expired.implode())
        conflict = "label(s) for ids an earlier label file already labelled (the first label stands)"
        violations = flag_rows(typed, column, labelled, "label_conflict", conflict)
        if violations:
            raise DataError(source, violations)
        return typed, [column, config.target]

    return check


def join_labels(data: ModelData, config: ModelConfig, now: datetime | None = None) -> JoinReport:
    """Join every waiting label whose inference row is stored; quarantine labels that waited too long.

    The joined rows become one new labelled batch (see the module docstring). A label joins at most
    once: joined and expired ids are never waiting again.

    Raises:
        DataError: the stored rows lack a column the model now needs (its config changed since
            they were observed); the message names the label files.
    """
    now = now or datetime.now(UTC)
    if config.id_column is None:  # nothing can have been observed or labelled
        return JoinReport(None, 0, 0, [], None)
    column = config.id_column
    with data.writing() as (labelled, traffic, labels):
        waiting = _waiting(data, labelled, labels, column)
        observed = _observed(data.traffic, traffic, column, config)
        with data.labelled.blobs.reading(f"traffic and labels of {data.labelled.model}"):
            joined = observed.join(waiting, on=column, how="inner").collect()
        features = traffic.features
        batch, lag = _store_joined(data, labelled, config, joined, labels, features) if joined.height else (None, None)
        with data.labelled.blobs.reading(f"labels of {data.labelled.model}"):
            still = waiting.join(observed.select(column), on=column, how="anti").collect()
        expired = _expire(data, labels, config, still, now)
        pending = still.height - sum(e.rows for e in expired)
        sent = _announced(data)
        unannounced = [b for b in labelled.batches if b.origin == JOINED and b.batch_id not in sent]
    return JoinReport(batch, joined.height, pending, [e.copy for e in expired], lag, unannounced)


def mark_announced(data: ModelData, batch_ids: list[str]) -> None:
    """Record that the ``labels.joined`` events of ``batch_ids`` were sent."""
    if not batch_ids:
        return
    store = data.labels
    with store.writing():
        found = store.metadata.get(ANNOUNCED, store.model, LABELS)
        sent = sorted(_announced(data) | set(batch_ids))
        store.metadata.put(ANNOUNCED, store.model, LABELS, json.dumps(sent), expected=found.revision if found else 0)


def _announced(data: ModelData) -> set[str]:
    found = data.labels.metadata.get(ANNOUNCED, data.labels.model, LABELS)
    return set(json.loads(found.body)) if found else set()


def _ids(store: BatchStore, batches: list[BatchRecord], column: str) -> pl.Series:
    if not batches:
        return pl.Series(column, [], dtype=pl.String)
    return store.read(batches, [column])[column]


def _waiting(data: ModelData, labelled: Manifest, labels: Manifest, column: str) -> pl.LazyFrame:
    """Accepted label rows not yet joined nor expired, with their file and its arrival time."""
    files = [b for b in labels.batches if b.origin == LABEL_FILE]
    if not files:
        return pl.LazyFrame(schema={column: pl.String, _FILE: pl.String, _RECEIVED: pl.String})
    rows = pl.concat(
        [
            frame.with_columns(pl.lit(b.batch_id).alias(_FILE), pl.lit(b.ingested_at).alias(_RECEIVED))
            for b, frame in zip(files, data.labels.scan(files), strict=True)
        ],
        how="diagonal_relaxed",
    )
    done = [frame.select(column) for frame in data.labelled.scan([b for b in labelled.batches if b.origin == JOINED])]
    waiting = rows.join(pl.concat(done), on=column, how="anti") if done else rows
    expired = [
        frame.select(column, _FILE) for frame in data.labels.scan([b for b in labels.batches if b.origin == EXPIRED])
    ]
    # An expired label is that file's label: the same id sent again in a later file waits anew.
    return waiting.join(pl.concat(expired), on=[column, _FILE], how="anti") if expired else waiting


def _observed(traffic_store: BatchStore, traffic: Manifest, column: str, config: ModelConfig) -> pl.LazyFrame:
    """Every stored inference row, with the batch it came in and when it was inferred."""
    batches = [b for b in traffic.batches if b.origin == OBSERVED]
    if not batches:
        return pl.LazyFrame(schema={column: pl.String})
    time = config.time_column
    label_time = config.labels.time_column
    frames = []
    for b, scanned in zip(batches, traffic_store.scan(batches), strict=True):
        arrived = _utc_text(pl.lit(b.ingested_at))
        frame = scanned.with_columns(
            pl.lit(b.batch_id).alias(_INFERENCE), (pl.col(time) if time else arrived).alias(_INFERRED_AT)
        )
        if label_time and label_time in b.columns:  # the label's own time comes from the label file
            frame = frame.drop(label_time)
        frames.append(frame)
    return pl.concat(frames, how="diagonal_relaxed")


def _store_joined(
    data: ModelData,
    labelled: Manifest,
    config: ModelConfig,
    joined: pl.DataFrame,
    labels: Manifest,
    traffic_features: list[str] | None,
) -> tuple[BatchRecord, LabelLag]:
    """Store the joined rows as one labelled batch.

    Both halves were checked when they came (the traffic by the inference contract, the labels by
    theirs), typed alike: the join adds no whole-batch rule (a feature null on the few rows that
    joined is no reason to refuse them), only the columns the model needs.
    """
    files = sorted(set(joined[_FILE].to_list()))
    inference = sorted(set(joined[_INFERENCE].to_list()))
    lag = _lag(joined, config)
    source = f"join of label file(s) {', '.join(files)}"
    schema = schema_for(config, [], labelled.features or traffic_features)
    kept = [c for c in joined.columns if c not in _INTERNAL and c != config.labels.time_column]
    typed = joined.select(kept)
    missing = [c for c in schema.required if c not in typed.columns]
    if missing:  # the config changed since the rows were observed: no row of them can train
        raise DataError(source, [Violation("missing_column", "absent from the observed rows", c) for c in missing])
    digest = hashlib.sha256("\n".join([*files, *inference, *sorted(typed[str(config.id_column)].to_list())]).encode())
    by_id = {b.batch_id: b for b in labels.batches}
    lineage: dict[str, Any] = {
        "label_files": [{"batch_id": f, "sha256": by_id[f].sha256, "source": by_id[f].source} for f in files],
        "inference_batches": inference,
        "rows_by_inference_batch": dict(joined.group_by(_INFERENCE).len().iter_rows()),
        # None, not NaN, when no row had a time: the manifest stays plain JSON.
        "label_lag_seconds": {"median": _finite(lag.median_seconds), "max": _finite(lag.max_seconds)},
    }
    record = batch_record(typed, config.time_column, source, digest.hexdigest(), JOINED, lineage)
    data.labelled.accept(labelled, typed, record, schema.features)
    return record, lag


def _lag(joined: pl.DataFrame, config: ModelConfig) -> LabelLag:
    """Seconds from each row's inference to its label: the label time, else when its file arrived."""
    # Every time here is naive UTC: the contract reads time columns so, and arrival times are UTC.
    received = _utc_text(pl.col(_RECEIVED))
    label_time = config.labels.time_column
    known = pl.coalesce(pl.col(label_time), received) if label_time and label_time in joined.columns else received
    lag = (known - pl.col(_INFERRED_AT)).dt.total_microseconds() / 1e6
    median, longest = joined.select(lag.median().alias("median"), lag.max().alias("max")).row(0)
    return LabelLag(float("nan") if median is None else median, float("nan") if longest is None else longest)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _utc_text(text: pl.Expr) -> pl.Expr:
    """An ISO-8601 text with an offset (``utc_now``) as a naive UTC time."""
    return text.str.to_datetime(time_unit="us", time_zone="UTC").dt.replace_time_zone(None)


@dataclass(frozen=True)
class _Expired:
    copy: str
    rows: int


def _expire(
    data: ModelData, labels: Manifest, config: ModelConfig, still: pl.DataFrame, now: datetime
) -> list[_Expired]:
    """Quarantine the waiting labels whose file arrived more than ``pending_wait_seconds`` ago, per file."""
    if still.is_empty():
        return []
    limit = (now - timedelta(seconds=config.labels.pending_wait_seconds)).isoformat(timespec="seconds")
    overdue = still.filter(pl.col(_RECEIVED) <= limit)
    done = []
    column = str(config.id_column)
    for (file_id,), rows in overdue.group_by(_FILE, maintain_order=True):
        record = next(b for b in labels.batches if b.batch_id == file_id)
        detail = (
            f"{rows.height} label(s) name ids no inference batch carried within labels.pending_wait_seconds"
            f" ({config.labels.pending_wait_seconds:g} s)"
        )
        everyone = pl.Series([True] * rows.height)
        error = DataError(record.source, flag_rows(rows, column, everyone, "unknown_id", detail))
        kept = rows.drop(_RECEIVED)
        named = PurePosixPath(record.source)
        copy = data.labels.quarantine(labels, _parquet_bytes(kept), f"{named.stem}.unknown-ids.parquet", error)
        sha = hashlib.sha256(f"expired:{file_id}:{now.isoformat()}".encode()).hexdigest()
        expired = batch_record(kept, None, record.source, sha, EXPIRED)
        data.labels.accept(labels, kept, expired, labels.features or kept.columns)
        done.append(_Expired(copy, kept.height))
    return done


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
