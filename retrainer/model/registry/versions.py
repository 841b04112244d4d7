"""What the registry answers with: a version as retrainer sees it, and the read-only questions of ``status``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class VersionInfo:
    """A registered model version as retrainer sees it."""

    model: str
    version: str
    run_id: str | None
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """``models:/`` URI of this exact version."""
        return f"models:/{self.model}/{self.version}"


class RegistryReader(Protocol):
    """The read-only questions ``retrainer status`` asks of the registry."""

    def alias(self, model: str, alias: str) -> VersionInfo | None:
        """Return the version ``alias`` points to, or ``None`` when unset or the model is unknown."""
        ...

    def run_details(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """Tags and latest metric values of a tracking run."""
        ...
