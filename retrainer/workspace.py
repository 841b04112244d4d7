"""The workspace: settings, model configs and the stores they point at, opened on demand."""

from __future__ import annotations

from functools import cached_property

from retrainer.config import ModelConfig, ProjectConfig, Settings, load_project, load_settings
from retrainer.data.store import BatchStore
from retrainer.data.traffic import ModelData
from retrainer.model.history import History
from retrainer.model.registry import AliasMirror, Registry
from retrainer.monitor.incidents import IncidentBook
from retrainer.storage import Metadata, Storage, open_blobs


class Workspace:
    """Everything a command needs, resolved from one :class:`Settings`. Creates nothing on disk.

    Args:
        settings: Settings to use; default: read from the environment.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        """Read settings from the environment (unless given); the config file is read on first use."""
        return cls(settings)

    @cached_property
    def project(self) -> ProjectConfig:
        """The config file the settings name, read once.

        Raises:
            ConfigError: the config file is missing or invalid.
        """
        return load_project(self.settings.config)

    def model(self, name: str) -> ModelConfig:
        """Config of model ``name`` (raises ``UnknownModelError``)."""
        return self.project.model(name)

    @cached_property
    def storage(self) -> Storage:
        """The data store and the metadata store the settings name (nothing connects yet)."""
        return Storage(open_blobs(self.settings.data_location), Metadata(self.settings.metadata_location))

    def store(self, name: str) -> BatchStore:
        """Batch store of model ``name``."""
        return BatchStore(self.storage, name)

    def data(self, name: str) -> ModelData:
        """Labelled batches, inference traffic and label files of model ``name``."""
        return ModelData.of(self.storage, name)

    def history(self, name: str) -> History:
        """Promotion history of model ``name``."""
        return History(self.storage.metadata, name)

    def incidents(self, name: str) -> IncidentBook:
        """Drift checks and incidents of model ``name``."""
        return IncidentBook(self.storage.metadata, name)

    @cached_property
    def registry(self) -> Registry:
        """The MLflow-backed registry (client created on first use)."""
        mirror = AliasMirror(self.storage.metadata)
        return Registry(
            self.settings.mlflow_uri, self.settings.artifact_root, self.settings.state_dir / "locks", mirror
        )
