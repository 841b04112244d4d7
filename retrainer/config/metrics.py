"""Names and directions of the metrics retrainer judges models on.

Kept apart from the metric arithmetic so that configuration can be validated without numpy or
scikit-learn.
"""

from __future__ import annotations

from typing import Literal

TaskKind = Literal["binary", "multiclass", "regression"]

HIGHER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "log_loss": False,
    "f1": True,
    "precision": True,
    "recall": True,
    "accuracy": True,
    "macro_f1": True,
    "rmse": False,
    "mae": False,
    "r2": True,
}

METRICS_BY_TASK: dict[TaskKind, tuple[str, ...]] = {
    "binary": ("roc_auc", "log_loss", "f1", "precision", "recall", "accuracy"),
    "multiclass": ("macro_f1", "accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}

DEFAULT_PRIMARY: dict[TaskKind, str] = {
    "binary": "roc_auc",
    "multiclass": "macro_f1",
    "regression": "rmse",
}


def orientation(metric: str) -> float:
    """Return +1.0 when a larger value of ``metric`` is better, -1.0 when a smaller one is."""
    return 1.0 if HIGHER_IS_BETTER[metric] else -1.0
