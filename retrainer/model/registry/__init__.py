"""The MLflow registry behind a small interface; the only place that imports MLflow.

:class:`~retrainer.model.registry.client.Registry` tracks runs, registers versions and moves
aliases with a compare-and-set; :mod:`~retrainer.model.registry.store_reader` reads a local SQLite
store directly for quick status (the one module that knows MLflow's table layout);
:mod:`~retrainer.model.registry.serving` is the model code stored with every version, so a user
serves it with plain MLflow.
"""

from retrainer.model.registry.client import CHALLENGER, CHAMPION, Registry, decision_json, pip_requirements
from retrainer.model.registry.mirror import AliasMirror, MirrorReader
from retrainer.model.registry.store_reader import StoreReader
from retrainer.model.registry.versions import RegistryReader, VersionInfo

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "AliasMirror",
    "MirrorReader",
    "Registry",
    "RegistryReader",
    "StoreReader",
    "VersionInfo",
    "decision_json",
    "pip_requirements",
]
