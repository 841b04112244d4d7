"""Append-only promotion history per model: who or what decided, what, why and when."""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from retrainer.fsutil import append_line


@dataclass(frozen=True)
class HistoryEntry:
    """One decision or rollback.

    Attributes:
        at: UTC timestamp (ISO-8601).
        model: Model name.
        action: ``judged`` or ``rollback``.
        outcome: Promoted, Rejected, Superseded, DryRun, Skipped or RolledBack.
        version: The challenger judged, or the rollback target.
        replaced: The champion before the change, when the champion moved.
        champion_before: The champion the challenger was judged against.
        reasons: Failed rules (or the rules that carried a promotion; the rollback reason).
        trigger: Why the run happened (reason, event id, flow run id).
        actor: ``user@host`` of the process that decided.
    """

    at: str
    model: str
    action: str
    outcome: str
    version: str
    replaced: str | None = None
    champion_before: str | None = None
    reasons: list[str] = field(default_factory=list)
    trigger: dict[str, Any] = field(default_factory=dict)
    actor: str = ""


def current_actor() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class History:
    """The history file of one model (JSON lines, appended, never rewritten)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: HistoryEntry) -> None:
        """Add an entry durably."""
        append_line(self.path, json.dumps(asdict(entry), sort_keys=True))

    def entries(self) -> list[HistoryEntry]:
        """All entries, oldest first; an empty list before the first decision."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [HistoryEntry(**json.loads(line)) for line in lines if line.strip()]

    def replaced_by(self, version: str) -> str | None:
        """The version that ``version`` replaced when it last became champion."""
        for entry in reversed(self.entries()):
            if entry.version == version and entry.outcome in {"Promoted", "RolledBack"}:
                return entry.replaced
        return None
