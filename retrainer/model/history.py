"""Append-only promotion history per model: who or what decided, what, why and when.

The history and its intent journal live in the metadata store (:class:`~retrainer.storage.Metadata`).
A change of ``@champion`` is crash-consistent through the journal: an :class:`Intent` (where the
alias goes, the version tags, the history line and the event to announce) is committed before the
alias moves, completed after, and removed once announced. Whatever a killed process left behind is
reconciled by the next retrain, ``retrainer status`` or ``rollback``. Every change of the record
happens under the model's promotion lock (:meth:`History.promotion_lock`), held by the metadata
store across machines: two workers can never both move ``@champion``.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from retrainer.storage import Metadata

IntentState = Literal["pending", "recorded"]
INTENT = "intent"


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
    """The promotion history of one model (lines, appended, never rewritten) and its intent journal.

    Args:
        metadata: The metadata store.
        model: The model's name.
    """

    def __init__(self, metadata: Metadata, model: str) -> None:
        self.metadata = metadata
        self.model = model
        self.stream = f"history/{model}"

    @contextmanager
    def promotion_lock(self) -> Iterator[None]:
        """Serialise changes of the model's promotion record across every process and machine."""
        with self.metadata.lock(f"promotion:{self.model}"):
            yield

    def confirm_lock(self) -> None:
        """Make sure this process still holds the promotion lock; call it right before an alias move.

        The store's own writes under the lock are fenced; an alias move in the registry is not.

        Raises:
            StorageError: the lock was lost (its database session dropped); move nothing.
        """
        self.metadata.confirm(f"promotion:{self.model}")

    def append(self, entry: HistoryEntry) -> None:
        """Add an entry durably."""
        self.metadata.append(self.stream, json.dumps(asdict(entry), sort_keys=True))

    def append_once(self, entry: HistoryEntry) -> bool:
        """Add ``entry`` unless an identical line is already there (a repeated reconcile); True when added."""
        if entry in self.entries():
            return False
        self.append(entry)
        return True

    def write_intent(self, intent: Intent) -> None:
        """Publish ``intent`` (new or with a new state) durably and atomically."""
        self.metadata.put(INTENT, self.model, intent.key, json.dumps(asdict(intent), sort_keys=True))

    def drop_intent(self, intent: Intent) -> None:
        """Forget a finished (announced) or abandoned intent."""
        self.metadata.delete(INTENT, self.model, intent.key)

    def intents(self) -> list[Intent]:
        """Intents not yet announced, oldest first (stable only under the promotion lock)."""
        return [_intent(json.loads(document.body)) for _, document in self.metadata.documents(INTENT, self.model)]

    def entries(self) -> list[HistoryEntry]:
        """All entries, oldest first; an empty list before the first decision."""
        return [HistoryEntry(**json.loads(line)) for line in self.metadata.lines(self.stream)]

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


def _intent(raw: dict[str, Any]) -> Intent:
    return Intent(**{**raw, "entry": HistoryEntry(**raw["entry"])})
