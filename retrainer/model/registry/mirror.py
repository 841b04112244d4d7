"""The aliases retrainer moved, mirrored in the metadata store, so ``status`` needs no MLflow.

Against a tracking server, answering ``status`` from MLflow means importing it and several HTTP
calls: seconds. Every time retrainer moves an alias (and once more when a promotion's version tags
are written), :meth:`AliasMirror.record` stores the version it points to with its run's tags and
metrics in one document per model. :class:`MirrorReader` answers ``status`` from that document and
asks the registry only for an alias retrainer never moved (state from before the mirror, a model
promoted outside retrainer, the champion of a model whose first move since was a challenger). An
alias someone moves by hand in MLflow shows in ``status`` after retrainer's next move.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from retrainer.model.registry.versions import RegistryReader, VersionInfo
from retrainer.storage import Metadata

ALIASES = "aliases"


class AliasMirror:
    """One document per model: each alias retrainer moved, its version, run tags and run metrics.

    Args:
        metadata: The metadata store.
    """

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    def record(
        self, model: str, alias: str, found: VersionInfo | None, details: tuple[dict[str, str], dict[str, float]]
    ) -> None:
        """Store where ``alias`` points now (``None``: unset), with the run's tags and metrics."""
        with self.metadata.lock(f"aliases:{model}"):
            current = self.metadata.get(ALIASES, model)
            aliases: dict[str, Any] = json.loads(current.body) if current else {}
            tags, metrics = details
            aliases[alias] = (
                None if found is None else {"version": asdict(found), "run_tags": tags, "run_metrics": metrics}
            )
            body = json.dumps(aliases, sort_keys=True)
            self.metadata.put(ALIASES, model, "", body, expected=current.revision if current else 0)

    def aliases(self, model: str) -> dict[str, Any] | None:
        """The model's mirrored aliases; ``None`` when retrainer never moved one."""
        found = self.metadata.get(ALIASES, model)
        return json.loads(found.body) if found else None


class MirrorReader:
    """Answers ``status``'s questions from the mirror; asks ``fallback()`` only for an unmirrored alias.

    Args:
        mirror: The alias mirror.
        fallback: Makes the registry reader to ask (called at most once, on first need).
    """

    def __init__(self, mirror: AliasMirror, fallback: Callable[[], RegistryReader]) -> None:
        self.mirror = mirror
        self._fallback = fallback
        self._asked: RegistryReader | None = None
        self._runs: dict[str, tuple[dict[str, str], dict[str, float]]] = {}

    def alias(self, model: str, alias: str) -> VersionInfo | None:
        """The version ``alias`` points to, as retrainer last moved it."""
        aliases = self.mirror.aliases(model) or {}
        if alias not in aliases:  # never moved by retrainer since the mirror: only the registry knows
            return self._registry().alias(model, alias)
        entry = aliases[alias]
        if entry is None:  # retrainer unset it
            return None
        found = VersionInfo(**entry["version"])
        if found.run_id:
            self._runs[found.run_id] = (entry["run_tags"], entry["run_metrics"])
        return found

    def run_details(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """Tags and metrics of a mirrored version's run (the registry's for any other run)."""
        if run_id in self._runs:
            return self._runs[run_id]
        return self._registry().run_details(run_id)

    def _registry(self) -> RegistryReader:
        if self._asked is None:
            self._asked = self._fallback()
        return self._asked
