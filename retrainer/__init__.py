"""retrainer: event-driven retraining for tabular LightGBM models on Prefect and MLflow.

The package holds the Prefect-free core; ``flows/`` and ``tasks/`` wrap it for Prefect.
Importing it does nothing: no client, tracking URI or directory is created at import.
"""

__version__ = "0.1.0"
