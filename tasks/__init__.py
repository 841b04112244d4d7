"""Prefect tasks: thin wrappers (names, retries, artifacts) over the core in ``retrainer``."""
