"""Ingest one labelled file: check it against the contract, then store or quarantine it."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from retrainer.config import ModelConfig
from retrainer.data.contract import bounded, check_batch, read_table, schema_for
from retrainer.data.store import BatchRecord, BatchStore, Manifest, utc_now
from retrainer.errors import DataError, Violation
from retrainer.storage import is_s3_url, read_object, too_large

MISSING = "missing"
"""Rule of a source file that does not exist."""


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one source file.

    Exactly one of ``accepted`` and ``error`` is set; ``quarantined`` is the location of the kept
    copy of a rejected file (``None`` when the file could not even be read).
    """

    source: str
    accepted: BatchRecord | None = None
    error: DataError | None = None
    quarantined: str | None = None

    @property
    def ok(self) -> bool:
        """True when the batch was accepted."""
        return self.accepted is not None

    @property
    def missing(self) -> bool:
        """True when the source file does not exist."""
        return self.error is not None and any(v.rule == MISSING for v in self.error.violations)


@dataclass(frozen=True)
class IngestReport:
    """Summary of one ingest call: accepted batch ids, every rejection message, and the missing files."""

    accepted: list[str]
    rejected: list[str]
    missing: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, outcomes: list[IngestOutcome]) -> IngestReport:
        """Summarise outcomes in file order."""
        accepted = [o.accepted.batch_id for o in outcomes if o.accepted is not None]
        rejected = [str(o.error) for o in outcomes if o.error is not None]
        return cls(accepted, rejected, [str(o.source) for o in outcomes if o.missing])

    @property
    def verdict(self) -> str:
        """The name of the ingest's final state.

        ``Accepted`` (every file), ``PartlyAccepted`` (some), ``Missing`` (none, and every file is
        missing) or ``Quarantined`` (none, and at least one file was rejected or refused).
        """
        if not self.rejected:
            return "Accepted"
        if self.accepted:
            return "PartlyAccepted"
        return "Missing" if len(self.missing) == len(self.rejected) else "Quarantined"

    @property
    def message(self) -> str:
        """The accepted count, then every rejection (one line per broken rule)."""
        lines = [f"{len(self.accepted)} batch(es) accepted: {', '.join(self.accepted)}"] if self.accepted else []
        return "\n".join([*lines, *self.rejected])


Checker = Callable[[bytes, str, list[str] | None], tuple[pl.DataFrame, list[str]]]
"""Parses and checks a file's bytes (named by the source, with the features pinned so far): the
typed frame and its feature list, or a ``DataError`` listing every broken rule."""


def ingest_file(
    store: BatchStore,
    config: ModelConfig,
    source: str | Path,
    checker: Checker | None = None,
    time_column: str | None = None,
    origin: str = "ingest",
) -> IngestOutcome:
    """Check ``source`` and store it as a new batch, or quarantine it with its reasons.

    The source file is only read, never modified or removed. Only a regular file (or a symlink to
    one) or an ``s3://`` object of at most ``config.ingest.max_file_bytes`` is opened; anything else
    is refused unread and not copied. Never raises for a bad file: every failure becomes the
    outcome's ``error``.

    Raises:
        StorageError: the data or metadata store refused or could not be reached (transient); the
            file is then neither stored nor quarantined.

    Args:
        store: Where the batch goes.
        config: The model's config.
        source: The file: a local path or an ``s3://`` URL.
        checker: The contract (default: a labelled batch's, :func:`labelled_checker`).
        time_column: The column dating the rows (default: the model's ``time_column``).
        origin: The stored batch's ``origin``.
    """
    name = source_name(source)
    try:
        data = read_source(name, config.ingest.max_file_bytes)
    except DataError as error:
        return IngestOutcome(name, error=error)
    sha256 = hashlib.sha256(data).hexdigest()
    check = checker or labelled_checker(config)
    with store.writing() as manifest:
        try:
            typed, features = _checked(manifest, name, data, sha256, check)
            record = batch_record(typed, time_column or config.time_column, name, sha256, origin)
            store.accept(manifest, typed, record, features)
        except DataError as error:
            return IngestOutcome(name, error=error, quarantined=store.quarantine(manifest, data, name, error))
    return IngestOutcome(name, accepted=record)


def source_name(source: str | Path) -> str:
    """How a source is named in records: an ``s3://`` URL as given, a local file by its absolute path."""
    text = str(source)
    return text if is_s3_url(text) else str(Path(text).absolute())


def labelled_checker(config: ModelConfig) -> Checker:
    """The labelled batch's contract (:func:`~retrainer.data.contract.check_batch`)."""

    def check(data: bytes, source: str, pinned: list[str] | None) -> tuple[pl.DataFrame, list[str]]:
        frame = read_table(data, source)
        schema = schema_for(config, frame.columns, pinned)
        return check_batch(frame, schema, config, source), schema.features

    return check


def read_source(source: str, max_bytes: int) -> bytes:
    """Return the bytes of ``source`` if it is a regular file or ``s3://`` object of at most ``max_bytes``.

    The type and size are checked with ``stat`` before opening; the open itself never blocks (a FIFO
    swapped in after the check) and the open file is checked again, so a device, FIFO, socket or
    directory is never read and a file growing after the check is cut at ``max_bytes + 1``.

    Raises:
        DataError: rule ``missing`` (no such file), ``not_regular_file`` (with its kind),
            ``too_large`` (with both sizes) or ``unreadable`` (the OS error).
        StorageError: an ``s3://`` source's store refused or could not be reached.
    """
    if is_s3_url(source):
        return read_object(source, max_bytes)
    name = source
    try:
        _check_stat(name, os.stat(source), max_bytes)
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            _check_stat(name, os.fstat(handle.fileno()), max_bytes)
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise DataError(name, [Violation(MISSING, "no such file")]) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise DataError(name, [Violation("unreadable", detail)]) from None
    if len(data) > max_bytes:
        raise DataError(name, [too_large(len(data), max_bytes)])
    return data


def _check_stat(name: str, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        detail = f"{_kind(info.st_mode)} is not a regular file; only regular files are read"
        raise DataError(name, [Violation("not_regular_file", detail)])
    if info.st_size > max_bytes:
        raise DataError(name, [too_large(info.st_size, max_bytes)])


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _checked(
    manifest: Manifest, source: str, data: bytes, sha256: str, check: Checker
) -> tuple[pl.DataFrame, list[str]]:
    duplicate = manifest.by_sha(sha256)
    if duplicate is not None:
        detail = f"byte-identical to accepted batch {duplicate.batch_id} (sha256 {sha256[:12]}…)"
        raise DataError(source, [Violation("duplicate_batch", detail)])
    try:
        return check(data, source, manifest.features)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - one file's surprise must not sink the other files of the run
        raise DataError(source, [Violation("unprocessable", bounded(_first_line(exc)))]) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def batch_record(
    frame: pl.DataFrame,
    time_column: str | None,
    source: str,
    sha256: str,
    origin: str,
    lineage: dict[str, Any] | None = None,
) -> BatchRecord:
    """The manifest record of ``frame`` stored now: its id (``sha256``'s first 16 digits) and time span."""
    time_min = time_max = None
    if time_column and time_column in frame.columns:
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
        source=source,
        ingested_at=utc_now(),
        origin=origin,
        lineage=lineage or {},
    )
