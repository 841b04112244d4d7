"""Monitoring the champion: its reference sample, the window checked, drift and performance, incidents.

Owns the champion's reference sample, the choice of the window to check, the drift check (exact
statistics in polars on big data, Evidently for its report and other methods), the labelled
performance rule, the incident rules (k of n, cooldown, absorption, re-baselining) with their
persisted book, and the check's record. Evidently is imported by :mod:`~retrainer.monitor.evidently`
only.
"""
