"""The scaled layout on one machine: PostgreSQL, Redis, SeaweedFS S3, Prefect (2 API replicas), MLflow, workers.

Every component runs as a real process on loopback, on free ports picked at start, under one root directory
(one log file per process in ``ROOT/logs``). Each process is started in its own session (so its own process
group) and stopped by its PID/process group, never by name. A component that does not become healthy within
its bound raises :class:`StackError` with the tail of its log.

Usage::

    with Stack() as stack:
        env = stack.client_env(stack.prefect_api_urls[0])
        worker = stack.start_worker("w1", "pool", workdir, stack.prefect_api_urls[1])
        ...
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BIN = Path(sys.executable).parent
DATABASES = ("prefect", "mlflow", "retrainer")
DATA_BUCKET = "retrainer-data"
ARTIFACT_BUCKET = "mlflow-artifacts"
S3_REGION = "us-east-1"
# Variables of the calling environment that would leak another server, store or credential into a child.
_FOREIGN_PREFIXES = ("PREFECT_", "MLFLOW_", "AWS_", "RETRAINER_")
# SeaweedFS' embedded admin worker dials the admin gRPC port at admin HTTP port + this offset, whatever
# -admin.port.grpc says: the two ports are chosen with this offset.
_WEED_GRPC_OFFSET = 10000
# How a server process is stopped before SIGKILL of its group: (signal, seconds to wait) in turn.
_SERVER_STOP = ((signal.SIGTERM, 15.0), (signal.SIGINT, 5.0))
# SeaweedFS' graceful stop waited 2-12 s here for its filer/volume; its data dies with the root anyway.
_STOP_PLANS = {"s3": ((signal.SIGTERM, 3.0),)}


class StackError(RuntimeError):
    """A component of the stack failed to start or stop within its bound."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair(offset: int) -> int:
    """Return a free port ``p`` such that ``p + offset`` is free too (both below 65536)."""
    for _ in range(200):
        port = free_port()
        if port + offset < 65536 and _port_is_free(port + offset):
            return port
    raise StackError(f"no free pair of ports {offset} apart")


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """Return (state, ppid, pgid) of a live process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def group_members(pgid: int) -> list[int]:
    """Return the PIDs of the non-zombie processes in process group ``pgid``.

    Zombies are left out: this machine's PID 1 does not always reap orphans, and a zombie holds nothing.
    """
    found = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] != "Z":
            found.append(pid)
    return found


def descendants(pid: int) -> list[int]:
    """Return the PIDs of all live descendants of ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for other in _all_pids():
        stat = _proc_stat(other)
        if stat is not None and stat[0] != "Z":
            children.setdefault(stat[1], []).append(other)
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


@dataclass
class Proc:
    """A process started by the stack: its name, Popen object (own session; pgid == pid) and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The PID, which is also the process group id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the group leader is still running."""
        return self.popen.poll() is None


def spawn(name: str, argv: Sequence[str | Path], *, env: Mapping[str, str], cwd: Path, logs: Path) -> Proc:
    """Start ``argv`` in its own session with stdout/stderr appended to ``logs/<name>.log``."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [str(arg) for arg in argv],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def stop_proc(proc: Proc, plan: Iterable[tuple[int, float]] = ((signal.SIGTERM, 15.0),)) -> None:
    """Stop a process: each (signal, wait) of ``plan`` in turn to its group, then SIGKILL whatever is left.

    Returns once the leader is reaped and the group holds no live process (bounded: raises StackError after
    10 s more).
    """
    for sig, wait in plan:
        if not proc.alive():
            break
        _signal_group(proc.pid, sig)
        try:
            proc.popen.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    _signal_group(proc.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)
    _wait_group_gone(proc.pid, 10.0, proc.name)


def kill_tree(proc: Proc) -> list[int]:
    """SIGKILL a process, its group and every descendant's group at once, as if its machine died.

    Descendants are frozen with SIGSTOP first so none can fork away while the tree is collected (Prefect's
    process worker starts each flow run in a session of its own, out of the worker's group). Returns the
    process groups that were killed.
    """
    frozen: set[int] = set()
    while True:
        members = set(group_members(proc.pid))
        if proc.alive():
            members |= {proc.pid, *descendants(proc.pid)}
        todo = members - frozen
        if not todo:
            break
        for pid in todo:
            _signal_pid(pid, signal.SIGSTOP)
        frozen |= todo
    groups = {proc.pid} | {stat[2] for pid in frozen if (stat := _proc_stat(pid)) is not None}
    for pgid in groups:
        _signal_group(pgid, signal.SIGKILL)
    for pid in frozen:
        _signal_pid(pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)
    for pgid in groups:
        _wait_group_gone(pgid, 10.0, proc.name)
    return sorted(groups)


def _wait_group_gone(pgid: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            raise StackError(f"{what}: process group {pgid} still has {group_members(pgid)}")
        time.sleep(0.1)


def wait_healthy(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None) -> None:
    """Poll ``check`` every 0.25 s until it returns True.

    Raises:
        StackError: after ``timeout`` s, or at once when ``proc`` has exited; the message holds its log tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):  # any failure of a probe means "not healthy yet"
            if check():
                return
        if proc is not None and not proc.alive():
            raise StackError(f"{what} exited with {proc.popen.returncode}:\n{log_tail(proc.log)}")
        if time.monotonic() > deadline:
            tail = log_tail(proc.log) if proc is not None else ""
            raise StackError(f"{what} not healthy after {timeout:.0f} s:\n{tail}")
        time.sleep(0.25)


def _http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=2).status_code == 200


def _log_has(log: Path, offset: int, marker: str) -> bool:
    with log.open("rb") as handle:
        handle.seek(offset)
        return marker.encode() in handle.read()


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def clean_environ() -> dict[str, str]:
    """The calling environment without any PREFECT_/MLFLOW_/AWS_/RETRAINER_ variable, venv bin first on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_FOREIGN_PREFIXES)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Worker:
    """A running ``prefect worker start``: its name, pool, working directory, API URL and process."""

    name: str
    pool: str
    workdir: Path
    api_url: str
    proc: Proc
    killed_groups: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The worker's PID, which is also its process group id."""
        return self.proc.pid


class Stack:
    """The whole scaled layout on loopback; a context manager (``with Stack() as stack``).

    Contract: ``start()`` (or ``__enter__``) starts PostgreSQL, Redis, SeaweedFS S3, Prefect (migrations,
    one services process, ``replicas`` API processes) and MLflow, in that order, each healthy before the
    next; ``stop()`` (or ``__exit__``) stops them in reverse order, workers first, and is safe to call
    after a failed start. Start timings are in ``timings`` (seconds per component).
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        replicas: int = 2,
        mlflow_workers: int = 1,
        keep_root: bool = False,
    ) -> None:
        """Prepare a stack under ``root`` (a fresh temp dir when None; removed by stop() unless ``keep_root``).

        ``root`` must be traversable by the ``postgres`` user (it is made mode 0755).
        """
        self.own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="retrainer-scale-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)
        self.replicas = replicas
        self.mlflow_workers = mlflow_workers
        self.keep_root = keep_root
        self.timings: dict[str, float] = {}
        self.stop_timings: dict[str, float] = {}
        self.summary = ""
        self.stop_summary = ""
        self._stop_errors: list[str] = []
        self.pg_user = "retrainer"
        self.pg_password = secrets.token_hex(16)
        self.pg_port = 0
        self.redis_port = 0
        self.s3_port = 0
        self.s3_key = "retrainer-" + secrets.token_hex(4)
        self.s3_secret = secrets.token_hex(20)
        self.s3_region = S3_REGION
        self.mlflow_port = 0
        self.prefect_api_urls: list[str] = []
        self._procs: dict[str, Proc] = {}
        self._workers: list[Worker] = []
        self._pg_started = False

    # -- context manager ------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- public addresses -----------------------------------------------------------------------------

    def postgres_url(self, db: str = "retrainer", driver: str = "psycopg", password: str | None = None) -> str:
        """SQLAlchemy URL of database ``db`` for the stack's role over TCP, e.g. ``postgresql+psycopg://...``.

        ``driver`` '' gives a plain ``postgresql://`` (libpq) URL; ``password`` overrides the real one.
        """
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        secret = self.pg_password if password is None else password
        return f"{scheme}://{self.pg_user}:{secret}@127.0.0.1:{self.pg_port}/{db}"

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def s3_endpoint(self) -> str:
        """The S3 endpoint URL (plain HTTP)."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking server URL."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def data_url(self) -> str:
        """Where retrainer keeps its data (RETRAINER_DATA_URL)."""
        return f"s3://{DATA_BUCKET}/retrainer"

    def s3_client(self, secret: str | None = None) -> Any:
        """A boto3 S3 client for the stack's endpoint; ``secret`` overrides the real secret key."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_key,
            aws_secret_access_key=self.s3_secret if secret is None else secret,
            region_name=self.s3_region,
        )

    def storage_options(self) -> dict[str, str]:
        """polars/object_store ``storage_options`` for the stack's S3."""
        return {
            "aws_access_key_id": self.s3_key,
            "aws_secret_access_key": self.s3_secret,
            "aws_endpoint_url": self.s3_endpoint,
            "aws_region": self.s3_region,
            "aws_allow_http": "true",
        }

    def s3_env(self) -> dict[str, str]:
        """The AWS_* and MLFLOW_S3_ENDPOINT_URL variables that point boto3/MLflow/polars at the stack's S3."""
        return {
            "AWS_ACCESS_KEY_ID": self.s3_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret,
            "AWS_ENDPOINT_URL": self.s3_endpoint,
            "AWS_REGION": self.s3_region,
            "AWS_DEFAULT_REGION": self.s3_region,
            "AWS_ALLOW_HTTP": "true",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
        }

    def base_env(self) -> dict[str, str]:
        """The stack's own variables for a client or worker (no PREFECT_API_URL, nothing of os.environ)."""
        return {
            **self.s3_env(),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "RETRAINER_METADATA_URL": self.postgres_url("retrainer"),
            "RETRAINER_DATA_URL": self.data_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "DO_NOT_TRACK": "true",
        }

    def client_env(self, api_url: str | None = None) -> dict[str, str]:
        """A complete environment for a client process: clean os.environ + base_env() + PREFECT_API_URL.

        ``api_url`` defaults to the first API replica. No PREFECT_HOME: give each process its own.
        """
        return {**clean_environ(), **self.base_env(), "PREFECT_API_URL": api_url or self.prefect_api_urls[0]}

    # -- start / stop ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every component in order; print the timing summary to stderr."""
        began = time.monotonic()
        for name, step in (
            ("postgres", self._start_postgres),
            ("redis", self._start_redis),
            ("s3", self._start_s3),
            ("prefect-migrate", self._migrate_prefect),
            ("prefect", self._start_prefect),
            ("mlflow", self.start_mlflow),
        ):
            step_began = time.monotonic()
            step()
            self.timings[name] = time.monotonic() - step_began
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())
        self.summary = f"stack up in {time.monotonic() - began:.1f} s: {parts} (root {self.root})"
        print(self.summary, file=sys.stderr)

    def stop(self) -> None:
        """Stop workers, API replicas, services, MLflow, S3, Redis and PostgreSQL, in that order.

        Every process gets bounded waits and then SIGKILL of its process group; the root is removed when
        the stack made it and ``keep_root`` is false.
        """
        began = time.monotonic()
        self._stop_errors = []
        for worker in list(self._workers):
            self._timed_stop(f"worker-{worker.name}", functools.partial(self.stop_worker, worker))
        order = [f"prefect-api-{i}" for i in range(self.replicas)] + ["prefect-services", "mlflow", "s3", "redis"]
        for name in order:
            proc = self._procs.pop(name, None)
            if proc is not None:
                self._timed_stop(name, functools.partial(stop_proc, proc, _STOP_PLANS.get(name, _SERVER_STOP)))
        self._timed_stop("postgres", self._stop_postgres)
        if self.stop_timings:
            parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.stop_timings.items())
            self.stop_summary = f"stack down in {time.monotonic() - began:.1f} s: {parts}"
            print(self.stop_summary, file=sys.stderr)
        if self._stop_errors:
            raise StackError(f"stop failed (root kept: {self.root}): " + "; ".join(self._stop_errors))
        if self.own_root and not self.keep_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _timed_stop(self, name: str, stop: Callable[[], object]) -> None:
        began = time.monotonic()
        try:
            stop()
        except (StackError, subprocess.SubprocessError, OSError) as error:
            self._stop_errors.append(f"{name}: {error}")
        self.stop_timings[name] = time.monotonic() - began

    # -- PostgreSQL -----------------------------------------------------------------------------------

    @property
    def _pg_data(self) -> Path:
        return self.root / "postgres" / "data"

    def _as_postgres(self, *argv: str | Path, timeout: float, what: str) -> None:
        log = self.logs / "postgres-ctl.log"
        with log.open("ab") as out:
            result = subprocess.run(
                ["runuser", "-u", "postgres", "--", *(str(arg) for arg in argv)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if result.returncode != 0:
            server_log = log_tail(self.root / "postgres" / "server.log")
            raise StackError(f"{what} failed ({result.returncode}):\n{log_tail(log)}\n{server_log}")

    def _start_postgres(self) -> None:
        base = self.root / "postgres"
        sockets = base / "sockets"
        for path in (base, self._pg_data, sockets):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
        self._pg_data.chmod(0o700)
        self._as_postgres(
            PG_BIN / "initdb",
            "-D",
            self._pg_data,
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            timeout=120,
            what="initdb",
        )
        self.pg_port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {sockets} "
            "-c max_connections=200 -c fsync=off -c unix_socket_permissions=0700"
        )
        self._pg_started = True
        self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self._pg_data, "-l", base / "server.log", "-o", options, "-w", "-t", "60", "start",
            timeout=90,
            what="pg_ctl start",
        )  # fmt: skip
        self._create_databases(sockets)

    def _create_databases(self, sockets: Path) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(sockets), port=self.pg_port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.pg_user), sql.Literal(self.pg_password)
                )
            )
            for db in DATABASES:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(self.pg_user))
                )

    def _stop_postgres(self) -> None:
        if not self._pg_started:
            return
        self._pg_started = False
        pid_file = self._pg_data / "postmaster.pid"
        try:
            self._as_postgres(
                PG_BIN / "pg_ctl", "-D", self._pg_data, "-m", "fast", "-w", "-t", "30", "stop",
                timeout=45,
                what="pg_ctl stop",
            )  # fmt: skip
        except (StackError, subprocess.TimeoutExpired):
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                _signal_group(pid, signal.SIGKILL)  # pg_ctl starts the postmaster in a session of its own
                _wait_group_gone(pid, 10.0, "postgres")

    # -- Redis ----------------------------------------------------------------------------------------

    def _start_redis(self) -> None:
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        self.redis_port = free_port()
        argv: list[str | Path] = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(data),
        ]  # fmt: skip
        proc = self._spawn("redis", argv, env=clean_environ(), cwd=data)
        wait_healthy(lambda: _redis_ping(self.redis_port), 30, "redis", proc)

    # -- SeaweedFS S3 ---------------------------------------------------------------------------------

    def _start_s3(self) -> None:
        base = self.root / "seaweedfs"
        data = base / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = base / "s3.json"
        identity = {
            "name": "retrainer",
            "credentials": [{"accessKey": self.s3_key, "secretKey": self.s3_secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        config.chmod(0o600)
        self.s3_port = free_port()
        admin = free_port_pair(_WEED_GRPC_OFFSET)
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": self.s3_port,
            "s3.port.grpc": free_port(),
            "admin.port": admin,
            "admin.port.grpc": admin + _WEED_GRPC_OFFSET,
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
        }
        argv: list[str | Path] = [
            BIN / "weed", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
            f"-filer.localSocket={base / 'filer.sock'}", f"-s3.localSocket={base / 's3.sock'}",
            f"-s3.config={config}",
        ]  # fmt: skip
        proc = self._spawn("s3", argv, env=clean_environ(), cwd=base)
        wait_healthy(lambda: self.s3_client().list_buckets() is not None, 60, "SeaweedFS S3", proc)
        client = self.s3_client()
        for bucket in (DATA_BUCKET, ARTIFACT_BUCKET):
            client.create_bucket(Bucket=bucket)

    # -- Prefect --------------------------------------------------------------------------------------

    def prefect_server_env(self, home: Path) -> dict[str, str]:
        """Environment of a Prefect server process (migrations, services, API) with PREFECT_HOME ``home``."""
        home.mkdir(parents=True, exist_ok=True)
        redis = self.redis_url
        return {
            **clean_environ(),
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.postgres_url("prefect", driver="asyncpg"),
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EVENTS_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
            "PREFECT_SERVER_DOCKET_URL": redis,
            "PREFECT_REDIS_MESSAGING_URL": redis,
            "PREFECT_REDIS_WORKER_CLEANUP_QUEUE_URL": redis,
            "DO_NOT_TRACK": "true",
        }

    def _migrate_prefect(self) -> None:
        env = self.prefect_server_env(self.root / "prefect" / "migrate")
        log = self.logs / "prefect-migrate.log"
        with log.open("ab") as out:
            result = subprocess.run(
                [str(BIN / "prefect"), "server", "database", "upgrade", "-y"],
                env=env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(f"prefect server database upgrade failed ({result.returncode}):\n{log_tail(log)}")

    def _start_prefect(self) -> None:
        services = self._spawn(
            "prefect-services",
            [BIN / "prefect", "server", "services", "start"],
            env=self.prefect_server_env(self.root / "prefect" / "services"),
            cwd=self.root,
        )
        apis = []
        for index in range(self.replicas):
            port = free_port()
            api = f"http://127.0.0.1:{port}/api"
            env = {**self.prefect_server_env(self.root / "prefect" / f"api-{index}"), "PREFECT_UI_API_URL": api}
            if index:  # Replicas registering block types at once collide on uq_block_type__slug: one does it.
                env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] = "false"
            argv: list[str | Path] = [BIN / "prefect", "server", "start", "--no-services"]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            apis.append((api, self._spawn(f"prefect-api-{index}", argv, env=env, cwd=self.root)))
        for index, (api, proc) in enumerate(apis):
            healthy = functools.partial(_http_ok, f"{api}/health")
            wait_healthy(healthy, 180, f"Prefect API replica {index}", proc)
            self.prefect_api_urls.append(api)
        wait_healthy(self._services_subscribed, 120, "Prefect services (Redis consumer groups)", services)

    def _services_subscribed(self) -> bool:
        """Whether the services process has joined the events stream (event persister and triggers)."""
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            groups = {group["name"].decode() for group in client.xinfo_groups("events")}
        finally:
            client.close()
        return {"event-persister", "reactive-triggers"} <= groups

    # -- MLflow ---------------------------------------------------------------------------------------

    def start_mlflow(self) -> None:
        """Start the MLflow server (the same port again after stop_mlflow()) and wait for /health."""
        if "mlflow" in self._procs:
            raise StackError("MLflow is already running")
        if not self.mlflow_port:
            self.mlflow_port = free_port()
        home = self.root / "mlflow"
        home.mkdir(exist_ok=True)
        env = {
            **clean_environ(),
            **self.s3_env(),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # MLflow 3's GenAI job runner (huey consumers, periodic scorers) is of no use here.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "DO_NOT_TRACK": "true",
            "HOME": str(home),
        }
        argv: list[str | Path] = [
            BIN / "mlflow", "server",
            "--backend-store-uri", self.postgres_url("mlflow"),
            "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}",
            "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", str(self.mlflow_workers),
        ]  # fmt: skip
        proc = self._spawn("mlflow", argv, env=env, cwd=home)
        wait_healthy(lambda: _http_ok(f"{self.mlflow_uri}/health"), 180, "MLflow server", proc)

    def stop_mlflow(self) -> None:
        """Stop the MLflow server (TERM, then KILL of its process group); its port is kept for start_mlflow()."""
        proc = self._procs.pop("mlflow", None)
        if proc is not None:
            stop_proc(proc, ((signal.SIGTERM, 15.0),))

    # -- workers --------------------------------------------------------------------------------------

    def start_worker(
        self,
        name: str,
        pool: str,
        workdir: Path,
        api_url: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        wait: bool = True,
    ) -> Worker:
        """Start ``prefect worker start --pool POOL --limit 1 --name NAME`` in ``workdir`` (created).

        The worker has its own PREFECT_HOME and RETRAINER_HOME under ``workdir``, polls every second and
        talks to ``api_url`` (default: the first replica); ``extra_env`` is applied last. With ``wait``, returns
        once the worker's log says it started (bounded: 90 s, StackError with the log tail).
        """
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        api = api_url or self.prefect_api_urls[0]
        env = {
            **self.client_env(api),
            "PREFECT_HOME": str(workdir / ".prefect"),
            "RETRAINER_HOME": str(workdir / ".retrainer"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
            "TMPDIR": str(workdir / "tmp"),
            **(extra_env or {}),
        }
        argv: list[str | Path] = [BIN / "prefect", "worker", "start", "--pool", pool, "--limit", "1", "--name", name]
        log = self.log(f"worker-{name}")
        offset = log.stat().st_size if log.exists() else 0  # a worker started again under the same name
        proc = spawn(f"worker-{name}", argv, env=env, cwd=workdir, logs=self.logs)
        worker = Worker(name, pool, workdir, api, proc)
        self._workers.append(worker)
        if wait:
            started = functools.partial(_log_has, log, offset, f"Worker {name!r} started")
            wait_healthy(started, 90, f"worker {name}", proc)
        return worker

    def stop_worker(self, worker: Worker) -> None:
        """Stop a worker: SIGTERM, 3 s, SIGINT, 10 s, then SIGKILL of its group and all its descendants.

        ``prefect worker start`` ignores SIGTERM for 40 s+; SIGINT is what makes it exit cleanly.
        """
        if worker in self._workers:
            self._workers.remove(worker)
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGINT, 10.0)):
            if not worker.proc.alive():
                break
            _signal_group(worker.pid, sig)
            try:
                worker.proc.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        worker.killed_groups = kill_tree(worker.proc)

    def kill_worker(self, worker: Worker) -> list[int]:
        """SIGKILL a worker, its process group and its flow runs' groups at once (a machine dying mid-run).

        Returns the process groups killed; each holds no live process when this returns.
        """
        if worker in self._workers:
            self._workers.remove(worker)
        worker.killed_groups = kill_tree(worker.proc)
        return worker.killed_groups

    # -- helpers --------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str | Path], *, env: Mapping[str, str], cwd: Path) -> Proc:
        """Spawn a server process of the stack, with its temp files (TMPDIR) under the root too."""
        tmp = self.root / "tmp" / name
        tmp.mkdir(parents=True, exist_ok=True)
        proc = spawn(name, argv, env={**env, "TMPDIR": str(tmp)}, cwd=cwd, logs=self.logs)
        self._procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        """The log file of a process of the stack (e.g. 'prefect-api-0', 'mlflow', 'worker-w1')."""
        return self.logs / f"{name}.log"
