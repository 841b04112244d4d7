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
which a transaction could not. On PostgreSQL the lock is fenced: the holder's writes go through the
lock's own session, so a holder whose session the server dropped (a network cut, an administrator,
``idle_session_timeout``), and whose lock another process may now hold, writes nothing: it gets
:class:`~retrainer.errors.StorageError` naming the lost lock. :meth:`Metadata.confirm` checks the
same before a change the store cannot fence (an alias move in MLflow).

Nothing connects until first use; a SQLite file that does not exist yet reads as empty and is
created by the first write. Every failure is translated: an unreachable database is a
:class:`~retrainer.errors.TransientStorageError` naming it (password hidden), refused credentials a
final :class:`~retrainer.errors.StorageError`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrainer.errors import StorageError, TransientStorageError
from retrainer.fsutil import file_lock
from retrainer.storage.blobs import first_line

if TYPE_CHECKING:
    import sqlalchemy as sa

_SQLITE = "sqlite:///"
_SCHEMA_LOCK = 0x7265_7472_6169_6E  # "retrain": serialises table creation on PostgreSQL
# Causes that waiting will not cure, though the driver reports them as a failure to connect.
_REFUSED = (
    "authentication failed",
    "does not exist",
    "no password supplied",
    "no pg_hba.conf entry",
    "ssl was required",
    "does not support ssl",
    "permission denied",
)
# Keepalives on every PostgreSQL connection, both ways: a worker cut off from the server notices in
# about a minute, and the server drops a cut-off holder's session (and so its locks) as fast, instead
# of after the kernel's two hours. idle_session_timeout=0: a lock's session waits idle during an
# alias move or a training step and must not be dropped for it.
_PG_SESSION = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "options": "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
    " -c idle_session_timeout=0",
}
_LIBPQ_DRIVERS = {"psycopg", "psycopg2"}
_schema_ready: set[str] = set()
_schema_guard = threading.Lock()


class _Held(threading.local):
    """The locks this thread holds, per store URL, innermost last (with its session on PostgreSQL)."""

    def __init__(self) -> None:
        self.locks: list[tuple[str, str, Any]] = []


_held = _Held()


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
        with self._writing(f"writing {kind} of {scope}") as conn:
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
        with self._writing(f"deleting {kind} of {scope}") as conn:
            conn.execute(statement)

    def append(self, stream: str, *bodies: str) -> None:
        """Append lines to ``stream`` durably, all or none (committed before this returns)."""
        tables = _tables()
        with self._writing(f"appending to {stream}") as conn:
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
        Locks are not re-entrant: taking one this thread already holds raises instead of waiting
        for itself forever.

        Raises:
            RuntimeError: this thread already holds ``name`` on this store.
        """
        if any(held == name for held, _ in self._held_here()):
            raise RuntimeError(f"the lock {name} is already held by this thread; taking it again would never end")
        path = self.sqlite_file
        if path is not None:
            digest = hashlib.sha256(name.encode()).hexdigest()[:24]
            with ExitStack() as stack:
                with self._errors(f"taking the lock {name}"):
                    stack.enter_context(file_lock(path.parent / f"{path.name}.locks" / f"{digest}.lock"))
                stack.enter_context(self._holding(name, None))
                yield
            return
        with self._advisory_lock(name) as session, self._holding(name, session):
            yield

    def _held_here(self) -> list[tuple[str, Any]]:
        """The locks this thread holds on this store, innermost first: (name, session or None)."""
        return [(name, session) for url, name, session in reversed(_held.locks) if url == self.url]

    def confirm(self, name: str) -> None:
        """Make sure this thread still holds the lock ``name``: call it right before an outside change.

        Raises:
            RuntimeError: this thread never took ``name``.
            StorageError: the database dropped the lock's session, so another process may hold it.
        """
        for held, session in self._held_here():
            if held == name:
                if session is not None:
                    with self._errors(f"checking the lock {name}"), self._fenced(name, session):
                        session.exec_driver_sql("SELECT 1")
                        session.commit()
                return
        raise RuntimeError(f"the lock {name} is not held by this thread")

    @contextmanager
    def _holding(self, name: str, session: Any) -> Iterator[None]:
        _held.locks.append((self.url, name, session))
        try:
            yield
        finally:
            _held.locks.pop()

    @contextmanager
    def _advisory_lock(self, name: str) -> Iterator[Any]:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        # A session of its own, outside the pool: a process waiting for many locks cannot starve its
        # own reads and writes of connections.
        with self._errors(f"taking the lock {name}"):
            session = self._lock_engine.connect()
        try:
            with self._errors(f"taking the lock {name}"):
                session.exec_driver_sql("SELECT pg_advisory_lock(%(key)s)", {"key": key})
                session.commit()
            yield session
        finally:
            try:
                session.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": key})
                session.commit()
            except Exception:  # noqa: BLE001 - a lost session already released its locks
                session.invalidate()
            session.close()

    @contextmanager
    def _writing(self, what: str) -> Iterator[Any]:
        """A transaction for a write: on the session of the innermost lock this thread holds here, if any."""
        session = next(((n, c) for n, c in self._held_here() if c is not None), None)
        if session is None:
            with self._errors(what), self._engine().begin() as conn:
                yield conn
            return
        name, conn = session
        with self._errors(what), self._fenced(name, conn), conn.begin():
            yield conn

    @contextmanager
    def _fenced(self, name: str, session: Any) -> Iterator[None]:
        from sqlalchemy import exc as sa_exc

        lost = StorageError(
            f"metadata store {self.display}: lost the lock {name} (its session was dropped); nothing written"
        )
        if session.invalidated:
            raise lost
        try:
            yield
        except sa_exc.DBAPIError as exc:
            if exc.connection_invalidated or session.invalidated:
                raise lost from None
            raise

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
                self.url, pool_pre_ping=True, pool_size=3, max_overflow=4, connect_args=self._connect_args()
            )

    @cached_property
    def _lock_engine(self) -> sa.Engine:
        import sqlalchemy as sa

        self._engine()  # the tables exist before a lock's session writes through them
        with self._errors("opening the store"):
            return sa.create_engine(self.url, poolclass=sa.pool.NullPool, connect_args=self._connect_args())

    def _connect_args(self) -> dict[str, Any]:
        from sqlalchemy.engine import make_url

        args: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout))}
        if make_url(self.url).get_dialect().driver in _LIBPQ_DRIVERS:
            args |= _PG_SESSION
        return args

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from sqlalchemy import exc as sa_exc

        try:
            yield
        except (StorageError, TransientStorageError):
            raise
        except sa_exc.ArgumentError as exc:
            raise StorageError(f"metadata store {self.display}: invalid URL: {first_line(exc)}") from None
        except sa_exc.NoSuchModuleError as exc:
            raise StorageError(f"metadata store {self.display}: no driver: {first_line(exc)}") from None
        except sa_exc.DBAPIError as exc:
            raise self._translate(exc, what) from None
        except sa_exc.TimeoutError as exc:  # every pooled connection busy: load, not a fault
            raise TransientStorageError(f"metadata store {self.display} is busy ({what}): {first_line(exc)}") from None
        except (sa_exc.SQLAlchemyError, ValueError, OSError) as exc:
            # A malformed URL (a port that is no number), a SQLite path that cannot be created.
            raise StorageError(f"metadata store {self.display}: {what} failed: {first_line(exc)}") from None

    def _translate(self, exc: Any, what: str) -> StorageError:
        from sqlalchemy import exc as sa_exc

        first = first_line(exc.orig if exc.orig is not None else exc)
        if any(marker in first.lower() for marker in _REFUSED):
            return StorageError(f"metadata store {self.display} refused the connection ({what}): {first}")
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return TransientStorageError(f"metadata store {self.display} is unreachable ({what}): {first}")
        return StorageError(f"metadata store {self.display}: {what} failed: {first}")


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
