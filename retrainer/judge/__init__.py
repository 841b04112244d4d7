"""Judging a challenger against the champion on the same rows: metrics, confidence bounds, the policy.

Owns the metric arithmetic (:mod:`~retrainer.judge.metrics`), the paired bootstrap
(:mod:`~retrainer.judge.bootstrap`), the large-sample normal bounds such as DeLong's
(:mod:`~retrainer.judge.normal_bounds`) and the promotion decision as a pure function of two score
sets and a policy (:mod:`~retrainer.judge.policy`). Nothing here does I/O.
"""
