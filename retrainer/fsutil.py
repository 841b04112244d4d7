"""Crash-safe file primitives: atomic replace, append-only lines and inter-process locks."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object], read_only: bool = False) -> None:
    """Produce ``path`` via a temporary sibling that is fsynced and renamed into place.

    A reader (or a process killed half-way) sees either no file or the complete file, never a part.

    Args:
        path: Final location; its directory is created if needed.
        write: Writes the complete content to the temporary path it is given.
        read_only: Drop write permission before publishing (for immutable batches).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        if read_only:
            temporary.chmod(0o444)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, read_only: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data), read_only=read_only)


def append_line(path: Path, line: str) -> None:
    """Append one line durably; a single ``write`` with ``O_APPEND`` keeps concurrent lines whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the block's duration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries left by a process killed mid-write; call only while holding the lock."""
    for leftover in directory.glob(".tmp-*"):
        leftover.unlink(missing_ok=True)
