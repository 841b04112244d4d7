"""The metadata store on SQLite: compare-and-set, the named lock across processes, nothing created by reads."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from retrainer.errors import StorageError, TransientStorageError
from retrainer.storage import Metadata, sqlite_url


def test_reads_of_a_store_never_written_create_nothing(tmp_path: Path) -> None:
    metadata = Metadata(sqlite_url(tmp_path / "deep" / "metadata.db"))
    assert metadata.get("manifest", "churn") is None
    assert metadata.documents("intent", "churn") == []
    assert metadata.lines("history/churn") == []
    assert list(tmp_path.iterdir()) == []


def test_put_is_a_compare_and_set_on_the_revision_read(tmp_path: Path) -> None:
    metadata = Metadata(sqlite_url(tmp_path / "metadata.db"))
    assert metadata.put("manifest", "churn", "labelled", '{"v": 1}', expected=0) == 1
    with pytest.raises(StorageError, match="changed by another writer"):
        metadata.put("manifest", "churn", "labelled", '{"v": "lost"}', expected=0)
    assert metadata.put("manifest", "churn", "labelled", '{"v": 2}', expected=1) == 2
    with pytest.raises(StorageError, match="changed by another writer"):
        metadata.put("manifest", "churn", "labelled", '{"v": "stale"}', expected=1)
    found = metadata.get("manifest", "churn", "labelled")
    assert found is not None and (found.body, found.revision) == ('{"v": 2}', 2)
    assert metadata.put("manifest", "churn", "labelled", '{"v": 3}') == 3  # unconditional


def test_documents_are_listed_by_name_and_deleted_one_by_one(tmp_path: Path) -> None:
    metadata = Metadata(sqlite_url(tmp_path / "metadata.db"))
    for key in ("0002-b", "0001-a", "0003-c"):
        metadata.put("intent", "churn", key, f'"{key}"')
    metadata.put("intent", "other", "0000-z", '"z"')
    metadata.delete("intent", "churn", "0002-b")
    assert [name for name, _ in metadata.documents("intent", "churn")] == ["0001-a", "0003-c"]


def test_lines_keep_their_order_and_a_batch_appends_whole(tmp_path: Path) -> None:
    metadata = Metadata(sqlite_url(tmp_path / "metadata.db"))
    metadata.append("history/churn", "one")
    metadata.append("history/churn", "two", "three")
    metadata.append("history/other", "elsewhere")
    assert metadata.lines("history/churn") == ["one", "two", "three"]


def _locked_increment(url: str, rounds: int) -> None:
    metadata = Metadata(url)
    for _ in range(rounds):
        with metadata.lock("counter"):
            found = metadata.get("counter", "x")
            value = int(found.body) if found else 0
            time.sleep(0.002)  # widen the read-modify-write window
            metadata.put("counter", "x", "", str(value + 1), expected=found.revision if found else 0)


def test_the_lock_serialises_read_modify_write_across_processes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "metadata.db")
    Metadata(url).check()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_locked_increment, args=(url, 25)) for _ in range(3)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0]
    found = Metadata(url).get("counter", "x")
    assert found is not None and found.body == "75" and found.revision == 75


def test_an_unreachable_server_is_transient_and_named_without_its_password(tmp_path: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    metadata = Metadata("postgresql+psycopg://retrainer:s3cret-pw@127.0.0.1:9/retrainer", connect_timeout=2)
    with pytest.raises(TransientStorageError) as raised:
        metadata.get("manifest", "churn")
    message = str(raised.value)
    assert "s3cret-pw" not in message
    assert "postgresql+psycopg://retrainer:***@127.0.0.1:9/retrainer is unreachable" in message


def test_an_invalid_url_is_a_final_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"invalid URL|no driver") as raised:
        Metadata("nosuchdb+driver://x:y@host/db").check()
    assert not isinstance(raised.value, TransientStorageError)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://retrainer:pw@127.0.0.1:notaport/retrainer",  # a port that is no number
        "postgresql+psycopg://retrainer:pw@127.0.0.1:9/retrainer?nosuchoption=1",  # refused by libpq, not the net
    ],
)
def test_a_malformed_server_url_is_a_final_error_naming_the_store(url: str) -> None:
    with pytest.raises(StorageError, match=r"metadata store .*127\.0\.0\.1") as raised:
        Metadata(url, connect_timeout=2).get("manifest", "churn")
    assert not isinstance(raised.value, TransientStorageError)
    assert "pw@" not in str(raised.value)


def test_a_sqlite_path_that_cannot_be_created_is_a_final_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StorageError, match="metadata store") as raised:
        Metadata(sqlite_url(tmp_path / "a-file" / "metadata.db")).put("manifest", "churn", "", "{}")
    assert not isinstance(raised.value, TransientStorageError)


def test_taking_a_lock_this_thread_holds_raises_instead_of_waiting_forever(tmp_path: Path) -> None:
    metadata = Metadata(sqlite_url(tmp_path / "metadata.db"))
    with metadata.lock("promotion:churn"):
        with metadata.lock("aliases:churn"):  # another name nests
            metadata.confirm("aliases:churn")
            metadata.confirm("promotion:churn")
        with pytest.raises(RuntimeError, match="already held by this thread"), metadata.lock("promotion:churn"):
            pass
        # Another store's lock of the same name is another lock.
        with Metadata(sqlite_url(tmp_path / "other.db")).lock("promotion:churn"):
            pass
    with metadata.lock("promotion:churn"):  # released by the block, whatever happened inside
        pass
    with pytest.raises(RuntimeError, match="not held"):
        metadata.confirm("promotion:churn")
