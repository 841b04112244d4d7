"""The batch store: immutable accepted batches, their manifest, and the quarantine.

Data objects live in the data store (:class:`~retrainer.storage.Blobs`, a folder or an ``s3://``
URL), under keys::

    <model>/batches/<batch_id>.parquet        typed copy of each accepted batch (never changed)
    <model>/quarantine/<stamp>-<name>         byte copy of each rejected file, plus <...>.reason.json
    <model>/traffic/...                       the same layout for unlabelled inference batches
    <model>/labels/...                        the same layout for accepted label files

The manifest (every accepted batch, in acceptance order, and the quarantine count) is a document
of the metadata store, written by compare-and-set under the store's lock, so writers on several
machines serialise and none loses another's entry. It is the source of truth: a batch object it
does not list (a crash between the two writes) is ignored, and re-ingesting the same file rewrites
it under the same id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import polars as pl

from retrainer.errors import DataError
from retrainer.storage import Storage


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
    """Accepted batches of one model, oldest first, and what else the store knows of them.

    ``features`` is the feature list pinned by the first batch, ``quarantined`` how many files were
    quarantined, ``revision`` the metadata revision the manifest was read at.
    """

    model: str
    features: list[str] | None = None
    batches: list[BatchRecord] = field(default_factory=list)
    quarantined: int = 0
    revision: int = 0

    def by_sha(self, sha256: str) -> BatchRecord | None:
        """Return the accepted batch with this content hash, if any."""
        return next((b for b in self.batches if b.sha256 == sha256), None)

    def to_json(self) -> str:
        """Serialise for the metadata store (the revision is the store's, not the document's)."""
        content = asdict(self)
        del content["revision"]
        return json.dumps(content, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, revision: int = 0) -> Manifest:
        """Parse a stored manifest (or a manifest file of the earlier layout)."""
        raw: dict[str, Any] = json.loads(text)
        batches = [BatchRecord(**b) for b in raw["batches"]]
        quarantined = int(raw.get("quarantined", 0))
        return cls(raw["model"], raw.get("features"), batches, quarantined, revision)


MANIFEST = "manifest"
LABELLED = "labelled"


def utc_now() -> str:
    """Current UTC time, ISO-8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class BatchStore:
    """One model's batches: objects in the data store, the manifest in the metadata store.

    Creates nothing until a write.

    Args:
        storage: The data and metadata stores.
        model: The model's name.
        area: ``None`` for the labelled batches; ``traffic`` or ``labels`` for the model's
            inference batches or label files, kept beside them in the same layout.

    ``origin`` of a labelled batch says how it came: ``ingest`` (a labelled file) or ``joined``
    (inference rows whose labels came later, with the label files and inference batches named in
    ``lineage``).
    """

    def __init__(self, storage: Storage, model: str, area: str | None = None) -> None:
        self.model = model
        self.area = area or LABELLED
        self.blobs = storage.blobs
        self.metadata = storage.metadata
        self.prefix = f"{model}/{area}" if area else model

    @contextmanager
    def writing(self) -> Iterator[Manifest]:
        """Hold the store's lock (across every machine) and yield the current manifest."""
        with self.metadata.lock(f"store:{self.prefix}"):
            for folder in ("batches", "quarantine"):
                self.blobs.sweep(f"{self.prefix}/{folder}")
            yield self.manifest()

    def manifest(self) -> Manifest:
        """Read the manifest; an empty one when nothing was accepted yet."""
        found = self.metadata.get(MANIFEST, self.model, self.area)
        return Manifest(model=self.model) if found is None else Manifest.from_json(found.body, found.revision)

    def quarantined(self) -> int:
        """How many rejected files are kept in quarantine (each with its reason)."""
        return self.manifest().quarantined

    def batch_key(self, batch_id: str) -> str:
        """Key of an accepted batch's Parquet copy in the data store."""
        return f"{self.prefix}/batches/{batch_id}.parquet"

    def accept(self, manifest: Manifest, frame: pl.DataFrame, record: BatchRecord, features: list[str]) -> None:
        """Publish ``frame`` as an immutable batch, then list it in the manifest (call inside :meth:`writing`).

        Raises:
            StorageError: the manifest changed since it was read (this writer lost its lock).
        """
        self.blobs.write_parquet(self.batch_key(record.batch_id), frame)
        manifest.features = manifest.features or features
        manifest.batches.append(record)
        self._save(manifest)

    def quarantine(self, manifest: Manifest, data: bytes, source: str, error: DataError) -> str:
        """Keep a byte copy of a rejected file with its reasons; return the copy's location.

        Call inside :meth:`writing`. On a local store neither file is readable by anyone but the
        owner, whatever the umask: a rejected file may hold anything. The copy is 0400 (immutable,
        like a batch), the reason file 0600. The reason file lists the violations as the contract
        rendered them (examples already bounded).
        """
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{self.prefix}/quarantine/{stamp}-{PurePosixPath(source).name or 'file'}"
        reason = {
            "source": source,
            "rejected_at": utc_now(),
            "violations": [asdict(v) for v in error.violations],
            "message": str(error),
        }
        self.blobs.put_private(key, data, read_only=True)
        self.blobs.put_private(key + ".reason.json", json.dumps(reason, indent=2).encode("utf-8"), read_only=False)
        manifest.quarantined += 1
        self._save(manifest)
        return self.blobs.location(key)

    def scan(self, records: list[BatchRecord]) -> list[pl.LazyFrame]:
        """Lazy frames of accepted batches, in the given order (collect inside ``blobs.reading``)."""
        return self.blobs.scan_parquet([self.batch_key(r.batch_id) for r in records])

    def read(self, records: list[BatchRecord], columns: list[str] | None = None) -> pl.DataFrame:
        """Concatenate accepted batches (in the given order), reading only ``columns``.

        Raises:
            TransientStorageError: the data store could not be reached.
        """
        lazy = pl.concat(self.scan(records), how="diagonal_relaxed")
        if columns is not None:
            lazy = lazy.select(columns)
        with self.blobs.reading(f"batches of {self.model}"):
            return lazy.collect()

    def _save(self, manifest: Manifest) -> None:
        manifest.revision = self.metadata.put(
            MANIFEST, self.model, self.area, manifest.to_json(), expected=manifest.revision
        )


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
