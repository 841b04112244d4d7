"""Models: training a LightGBM challenger, the MLflow registry, and the promotion history.

Owns LightGBM (:mod:`~retrainer.model.training`) and MLflow (:mod:`~retrainer.model.registry`,
including the serving code MLflow stores with each version), and the append-only history of
decisions and rollbacks (:mod:`~retrainer.model.history`).
"""
