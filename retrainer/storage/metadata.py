"""The metadata store: retrainer's own small records in a SQL database, through SQLAlchemy.

Two tables hold everything:

* ``retrainer_documents``: one JSON document per ``(kind, scope, name)`` (a model's manifest, its
  incident state, an intent, a ledger) with a revision. :meth:`Metadata.put` given the revision
  the writer read is a compare-and-set: a writer that lost its lock cannot overwrite a newer
  document, it gets :class:`~retrainer.errors.StorageError` instead.
* ``retrainer_lines``: append-only lines per stream (a model's promotion history), in insert order.

:meth:`Metadata.lock` is a named mutual exclusion across processes and machines, held by the
database: a PostgreSQL session advisory lock (released by the server when the holder's connection
dies, so a killed worker never keeps it), or for a SQLite file (one machine by nature) an ``flock``
beside it. It spans several commits and outside calls (an alias move between two journal writes),
which a transaction could not.

Nothing connects until first use; a SQLite file that does not exist yet reads as empty and is
created by the first write. Every failure is translated: an unreachable database is a
:class:`~retrainer.errors.TransientStorageError` naming it (password hidden), refused credentials a
final :class:`~retrainer.errors.StorageError`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.errors import StorageError, TransientStorageError
from retrainer.fsutil import file_lock

if TYPE_CHECKING:
    import sqlalchemy as sa

_SQLITE = "sqlite:///"
_SCHEMA_LOCK = 0x7265_7472_6169_6E  # "retrain": serialises table creation on PostgreSQL
_REFUSED = ("password authentication failed", "authentication failed", "does not exist", "no password supplied")
_schema_ready: set[str] = set()
_schema_guard = threading.Lock()


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"{_SQLITE}{path.absolute()}"


@dataclass(frozen=True)
class Document:
    """A stored document and the revision it was read at (1 for the first write)."""

    body: str
    revision: int


class Metadata:
    """One metadata database, addressed by a SQLAlchemy URL (``sqlite:///...``, ``postgresql+psycopg://...``).

    Args:
        url: The database URL; credentials may be part of it (never shown: see :attr:`display`).
        connect_timeout: Seconds to wait for a connection before the store counts as unreachable.
    """

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout

    @property
    def display(self) -> str:
        """The URL with its password masked, for messages and logs."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL must still be nameable, never echoed whole
            return self.url.split("@")[-1]

    @property
    def sqlite_file(self) -> Path | None:
        """The file of a SQLite store (``None`` for a server database)."""
        return Path(self.url.removeprefix(_SQLITE)) if self.url.startswith(_SQLITE) else None

    def check(self) -> None:
        """Connect once and make sure the tables exist: the start-up check of a process.

        Raises:
            StorageError: the URL is invalid or the database refused the credentials (final).
            TransientStorageError: the database could not be reached.
        """
        self._engine()

    def get(self, kind: str, scope: str, name: str = "") -> Document | None:
        """The document, or ``None`` when it was never written."""
        if self._absent():
            return None
        tables = _tables()
        t = tables.documents
        query = tables.sa.select(t.c.body, t.c.revision).where(t.c.kind == kind, t.c.scope == scope, t.c.name == name)
        with self._errors(f"reading {kind} of {scope}"), self._engine().connect() as conn:
            row = conn.execute(query).first()
        return Document(row[0], int(row[1])) if row else None

    def documents(self, kind: str, scope: str) -> list[tuple[str, Document]]:
        """Every document of ``kind`` in ``scope``, by name."""
        if self._absent():
            return []
        tables = _tables()
        t = tables.documents
        query = (
            tables.sa.select(t.c.name, t.c.body, t.c.revision)
            .where(t.c.kind == kind, t.c.scope == scope)
            .order_by(t.c.name)
        )
        with self._errors(f"reading {kind} of {scope}"), self._engine().connect() as conn:
            return [(row[0], Document(row[1], int(row[2]))) for row in conn.execute(query)]

    def put(self, kind: str, scope: str, name: str, body: str, expected: int | None = None) -> int:
        """Write a document atomically; return its new revision.

        Args:
            kind: What the document is (``manifest``, ``incidents``, ``intent``...).
            scope: Whose it is (a model's name).
            name: Which one of its kind in the scope.
            body: The JSON text.
            expected: The revision the writer read (0: it read none); ``None`` writes unconditionally.

        Raises:
            StorageError: ``expected`` is stale: another writer changed the document since.
        """
        from sqlalchemy import exc as sa_exc

        tables = _tables()
        sa, t = tables.sa, tables.documents
        where = (t.c.kind == kind, t.c.scope == scope, t.c.name == name)
        conflict = StorageError(
            f"{kind} of {scope} ({name or 'default'}) was changed by another writer; nothing written"
        )
        with self._errors(f"writing {kind} of {scope}"), self._engine().begin() as conn:
            if expected is None:
                found = conn.execute(sa.select(t.c.revision).where(*where)).first()
                expected = int(found[0]) if found else 0
            if expected == 0:
                row = {"kind": kind, "scope": scope, "name": name, "body": body, "revision": 1}
                try:
                    conn.execute(sa.insert(t).values(**row))
                except sa_exc.IntegrityError:
                    raise conflict from None
                return 1
            changed = conn.execute(
                sa.update(t).where(*where, t.c.revision == expected).values(body=body, revision=expected + 1)
            )
            if changed.rowcount != 1:
                raise conflict
            return expected + 1

    def delete(self, kind: str, scope: str, name: str = "") -> None:
        """Remove a document (nothing happens when it is absent)."""
        if self._absent():
            return
        tables = _tables()
        t = tables.documents
        statement = tables.sa.delete(t).where(t.c.kind == kind, t.c.scope == scope, t.c.name == name)
        with self._errors(f"deleting {kind} of {scope}"), self._engine().begin() as conn:
            conn.execute(statement)

    def append(self, stream: str, *bodies: str) -> None:
        """Append lines to ``stream`` durably, all or none (committed before this returns)."""
        tables = _tables()
        with self._errors(f"appending to {stream}"), self._engine().begin() as conn:
            for body in bodies:
                conn.execute(tables.sa.insert(tables.lines).values(stream=stream, body=body))

    def lines(self, stream: str) -> list[str]:
        """Every line of ``stream``, oldest first."""
        if self._absent():
            return []
        tables = _tables()
        t = tables.lines
        query = tables.sa.select(t.c.body).where(t.c.stream == stream).order_by(t.c.seq)
        with self._errors(f"reading {stream}"), self._engine().connect() as conn:
            return [row[0] for row in conn.execute(query)]

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the named lock for the block, across every process and machine using this store.

        Waits as long as another holder keeps it. A holder that dies releases it (PostgreSQL drops
        the session's advisory locks with its connection; the kernel drops a dead process's flock).
        """
        path = self.sqlite_file
        if path is not None:
            digest = hashlib.sha256(name.encode()).hexdigest()[:24]
            with file_lock(path.parent / f"{path.name}.locks" / f"{digest}.lock"):
                yield
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._errors(f"taking the lock {name}"):
            conn = self._engine().connect()
        try:
            with self._errors(f"taking the lock {name}"):
                conn.exec_driver_sql("SELECT pg_advisory_lock(%(key)s)", {"key": key})
                conn.commit()
            yield
        finally:
            try:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": key})
                conn.commit()
            except Exception:  # noqa: BLE001 - a lost connection already released its locks
                conn.invalidate()
            conn.close()

    def _absent(self) -> bool:
        path = self.sqlite_file
        return path is not None and not path.exists()

    def _engine(self) -> sa.Engine:
        engine = self._created
        if self.url not in _schema_ready:
            with _schema_guard, self._errors("creating the tables"):
                if self.url not in _schema_ready:
                    _create_schema(engine)
                    _schema_ready.add(self.url)
        return engine

    @cached_property
    def _created(self) -> sa.Engine:
        import sqlalchemy as sa

        with self._errors("opening the store"):
            path = self.sqlite_file
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(self.url, connect_args={"timeout": 60}, poolclass=sa.pool.NullPool)
                sa.event.listen(engine, "connect", _sqlite_pragmas)
                return engine
            return sa.create_engine(
                self.url,
                pool_pre_ping=True,
                pool_size=3,
                max_overflow=4,
                connect_args={"connect_timeout": max(1, round(self.connect_timeout))},
            )

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from sqlalchemy import exc as sa_exc

        try:
            yield
        except (StorageError, TransientStorageError):
            raise
        except sa_exc.ArgumentError as exc:
            raise StorageError(f"metadata store {self.display}: invalid URL: {_first_line(exc)}") from None
        except sa_exc.NoSuchModuleError as exc:
            raise StorageError(f"metadata store {self.display}: no driver: {_first_line(exc)}") from None
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc, what) from None

    def _translate(self, exc: Any, what: str) -> StorageError:
        first = _first_line(exc.orig if exc.orig is not None else exc)
        if any(marker in first for marker in _REFUSED):
            return StorageError(f"metadata store {self.display} refused the connection ({what}): {first}")
        return TransientStorageError(f"metadata store {self.display} is unreachable ({what}): {first}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # WAL lets readers (status) run while a writer commits; FULL keeps every commit through a crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _create_schema(engine: sa.Engine) -> None:
    tables = _tables()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": _SCHEMA_LOCK})
        tables.schema.create_all(conn, checkfirst=True)


@dataclass(frozen=True)
class _Tables:
    sa: Any
    schema: Any
    documents: Any
    lines: Any


_tables_made: list[_Tables] = []


def _tables() -> _Tables:
    """The table definitions, built on first use (SQLAlchemy is imported lazily)."""
    if _tables_made:
        return _tables_made[0]
    import sqlalchemy as sa

    schema = sa.MetaData()
    documents = sa.Table(
        "retrainer_documents",
        schema,
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(256), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    lines = sa.Table(
        "retrainer_lines",
        schema,
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream", sa.String(256), nullable=False, index=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    _tables_made.append(_Tables(sa, schema, documents, lines))
    return _tables_made[0]
