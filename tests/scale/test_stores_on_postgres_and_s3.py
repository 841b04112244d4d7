"""The stores of the scaled layout, for real: PostgreSQL metadata and S3 data, written by processes at once."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retrainer.config import IncidentPolicy
from retrainer.config.project import parse_project
from retrainer.data.ingest import ingest_file
from retrainer.data.store import BatchStore
from retrainer.data.synth import demo_config, make_batch
from retrainer.errors import StorageError, TransientStorageError
from retrainer.monitor.incidents import CheckRecord, IncidentBook, assess
from retrainer.storage import Metadata, S3Access, S3Blobs, Storage
from tests.scale.stack import BIN, Stack, clean_environ

pytestmark = pytest.mark.scale
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _storage(stack: Stack, secret: str | None = None) -> Storage:
    access = S3Access(stack.s3_endpoint, stack.s3_region, stack.s3_key, secret or stack.s3_secret)
    return Storage(S3Blobs(stack.data_url, access), Metadata(stack.postgres_url("retrainer")))


def _ingest_many(url: str, access: S3Access, env: dict[str, str], files: list[str], start: object) -> None:
    os.environ.update(env)  # input files are read with the standard AWS_* variables, as a worker does
    model = "race"
    storage = Storage(S3Blobs(url.split("|")[1], access), Metadata(url.split("|")[0]))
    config = parse_project(demo_config(), "test").model("churn")
    start.wait(timeout=120)  # type: ignore[attr-defined]
    for source in files:
        outcome = ingest_file(BatchStore(storage, model), config, source)
        assert outcome.ok, outcome.error


def test_two_processes_ingesting_at_once_lose_no_manifest_entry(stack: Stack, tmp_path: Path) -> None:
    s3 = stack.s3_client()
    files: list[list[str]] = [[], []]
    for n in range(8):
        path = tmp_path / f"b{n}.parquet"
        make_batch(400, seed=900 + n, day=n).write_parquet(path)
        s3.upload_file(str(path), "retrainer-data", f"landing/race/b{n}.parquet")
        files[n % 2].append(f"s3://retrainer-data/landing/race/b{n}.parquet")
    access = S3Access(stack.s3_endpoint, stack.s3_region, stack.s3_key, stack.s3_secret)
    url = f"{stack.postgres_url('retrainer')}|{stack.data_url}"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_ingest_many, args=(url, access, stack.s3_env(), f, start)) for f in files]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [p.exitcode for p in workers] == [0, 0]
    store = BatchStore(_storage(stack), "race")
    manifest = store.manifest()
    assert sorted(b.source for b in manifest.batches) == sorted(files[0] + files[1])
    assert store.read(manifest.batches).height == 8 * 400  # every listed batch is in S3, whole


def _append_checks(url: str, worker: int, count: int, start: object) -> None:
    book = IncidentBook(Metadata(url), "incident-race")
    policy = IncidentPolicy(k=1000, n=1000, cooldown_seconds=0)
    start.wait(timeout=120)  # type: ignore[attr-defined]
    for i in range(count):
        record = CheckRecord(f"w{worker}-{i:02d}", T0 + timedelta(seconds=i), "1", [f"b{i}"], True, 1.0)
        book.update(lambda state, record=record: assess(state, record, policy, record.at))


def test_incident_updates_from_two_processes_are_all_kept(stack: Stack) -> None:
    url = stack.postgres_url("retrainer")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_append_checks, args=(url, w, 15, start)) for w in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [p.exitcode for p in workers] == [0, 0]
    checks = IncidentBook(Metadata(url), "incident-race").read().checks
    assert sorted(c.check_id for c in checks) == sorted(f"w{w}-{i:02d}" for w in range(2) for i in range(15))


def _hold(url: str, spans: object, start: object) -> None:
    metadata = Metadata(url)
    start.wait(timeout=120)  # type: ignore[attr-defined]
    for _ in range(5):
        with metadata.lock("promotion:lock-race"):
            began = time.monotonic()
            time.sleep(0.05)
            spans.append((began, time.monotonic()))  # type: ignore[attr-defined]


def test_the_promotion_lock_is_held_by_one_process_at_a_time_and_freed_by_a_kill(stack: Stack) -> None:
    url = stack.postgres_url("retrainer")
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    spans = manager.list()
    start = context.Barrier(3)
    workers = [context.Process(target=_hold, args=(url, spans, start)) for _ in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    ordered = sorted(spans)
    assert len(ordered) == 15
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))

    holder = context.Process(target=_hold_forever, args=(url,))
    holder.start()
    time.sleep(3)  # it holds the lock now
    holder.kill()
    holder.join()
    began = time.monotonic()
    with Metadata(url).lock("promotion:dead-holder"):
        waited = time.monotonic() - began
    assert waited < 10  # the server dropped the dead session's lock


def _hold_forever(url: str) -> None:
    with Metadata(url).lock("promotion:dead-holder"):
        time.sleep(600)


def _take_and_write(url: str) -> None:
    metadata = Metadata(url)
    with metadata.lock("promotion:lost-lock"):
        metadata.put("intent", "lost-lock", "winner", "{}")


def _drop_lock_sessions(url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        dropped = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
            )
        ).all()
    engine.dispose()
    return len(dropped)


def test_a_holder_whose_session_was_dropped_writes_nothing_under_the_lock_it_lost(stack: Stack) -> None:
    url = stack.postgres_url("retrainer")
    metadata = Metadata(url)
    context = multiprocessing.get_context("spawn")
    with metadata.lock("promotion:lost-lock"):
        metadata.put("intent", "lost-lock", "before", "{}")
        assert _drop_lock_sessions(url) == 1  # what a network cut or an administrator does to the holder
        winner = context.Process(target=_take_and_write, args=(url,))
        winner.start()
        winner.join(timeout=120)
        assert winner.exitcode == 0  # the lock was free: another process took it and wrote
        with pytest.raises(StorageError, match="lost the lock promotion:lost-lock"):
            metadata.confirm("promotion:lost-lock")  # what a promotion asks before it moves an alias
        with pytest.raises(StorageError, match="lost the lock promotion:lost-lock"):
            metadata.put("intent", "lost-lock", "after", "{}")
        with pytest.raises(StorageError, match="lost the lock promotion:lost-lock"):
            metadata.append("history/lost-lock", "{}")
    assert [name for name, _ in metadata.documents("intent", "lost-lock")] == ["before", "winner"]
    assert metadata.lines("history/lost-lock") == []
    with metadata.lock("promotion:lost-lock"):  # and the lock works again
        metadata.put("intent", "lost-lock", "after", "{}")


def test_processes_waiting_for_a_lock_leave_its_holder_connections_to_work_with(stack: Stack) -> None:
    metadata = Metadata(stack.postgres_url("retrainer"))
    with metadata.lock("busy"):
        waiters = [threading.Thread(target=_wait_for, args=(metadata, "busy")) for _ in range(10)]
        for waiter in waiters:
            waiter.start()
        time.sleep(2)  # all ten are blocked in pg_advisory_lock now
        began = time.monotonic()
        metadata.put("manifest", "busy", "", "{}")
        assert metadata.get("manifest", "busy") is not None
        assert time.monotonic() - began < 10  # the pool's connections were not all taken by the waiters
    for waiter in waiters:
        waiter.join(timeout=60)
    assert not any(waiter.is_alive() for waiter in waiters)


def _wait_for(metadata: Metadata, name: str) -> None:
    with metadata.lock(name):
        pass


def test_wrong_credentials_are_final_errors_that_never_show_the_secret(stack: Stack, tmp_path: Path) -> None:
    wrong = Metadata(stack.postgres_url("retrainer", password="not-the-password"))  # noqa: S106 (a wrong one on purpose)
    with pytest.raises(StorageError) as refused:
        wrong.check()
    assert not isinstance(refused.value, TransientStorageError)
    assert "refused the connection" in str(refused.value) and "not-the-password" not in str(refused.value)

    blobs = _storage(stack, secret="not-the-secret").blobs  # noqa: S106 (a wrong one on purpose)
    assert isinstance(blobs, S3Blobs)
    with pytest.raises(StorageError) as denied:
        blobs.check()
    assert not isinstance(denied.value, TransientStorageError)
    assert "refused the credentials" in str(denied.value) and "not-the-secret" not in str(denied.value)

    # What a worker's operator runs (and `retrainer serve` does first): one clear line, no secret.
    env = clean_environ() | stack.s3_env() | {"RETRAINER_HOME": str(tmp_path), "RETRAINER_DATA_URL": stack.data_url}
    right = env | {"RETRAINER_METADATA_URL": stack.postgres_url("retrainer")}
    wrong_url = stack.postgres_url("retrainer", password="not-the-password")  # noqa: S106 (a wrong one on purpose)
    for bad in (env | {"RETRAINER_METADATA_URL": wrong_url}, right | {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}):
        checked = subprocess.run([BIN / "retrainer", "check"], env=bad, capture_output=True, text=True, timeout=120)
        assert checked.returncode == 1 and checked.stderr.startswith("error: "), checked.stderr
        assert "refused" in checked.stderr and "not-the-" not in checked.stdout + checked.stderr
    ok = subprocess.run([BIN / "retrainer", "check"], env=right, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "reachable" in ok.stdout, ok.stderr


def test_an_unreachable_object_store_is_transient_and_named(stack: Stack) -> None:
    access = S3Access("http://127.0.0.1:9", stack.s3_region, stack.s3_key, stack.s3_secret)
    blobs = S3Blobs(stack.data_url, access)
    with pytest.raises(
        TransientStorageError, match=r"s3://retrainer-data/retrainer at http://127.0.0.1:9 is unreachable"
    ):
        blobs.check()
