"""Reading a model's configuration once per flow run."""

from __future__ import annotations

from prefect import task

from retrainer.config import ModelConfig
from tasks._common import workspace


@task(name="load-model-config")
def load_model_config(model: str) -> ModelConfig:
    """Read ``model``'s config once per run, so every step works from the same values.

    Raises:
        ConfigError: the config file is missing or invalid, or defines no such model.
    """
    return workspace().model(model)
