"""Reading MLflow's SQLite store file directly: the one module that knows MLflow's table layout.

``retrainer status`` asks two questions (which version an alias points to; a run's tags and
metrics). Importing MLflow and opening its store costs seconds, a query on the file milliseconds.
The layout is MLflow's internal schema, so this module answers only for the schema revisions it
knows, and ``tests/unit/model/test_registry_reader.py`` pins them to the installed MLflow.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from retrainer.errors import RegistryError, TransientRegistryError
from retrainer.model.registry.versions import VersionInfo

# Revisions of MLflow's SQLite schema whose alias, version, tag and metric tables StoreReader knows
# (MLflow 3.17.2's). Any other revision is read through MLflow itself.
KNOWN_STORE_REVISIONS = frozenset({"dc11669786a5"})
DEFAULT_WORKSPACE = "default"


class StoreReader:
    """Read-only queries on MLflow's SQLite store file, for :meth:`~retrainer.model.registry.client.Registry.reader`.

    Args:
        path: The store's database file; opened read-only for each query.
        busy_seconds: How long a query waits for a writer's lock before it gives up.
    """

    def __init__(self, path: Path, busy_seconds: float = 30.0) -> None:
        self.path = path
        self.busy_seconds = busy_seconds

    def revision(self) -> str | None:
        """The store's schema revision (Alembic's), or ``None`` when the file has none."""
        try:
            rows = self._query("SELECT version_num FROM alembic_version")
        except sqlite3.Error:
            return None
        return str(rows[0][0]) if rows else None

    def alias(self, model: str, alias: str) -> VersionInfo | None:
        """Return the version ``alias`` points to, or ``None`` when unset or the model is unknown."""
        found = self._query(
            "SELECT a.version, v.run_id FROM registered_model_aliases a JOIN model_versions v"
            " ON v.workspace = a.workspace AND v.name = a.name AND v.version = a.version"
            " WHERE a.workspace = ? AND a.name = ? AND a.alias = ?",
            DEFAULT_WORKSPACE,
            model,
            alias,
        )
        if not found:
            return None
        version, run_id = found[0]
        tags = self._query(
            'SELECT "key", value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?',
            DEFAULT_WORKSPACE,
            model,
            version,
        )
        return VersionInfo(model, str(version), run_id or None, {str(k): str(v) for k, v in tags})

    def run_details(self, run_id: str) -> tuple[dict[str, str], dict[str, float]]:
        """Tags and latest metric values of a tracking run.

        Raises:
            RegistryError: no such run.
        """
        if not self._query("SELECT 1 FROM runs WHERE run_uuid = ?", run_id):
            raise RegistryError(f"run {run_id}: not found in {self.path}")
        tags = self._query('SELECT "key", value FROM tags WHERE run_uuid = ?', run_id)
        metrics = self._query('SELECT "key", value, is_nan FROM latest_metrics WHERE run_uuid = ?', run_id)
        return (
            {str(k): str(v) for k, v in tags},
            {str(k): float("nan") if is_nan else float(v) for k, v, is_nan in metrics},
        )

    def _query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=self.busy_seconds)
        try:
            return connection.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            raise TransientRegistryError(f"the MLflow store {self.path} is locked by another process") from None
        finally:
            connection.close()


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store URI; ``None`` for any other store."""
    prefix = "sqlite:///"
    return Path(tracking_uri.removeprefix(prefix)) if tracking_uri.startswith(prefix) else None
