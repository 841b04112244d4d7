"""The retraining cycle: which batches train and judge, how the decision is recorded, and rollback.

Owns the plan of a retrain (training window, holdout, lineage), concluding a judgement into a
promotion, rejection or dry run (the alias compare-and-set and its history line), rolling back to
the champion a promotion replaced, and the decision record shown in Prefect.
"""
