"""Append-only promotion history per model: who or what decided, what, why and when.

A change of ``@champion`` is crash-consistent through an intent journal next to the history file: an
:class:`Intent` (where the alias goes, the version tags, the history line and the event to announce)
is written durably before the alias moves, completed after, and removed once announced. Whatever a
killed process left behind is reconciled by the next retrain, ``retrainer status`` or ``rollback``.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from retrainer.fsutil import append_line, atomic_write_bytes

IntentState = Literal["pending", "recorded"]


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


def new_intent_key() -> str:
    """A unique intent key that sorts in creation order (nanoseconds, then random)."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def current_actor() -> str:
    """``user@host`` of this process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Intent:
    """A started change of the promotion record, written before anything else changes.

    Attributes:
        key: Unique id of this change (the journal file's name).
        model: Model name.
        version: The version whose tags and history line the change writes.
        alias_from: ``@champion`` before the change (``None``: unset).
        alias_to: Where ``@champion`` moves; ``None`` when the change does not move it.
        tags: Version tags to set on ``version``.
        entry: The history line to append.
        announcement: The event to emit once recorded (see ``retrainer.cycle.decide.announcement_event``).
        state: ``pending`` until tags and history line are written, then ``recorded`` until announced.
    """

    key: str
    model: str
    version: str
    alias_from: str | None
    alias_to: str | None
    tags: dict[str, str]
    entry: HistoryEntry
    announcement: dict[str, Any]
    state: IntentState = "pending"


class History:
    """The history file of one model (JSON lines, appended, never rewritten) and its intent journal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path.parent / f"{path.stem}.intents"

    def append(self, entry: HistoryEntry) -> None:
        """Add an entry durably."""
        append_line(self.path, json.dumps(asdict(entry), sort_keys=True))

    def append_once(self, entry: HistoryEntry) -> bool:
        """Add ``entry`` unless an identical line is already there (a repeated reconcile); True when added."""
        if entry in self.entries():
            return False
        self.append(entry)
        return True

    def write_intent(self, intent: Intent) -> None:
        """Publish ``intent`` (new or with a new state) durably and atomically."""
        data = json.dumps(asdict(intent), sort_keys=True).encode("utf-8")
        atomic_write_bytes(self.journal / f"{intent.key}.json", data)

    def drop_intent(self, intent: Intent) -> None:
        """Forget a finished (announced) or abandoned intent."""
        (self.journal / f"{intent.key}.json").unlink(missing_ok=True)

    def intents(self) -> list[Intent]:
        """Intents not yet announced, oldest first (stable only under the promotion lock)."""
        if not self.journal.is_dir():
            return []
        # A temporary of a write in progress (or of a killed one) is not an intent.
        paths = [p for p in self.journal.glob("*.json") if not p.name.startswith(".tmp-")]
        found = [intent for intent in map(_read_intent, paths) if intent is not None]
        return sorted(found, key=lambda intent: intent.key)

    def entries(self) -> list[HistoryEntry]:
        """All entries, oldest first; an empty list before the first decision."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [HistoryEntry(**json.loads(line)) for line in lines if line.strip()]

    def promoted_over(self, version: str) -> str | None:
        """The champion ``version`` replaced when it was last promoted (a rollback to it does not count)."""
        for entry in reversed(self.entries()):
            if entry.version == version and entry.outcome == "Promoted":
                return entry.replaced
        return None

    def rolled_back_from(self) -> set[str]:
        """Every version a rollback replaced."""
        return {e.replaced for e in self.entries() if e.outcome == "RolledBack" and e.replaced is not None}

    def replaced_by(self, version: str) -> str | None:
        """The version that ``version`` replaced when it last became champion."""
        for entry in reversed(self.entries()):
            if entry.version == version and entry.outcome in {"Promoted", "RolledBack"}:
                return entry.replaced
        return None


def _read_intent(path: Path) -> Intent | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:  # announced (removed) by another process since it was listed
        return None
    return _intent(json.loads(text))


def _intent(raw: dict[str, Any]) -> Intent:
    return Intent(**{**raw, "entry": HistoryEntry(**raw["entry"])})
