"""Monitoring the champion: its reference sample, the window checked, drift and performance, incidents.

One module per piece, none importing Prefect:

* :mod:`~retrainer.monitor.reference`: the champion's reference sample, where it is stored, and
  rebuilding a missing one from the champion's recorded training batches;
* :mod:`~retrainer.monitor.window`: which batches a check covers, and reading and predicting them;
* :mod:`~retrainer.monitor.check`: the drift check, its verdict rules, summary and run metrics;
* :mod:`~retrainer.monitor.fast_stats`: exact drift statistics in polars for big windows;
* :mod:`~retrainer.monitor.evidently`: Evidently's report (the only module importing Evidently);
* :mod:`~retrainer.monitor.page`: the verdict block opening the Evidently page;
* :mod:`~retrainer.monitor.performance`: the labelled-performance rule and the holdout figure;
* :mod:`~retrainer.monitor.incidents`: the incident rules (k of n, cooldown, absorption,
  re-baselining) and their persisted book;
* :mod:`~retrainer.monitor.announce`: the events a newly opened incident sends;
* :mod:`~retrainer.monitor.record`: the check's MLflow monitoring run and its markdown record;
* :mod:`~retrainer.monitor.snapshot`: reading Evidently's JSON snapshot.
"""
