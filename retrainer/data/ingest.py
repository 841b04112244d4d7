"""Ingest one labelled file: check it against the contract, then store or quarantine it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from retrainer.config import ModelConfig
from retrainer.data.contract import check_batch, read_table, schema_for
from retrainer.data.store import BatchRecord, BatchStore, Manifest, utc_now
from retrainer.errors import DataError, Violation


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one source file.

    Exactly one of ``accepted`` and ``error`` is set; ``quarantined`` is the kept copy of a rejected
    file (``None`` when the file could not even be read from disk).
    """

    source: Path
    accepted: BatchRecord | None = None
    error: DataError | None = None
    quarantined: Path | None = None

    @property
    def ok(self) -> bool:
        """True when the batch was accepted."""
        return self.accepted is not None


@dataclass(frozen=True)
class IngestReport:
    """Summary of one ingest call: accepted batch ids and every rejection message."""

    accepted: list[str]
    rejected: list[str]

    @classmethod
    def of(cls, outcomes: list[IngestOutcome]) -> IngestReport:
        """Summarise outcomes in file order."""
        accepted = [o.accepted.batch_id for o in outcomes if o.accepted is not None]
        return cls(accepted, [str(o.error) for o in outcomes if o.error is not None])

    @property
    def message(self) -> str:
        """Every rejection (one line per broken rule), or the accepted count."""
        if self.rejected:
            return "\n".join(self.rejected)
        return f"{len(self.accepted)} batch(es) accepted: {', '.join(self.accepted)}"


def ingest_file(store: BatchStore, config: ModelConfig, source: Path) -> IngestOutcome:
    """Check ``source`` and store it as a new batch, or quarantine it with its reasons.

    The source file is only read, never modified or removed.
    """
    try:
        data = source.read_bytes()
    except OSError as exc:
        error = DataError(str(source), [Violation("unreadable", exc.strerror or type(exc).__name__)])
        return IngestOutcome(source, error=error)
    sha256 = hashlib.sha256(data).hexdigest()
    with store.writing() as manifest:
        try:
            record = _accept(store, manifest, config, source, data, sha256)
        except DataError as error:
            return IngestOutcome(source, error=error, quarantined=store.quarantine(data, source, error))
    return IngestOutcome(source, accepted=record)


def _accept(
    store: BatchStore, manifest: Manifest, config: ModelConfig, source: Path, data: bytes, sha256: str
) -> BatchRecord:
    duplicate = manifest.by_sha(sha256)
    if duplicate is not None:
        detail = f"byte-identical to accepted batch {duplicate.batch_id} (sha256 {sha256[:12]}…)"
        raise DataError(str(source), [Violation("duplicate_batch", detail)])
    frame = read_table(data, str(source))
    schema = schema_for(config, frame.columns, manifest.features)
    typed = check_batch(frame, schema, config, str(source))
    record = _record(typed, config.time_column, source, sha256)
    store.accept(manifest, typed, record, schema.features)
    return record


def _record(frame: pl.DataFrame, time_column: str | None, source: Path, sha256: str) -> BatchRecord:
    time_min = time_max = None
    if time_column:
        times = frame[time_column].drop_nulls()
        if len(times):
            time_min, time_max = str(times.min()), str(times.max())
    return BatchRecord(
        batch_id=sha256[:16],
        sha256=sha256,
        rows=frame.height,
        columns=frame.columns,
        time_min=time_min,
        time_max=time_max,
        source=str(source.absolute()),
        ingested_at=utc_now(),
    )
