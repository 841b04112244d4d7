"""retrainer: event-driven retraining for tabular LightGBM models on Prefect and MLflow.

Every subpackage but :mod:`retrainer.app` is the Prefect-free core; ``tasks/`` wrap it for Prefect,
``flows/`` wire the tasks, ``deployments/`` serve the flows, and ``retrainer.app`` (the command line
and the demo) sits on top. ``pyproject.toml`` holds these layers as import-linter contracts.
Importing any of it does nothing: no client, tracking URI or directory is created at import.
"""

__version__ = "0.1.0"
