"""What outside systems may tell retrainer over HTTP, and the events each message becomes.

Two messages, both JSON objects naming a configured model:

* a **drift alert** (``POST /hooks/drift``): either compact (``drift_share`` and the drifted columns,
  by name or with score and method) or an Evidently snapshot as written by ``snapshot.json()``
  under ``snapshot`` (the share and drifted columns are read from it). It becomes the same
  ``retrainer.drift.detected`` event the monitor emits, keyed by an incident of its own:
  ``<model>:alert:<source>:<alert_id>``. A snapshot that shows no dataset drift emits nothing.
* a **new-data notice** (``POST /hooks/data``): absolute POSIX paths of labelled files that landed
  (with a fixed lexical meaning: :func:`path_problem`; the receiver also requires them under
  ``webhook.landing_roots``: :func:`outside_landing_roots`). It becomes ``retrainer.data.arrived``
  labelled ``retrainer.on_new_data=ingest``, which runs the ingest deployment on those files;
  ingest announces each accepted batch with its own ``data.arrived`` (labelled ``monitor`` or
  ``retrain``), so nothing skips the data contract.

``alert_id`` / ``notice_id`` identify a message; when the sender gives none, the digest of the
message's content does, so a re-sent message collapses into the first one's event.

Prefect-free and framework-free; the Prefect Cloud templates in ``deployments/cloud/`` produce the
same events from the same bodies.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retrainer import events
from retrainer.config import ModelName
from retrainer.monitor.snapshot import dataset_share, snapshot_columns
from retrainer.storage import is_s3_url

SourceName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
MessageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
MAX_PATH_LENGTH = 4096


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName
    source: SourceName = Field("external", description="Who sends it; becomes the related source resource")


class DriftedColumn(BaseModel):
    """One drifted column of a compact alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1, max_length=256)
    score: float | None = None
    method: str | None = Field(None, max_length=128)


class DriftAlert(_Message):
    """A drift alert: compact fields or an Evidently snapshot, not both."""

    alert_id: MessageId | None = None
    drift_share: float | None = Field(None, ge=0, le=1)
    drifted_columns: list[DriftedColumn | Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=10_000
    )
    report_uri: str | None = Field(None, max_length=2048)
    snapshot: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _compact_or_snapshot(self) -> DriftAlert:
        if self.snapshot is not None:
            if self.drift_share is not None or self.drifted_columns:
                raise ValueError("give either a snapshot or drift_share/drifted_columns, not both")
            read_snapshot(self.snapshot)
        elif self.drift_share is None:
            raise ValueError("drift_share is required without a snapshot")
        return self

    @property
    def key(self) -> str:
        """The message id: ``alert_id``, or the digest of the content."""
        return self.alert_id or _content_digest(self)

    def drift(self) -> SnapshotDrift:
        """Dataset share, verdict and drifted columns, from the snapshot or the compact fields."""
        if self.snapshot is not None:
            return read_snapshot(self.snapshot)
        columns = [c if isinstance(c, DriftedColumn) else DriftedColumn(column=c) for c in self.drifted_columns]
        return SnapshotDrift(share=self.drift_share or 0.0, detected=True, columns=columns)


class DataNotice(_Message):
    """New files for a model: labelled batches to ingest, inference traffic to observe, or late labels.

    ``kind`` says which (default ``labelled``); the files start the ingest, observe or label flow.
    """

    notice_id: MessageId | None = None
    files: list[str] = Field(min_length=1, max_length=1000)
    kind: Literal["labelled", "inference", "labels"] = "labelled"

    @field_validator("files")
    @classmethod
    def _absolute_paths(cls, files: list[str]) -> list[str]:
        for path in files:
            problem = path_problem(path)
            if problem is not None:
                raise ValueError(problem)
        return files

    @property
    def key(self) -> str:
        """The message id: ``notice_id``, or the digest of the content."""
        return self.notice_id or _content_digest(self)


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a landed file, or ``None``.

    A usable path is absolute POSIX or an ``s3://bucket/key`` URL, at most 4096 characters, without
    NUL or other control characters, backslashes (Windows and UNC forms) or ``..`` components, so
    that its meaning is fixed by its text.
    """
    shown = repr(path[:80])
    if not path or len(path) > MAX_PATH_LENGTH:
        return f"{shown}: a path has 1 to {MAX_PATH_LENGTH} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"{shown}: a path has no NUL or other control characters"
    if "\\" in path:
        return f"{shown}: give a POSIX path (no backslashes, drive letters or UNC shares)"
    if not path.startswith("/") and not is_s3_url(path):
        return f"{shown}: give absolute paths or s3:// URLs (the ingest runs elsewhere)"
    if ".." in path.split("/"):
        return f"{shown}: a path has no '..' components"
    return None


def outside_landing_roots(notice: DataNotice, roots: list[str]) -> str | None:
    """Why ``notice`` names a file outside every landing root, or ``None`` when all lie under one.

    Paths compare lexically (no file system access); the files themselves are checked by the ingest.
    """
    if not roots:
        return "data notices are refused: webhook.landing_roots is not configured"
    for path in notice.files:
        if not any(_under(path, root) for root in roots):
            return f"{path[:200]!r} is not under any of webhook.landing_roots"
    return None


def _under(path: str, root: str) -> bool:
    """Whether ``path`` lies strictly below ``root``, both local paths or both ``s3://`` URLs."""
    if is_s3_url(path) != is_s3_url(root):
        return False
    if is_s3_url(path):
        # An S3 key is literal: "landing//x" and "./landing/x" are other keys than "landing/x", so
        # nothing is normalised and a key with an empty, "." or ".." segment is never under a root.
        key = path.removeprefix("s3://")
        if any(segment in {"", ".", ".."} for segment in key.split("/")):
            return False
        return key.startswith(root.removeprefix("s3://").rstrip("/") + "/")
    # normpath folds '.' and repeated slashes; '..' was refused by path_problem.
    lexical, base = PurePosixPath(posixpath.normpath(path)), PurePosixPath(posixpath.normpath(root))
    return lexical != base and lexical.is_relative_to(base)


def _content_digest(message: BaseModel) -> str:
    canonical = json.dumps(message.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class SnapshotDrift:
    """The drift an alert reports.

    Attributes:
        share: Share of drifted columns.
        detected: The dataset verdict.
        columns: The drifted columns, in report order.
    """

    share: float
    detected: bool
    columns: list[DriftedColumn]


def read_snapshot(snapshot: dict[str, Any]) -> SnapshotDrift:
    """The dataset drift an Evidently ``DataDriftPreset`` snapshot reports.

    Raises:
        ValueError: the document is not a data drift snapshot (no ``DriftedColumnsCount`` result).
    """
    share, threshold = dataset_share(snapshot)
    drifted = [
        DriftedColumn(column=c.column, score=c.score, method=c.method) for c in snapshot_columns(snapshot) if c.drifted
    ]
    return SnapshotDrift(share=share, detected=share >= threshold, columns=drifted)


def drift_event(alert: DriftAlert) -> events.Event | None:
    """The ``drift.detected`` event of an alert, or ``None`` when its snapshot shows no dataset drift."""
    drift = alert.drift()
    if not drift.detected:
        return None
    incident_key = f"{alert.model}:alert:{alert.source}:{alert.key}"
    evidence = events.DriftEvidence(
        check_id=alert.key,
        drift_share=drift.share,
        drift_detected=drift.detected,
        top_columns=drift.columns,
        report_uri=alert.report_uri,
    )
    reason = f"drift alert {alert.key} from {alert.source}"
    return events.drift_detected(
        model=alert.model, incident_key=incident_key, reason=reason, evidence=evidence, source=alert.source
    )


def data_event(notice: DataNotice) -> events.Event:
    """The ``data.arrived`` event of a notice, labelled so that the ingest deployment runs."""
    return events.files_landed(
        model=notice.model, files=notice.files, source=notice.source, notice_id=notice.key, kind=notice.kind
    )
