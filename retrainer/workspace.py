"""The workspace: settings, model configs and the stores they point at, opened on demand."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from retrainer.config import ModelConfig, ProjectConfig, Settings, load_project, load_settings
from retrainer.history import History
from retrainer.registry import Registry
from retrainer.store import BatchStore


@dataclass
class Workspace:
    """Everything a command needs, resolved from one :class:`Settings`. Creates nothing on disk."""

    settings: Settings
    project: ProjectConfig

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        """Read settings from the environment (unless given) and load the config file they name.

        Raises:
            ConfigError: the config file is missing or invalid.
        """
        settings = settings or load_settings()
        return cls(settings, load_project(settings.config))

    def model(self, name: str) -> ModelConfig:
        """Config of model ``name`` (raises ``UnknownModelError``)."""
        return self.project.model(name)

    def store(self, name: str) -> BatchStore:
        """Batch store of model ``name``."""
        return BatchStore(self.settings.data_dir, name)

    def history(self, name: str) -> History:
        """Promotion history of model ``name``."""
        return History(self.settings.state_dir / "history" / f"{name}.jsonl")

    @cached_property
    def registry(self) -> Registry:
        """The MLflow-backed registry (client created on first use)."""
        return Registry(self.settings.mlflow_uri, self.settings.artifact_root, self.settings.state_dir / "locks")
