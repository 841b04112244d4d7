"""Rolling ``@champion`` back to the version it replaced, by compare-and-set, with a history line."""

from __future__ import annotations

from dataclasses import dataclass

from retrainer.data.store import utc_now
from retrainer.errors import RollbackError
from retrainer.model.history import History, HistoryEntry, current_actor
from retrainer.model.registry import CHAMPION, Registry


@dataclass(frozen=True)
class Rollback:
    """A completed rollback."""

    model: str
    from_version: str
    to_version: str
    reason: str


def rollback(
    registry: Registry, history: History, model: str, reason: str, to: str | None = None, force: bool = False
) -> Rollback:
    """Move ``@champion`` back to ``to`` (default: the version the champion replaced).

    Raises:
        RollbackError: no champion, nothing to roll back to, the target never passed a judgement
            (without ``force``), or the champion moved during the rollback.
        RegistryError: the target version does not exist.
    """
    champion = registry.alias(model, CHAMPION)
    if champion is None:
        raise RollbackError(f"{model} has no champion to roll back")
    target = to or history.replaced_by(champion.version)
    if target is None:
        raise RollbackError(f"{model} v{champion.version} replaced no earlier champion; name one with --to")
    if target == champion.version:
        raise RollbackError(f"{model} v{target} is already the champion")
    found = registry.version(model, target)
    if found.tags.get("retrainer.verdict") != "promote" and not force:
        raise RollbackError(f"{model} v{target} never passed a judgement; use --force to roll back to it anyway")
    if not registry.set_alias_if(model, CHAMPION, target, champion.version):
        raise RollbackError(f"{model}@champion moved during the rollback; nothing changed")
    registry.tag_version(model, target, {"retrainer.rolled_back_at": utc_now(), "retrainer.rollback_reason": reason})
    actor = current_actor()
    history.append(
        HistoryEntry(
            at=utc_now(),
            model=model,
            action="rollback",
            outcome="RolledBack",
            version=target,
            replaced=champion.version,
            champion_before=champion.version,
            reasons=[reason, "forced"] if force else [reason],
            trigger={"reason": reason, "forced": force},
            actor=actor,
        )
    )
    return Rollback(model, champion.version, target, reason)
