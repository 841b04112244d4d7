"""Batches: the data contract, ingest with quarantine, the batch store, traffic and labels, feature encoding.

Owns everything between a file that lands and a typed frame a model can train on: parsing and
checking a batch (:mod:`~retrainer.data.contract`), storing or quarantining it with its reason
(:mod:`~retrainer.data.ingest`, :mod:`~retrainer.data.store`), unlabelled inference traffic and the
late labels joined to it by id (:mod:`~retrainer.data.traffic`), turning frames into the model's
matrix (:mod:`~retrainer.data.features`) and the seeded synthetic batches of the demo, tests and
benchmarks (:mod:`~retrainer.data.synth`).
"""
