"""Rolling ``@champion`` back to the version it replaced, by compare-and-set, with a history line."""

from __future__ import annotations

from dataclasses import dataclass, field

from retrainer.cycle.decide import complete, reconcile
from retrainer.data.store import utc_now
from retrainer.errors import RollbackError
from retrainer.model.history import History, HistoryEntry, Intent, current_actor, new_intent_key
from retrainer.model.registry import CHAMPION, Registry


@dataclass(frozen=True)
class Rollback:
    """A completed rollback.

    Attributes:
        repaired: What the reconcile before the rollback repaired (see ``retrainer.cycle.decide.reconcile``).
        unannounced: Recorded changes whose event is still to emit, this rollback's own included.
    """

    model: str
    from_version: str
    to_version: str
    reason: str
    repaired: list[str] = field(default_factory=list)
    unannounced: list[Intent] = field(default_factory=list)


def rollback(
    registry: Registry, history: History, model: str, reason: str, to: str | None = None, force: bool = False
) -> Rollback:
    """Move ``@champion`` back to ``to`` (default: the version the champion replaced).

    First reconciles what a killed promotion or rollback left unfinished; then, under the promotion
    lock, writes an intent, moves the alias by compare-and-set, tags the target and appends the
    history line (crash-consistent like a promotion).

    Raises:
        RollbackError: no champion, nothing to roll back to, the target never passed a judgement
            (without ``force``), or the champion moved during the rollback.
        RegistryError: the target version does not exist.
    """
    repaired = reconcile(registry, history, model).notes
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
    intent = _rollback_intent(model, champion.version, target, reason, force)
    with history.promotion_lock():
        now = registry.alias(model, CHAMPION)
        if now is None or now.version != champion.version:
            raise RollbackError(f"{model}@champion moved during the rollback; nothing changed")
        history.write_intent(intent)
        history.confirm_lock()
        registry.set_alias(model, CHAMPION, target)
        complete(registry, history, intent)
    unannounced = history.intents()
    return Rollback(model, champion.version, target, reason, repaired, unannounced)


def _rollback_intent(model: str, current: str, target: str, reason: str, force: bool) -> Intent:
    at = utc_now()
    return Intent(
        key=new_intent_key(),
        model=model,
        version=target,
        alias_from=current,
        alias_to=target,
        tags={"retrainer.rolled_back_at": at, "retrainer.rollback_reason": reason},
        entry=HistoryEntry(
            at=at,
            model=model,
            action="rollback",
            outcome="RolledBack",
            version=target,
            replaced=current,
            champion_before=current,
            reasons=[reason, "forced"] if force else [reason],
            trigger={"reason": reason, "forced": force},
            actor=current_actor(),
        ),
        announcement={
            "event": "rolled_back",
            "model": model,
            "from_version": current,
            "to_version": target,
            "reason": reason,
        },
    )
