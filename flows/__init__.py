"""Prefect flows, one per job; each reads like a table of contents of its tasks."""
