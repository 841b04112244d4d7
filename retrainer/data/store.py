"""The batch store: immutable accepted batches, their manifest, and the quarantine.

Layout under the data root::

    <model>/manifest.json            every accepted batch, in acceptance order
    <model>/batches/<batch_id>.parquet  read-only typed copy of each accepted batch
    <model>/quarantine/<stamp>-<name>   byte copy of each rejected file, plus <...>.reason.json
    <model>/.lock                    serialises writers across processes
    <model>/traffic/...              the same layout for unlabelled inference batches
    <model>/labels/...               the same layout for accepted label files

The manifest is the source of truth: a batch file it does not list (a crash between the two
renames) is ignored, and re-ingesting the same file rewrites it under the same id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from retrainer.errors import DataError
from retrainer.fsutil import atomic_write, atomic_write_bytes, file_lock, remove_stale_temporaries

_OWNER_READ_WRITE = 0o600
_OWNER_READ = 0o400


@dataclass(frozen=True)
class BatchRecord:
    """One accepted batch as listed in the manifest."""

    batch_id: str
    sha256: str
    rows: int
    columns: list[str]
    time_min: str | None
    time_max: str | None
    source: str
    ingested_at: str
    origin: str = "ingest"
    lineage: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class Manifest:
    """Accepted batches of one model, oldest first, and the feature list pinned by the first one."""

    model: str
    features: list[str] | None = None
    batches: list[BatchRecord] = field(default_factory=list)

    def by_sha(self, sha256: str) -> BatchRecord | None:
        """Return the accepted batch with this content hash, if any."""
        return next((b for b in self.batches if b.sha256 == sha256), None)

    def to_json(self) -> str:
        """Serialise for the manifest file."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest file's content."""
        raw: dict[str, Any] = json.loads(text)
        batches = [BatchRecord(**b) for b in raw["batches"]]
        return cls(model=raw["model"], features=raw.get("features"), batches=batches)


def utc_now() -> str:
    """Current UTC time, ISO-8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class BatchStore:
    """Filesystem store of one model's batches. Creates nothing until a write.

    Args:
        root: The data root.
        model: The model's name.
        area: ``None`` for the labelled batches; ``traffic`` or ``labels`` for the model's
            inference batches or label files, kept beside them in the same layout.

    ``origin`` of a labelled batch says how it came: ``ingest`` (a labelled file) or ``joined``
    (inference rows whose labels came later, with the label files and inference batches named in
    ``lineage``).
    """

    def __init__(self, root: Path, model: str, area: str | None = None) -> None:
        self.model = model
        self.directory = root / model / area if area else root / model
        self.batches_dir = self.directory / "batches"
        self.quarantine_dir = self.directory / "quarantine"
        self.manifest_path = self.directory / "manifest.json"

    @contextmanager
    def writing(self) -> Iterator[Manifest]:
        """Lock the store for writing and yield the current manifest."""
        with file_lock(self.directory / ".lock"):
            for directory in (self.batches_dir, self.quarantine_dir, self.directory):
                if directory.exists():
                    remove_stale_temporaries(directory)
            yield self.manifest()

    def manifest(self) -> Manifest:
        """Read the manifest; an empty one when nothing was accepted yet."""
        if not self.manifest_path.exists():
            return Manifest(model=self.model)
        return Manifest.from_json(self.manifest_path.read_text(encoding="utf-8"))

    def quarantined(self) -> int:
        """How many rejected files are kept in quarantine (each with its reason file)."""
        return len(list(self.quarantine_dir.glob("*.reason.json"))) if self.quarantine_dir.exists() else 0

    def batch_path(self, batch_id: str) -> Path:
        """Location of an accepted batch's Parquet copy."""
        return self.batches_dir / f"{batch_id}.parquet"

    def accept(self, manifest: Manifest, frame: pl.DataFrame, record: BatchRecord, features: list[str]) -> None:
        """Publish ``frame`` as an immutable batch, then list it in the manifest (call inside :meth:`writing`)."""
        atomic_write(self.batch_path(record.batch_id), lambda tmp: frame.write_parquet(tmp), read_only=True)
        manifest.features = manifest.features or features
        manifest.batches.append(record)
        atomic_write_bytes(self.manifest_path, manifest.to_json().encode("utf-8"))

    def quarantine(self, data: bytes, source: Path, error: DataError) -> Path:
        """Keep a byte copy of a rejected file with its reasons; return the copy's path.

        Neither file is readable by anyone but the owner, whatever the umask: a rejected file may hold
        anything. The copy is 0400 (immutable, like a batch), the reason file 0600. The reason file
        lists the violations as the contract rendered them (examples already bounded).
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        copy = self.quarantine_dir / f"{stamp}-{source.name}"
        reason = {
            "source": str(source),
            "rejected_at": utc_now(),
            "violations": [asdict(v) for v in error.violations],
            "message": str(error),
        }
        atomic_write(copy, lambda tmp: _write_private(tmp, data, _OWNER_READ))
        reason_path = copy.with_name(copy.name + ".reason.json")
        reason_bytes = json.dumps(reason, indent=2).encode("utf-8")
        atomic_write(reason_path, lambda tmp: _write_private(tmp, reason_bytes, _OWNER_READ_WRITE))
        return copy

    def read(self, records: list[BatchRecord], columns: list[str] | None = None) -> pl.DataFrame:
        """Concatenate accepted batches (in the given order), reading only ``columns``."""
        frames = [pl.scan_parquet(self.batch_path(r.batch_id)) for r in records]
        lazy = pl.concat(frames, how="diagonal_relaxed")
        if columns is not None:
            lazy = lazy.select(columns)
        return lazy.collect()


def split_latest(frame: pl.DataFrame, share: float, time_column: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split ``frame`` into its earlier rows and its latest ``share`` of rows.

    "Latest" is by ``time_column`` (rows without a time count as earliest), or by file order without
    one. Rows with the same time fall on the same side (the latest), so a coarse time column (dates
    only) cannot make file order decide: a batch of one date is all latest. At least one row is
    latest; ``share`` ≥ 1 makes every row latest. The same frame and share always give the same split.
    """
    if share >= 1 or frame.is_empty():
        return frame.clear(), frame
    cut = frame.height - max(1, round(frame.height * share))
    if time_column is None:
        return frame.head(cut), frame.slice(cut)
    ordered = frame.sort(time_column, maintain_order=True, nulls_last=False)
    times = ordered[time_column]
    boundary = times[cut]
    if boundary is not None:
        cut = int((times < boundary).sum() + times.null_count())
    return ordered.head(cut), ordered.slice(cut)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created owner-only, then give it ``mode`` (also owner-only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _OWNER_READ_WRITE)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), _OWNER_READ_WRITE)
        handle.write(data)
        os.fchmod(handle.fileno(), mode)
