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

MISSING = "missing"
"""Rule of a source file that does not exist."""


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
    source: Path,
    checker: Checker | None = None,
    time_column: str | None = None,
    origin: str = "ingest",
) -> IngestOutcome:
    """Check ``source`` and store it as a new batch, or quarantine it with its reasons.

    The source file is only read, never modified or removed. Only a regular file (or a symlink to
    one) of at most ``config.ingest.max_file_bytes`` is opened; anything else is refused unread and
    not copied. Never raises for a bad file: every failure becomes the outcome's ``error``.

    Args:
        store: Where the batch goes.
        config: The model's config.
        source: The file.
        checker: The contract (default: a labelled batch's, :func:`labelled_checker`).
        time_column: The column dating the rows (default: the model's ``time_column``).
        origin: The stored batch's ``origin``.
    """
    try:
        data = read_source(source, config.ingest.max_file_bytes)
    except DataError as error:
        return IngestOutcome(source, error=error)
    sha256 = hashlib.sha256(data).hexdigest()
    check = checker or labelled_checker(config)
    with store.writing() as manifest:
        try:
            typed, features = _checked(manifest, source, data, sha256, check)
            record = batch_record(typed, time_column or config.time_column, str(source.absolute()), sha256, origin)
            store.accept(manifest, typed, record, features)
        except DataError as error:
            return IngestOutcome(source, error=error, quarantined=store.quarantine(data, source, error))
    return IngestOutcome(source, accepted=record)


def labelled_checker(config: ModelConfig) -> Checker:
    """The labelled batch's contract (:func:`~retrainer.data.contract.check_batch`)."""

    def check(data: bytes, source: str, pinned: list[str] | None) -> tuple[pl.DataFrame, list[str]]:
        frame = read_table(data, source)
        schema = schema_for(config, frame.columns, pinned)
        return check_batch(frame, schema, config, source), schema.features

    return check


def read_source(source: Path, max_bytes: int) -> bytes:
    """Return the bytes of ``source`` if it is a regular file of at most ``max_bytes``.

    The type and size are checked with ``stat`` before opening; the open itself never blocks (a FIFO
    swapped in after the check) and the open file is checked again, so a device, FIFO, socket or
    directory is never read and a file growing after the check is cut at ``max_bytes + 1``.

    Raises:
        DataError: rule ``missing`` (no such file), ``not_regular_file`` (with its kind),
            ``too_large`` (with both sizes) or ``unreadable`` (the OS error).
    """
    name = str(source)
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
        raise DataError(name, [_too_large(len(data), max_bytes)])
    return data


def _check_stat(name: str, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        detail = f"{_kind(info.st_mode)} is not a regular file; only regular files are read"
        raise DataError(name, [Violation("not_regular_file", detail)])
    if info.st_size > max_bytes:
        raise DataError(name, [_too_large(info.st_size, max_bytes)])


def _too_large(size: int, max_bytes: int) -> Violation:
    return Violation("too_large", f"{size} bytes exceed ingest.max_file_bytes ({max_bytes})")


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
    manifest: Manifest, source: Path, data: bytes, sha256: str, check: Checker
) -> tuple[pl.DataFrame, list[str]]:
    duplicate = manifest.by_sha(sha256)
    if duplicate is not None:
        detail = f"byte-identical to accepted batch {duplicate.batch_id} (sha256 {sha256[:12]}…)"
        raise DataError(str(source), [Violation("duplicate_batch", detail)])
    try:
        return check(data, str(source), manifest.features)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - one file's surprise must not sink the other files of the run
        raise DataError(str(source), [Violation("unprocessable", bounded(_first_line(exc)))]) from None


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
