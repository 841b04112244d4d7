"""Prefect deployments of retrainer's flows."""
