"""Process settings: one object read from ``RETRAINER_*`` environment variables (and ``MLFLOW_TRACKING_URI``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from retrainer.errors import ConfigError


class Settings(BaseSettings):
    """Process settings from ``RETRAINER_*`` environment variables (and ``MLFLOW_TRACKING_URI``).

    Paths are kept as given; :meth:`resolved` anchors them. Nothing is created on disk here.
    """

    model_config = SettingsConfigDict(env_prefix="RETRAINER_", extra="ignore", frozen=True)

    home: Path = Field(Path(".retrainer"), description="Local state directory (default stores, local servers)")
    config: Path = Field(Path("retrainer.yaml"), description="Path of the YAML model config")
    data_url: str | None = Field(
        None,
        validation_alias=AliasChoices("RETRAINER_DATA_URL", "RETRAINER_DATA_ROOT", "data_url"),
        description="Data store: a local folder or an s3:// URL; default <home>/data",
    )
    metadata_url: str | None = Field(
        None,
        validation_alias=AliasChoices("RETRAINER_METADATA_URL", "metadata_url"),
        description="Metadata store (SQLAlchemy URL, e.g. postgresql+psycopg://...); default SQLite <home>/metadata.db",
    )
    tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "RETRAINER_TRACKING_URI"),
        description="MLflow tracking/registry URI; default SQLite under <home>",
    )
    webhook_secret: SecretStr | None = Field(None, description="Shared secret of the webhook receiver and sender")
    outage_budget_seconds: float = Field(
        120.0, gt=0, allow_inf_nan=False, description="How long registry steps retry an unreachable registry"
    )

    @property
    def data_location(self) -> str:
        """The data store in force: an ``s3://`` URL or an absolute folder."""
        if self.data_url and self.data_url.startswith("s3://"):
            return self.data_url
        return str(Path(self.data_url).absolute() if self.data_url else (self.home / "data").absolute())

    @property
    def metadata_location(self) -> str:
        """The metadata store's SQLAlchemy URL in force."""
        return self.metadata_url or f"sqlite:///{(self.home / 'metadata.db').absolute()}"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow URI in force."""
        return self.tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').absolute()}"

    @property
    def artifact_root(self) -> Path:
        """Where model artifacts go when retrainer creates the MLflow experiment."""
        return (self.home / "mlartifacts").absolute()

    @property
    def state_dir(self) -> Path:
        """Absolute state directory."""
        return self.home.absolute()


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, with keyword overrides taking precedence.

    Raises:
        ConfigError: a ``RETRAINER_*`` variable holds a value its setting refuses; the message names it.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [f"RETRAINER_{str(e['loc'][0]).upper()}={e.get('input')!r}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid settings\n" + "\n".join(problems)) from None
