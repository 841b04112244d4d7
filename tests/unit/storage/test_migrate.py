"""``retrainer migrate``: the file layout's state, as earlier releases wrote it, read back through the stores."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from retrainer.app.migrate import migrate
from retrainer.config import IncidentPolicy
from retrainer.data.ingest import batch_record
from retrainer.data.store import BatchStore
from retrainer.data.synth import make_batch
from retrainer.data.traffic import ModelData
from retrainer.model.history import History, HistoryEntry, Intent
from retrainer.monitor.incidents import CheckRecord, IncidentBook, IncidentState, _state_to_json, assess
from retrainer.storage import LocalBlobs, Metadata, Storage, sqlite_url

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _legacy_home(home: Path) -> dict[str, object]:
    """The files an earlier release left for model ``churn``; returns what they hold."""
    data = home / "data" / "churn"
    frames = [make_batch(300, seed=s, day=s) for s in (1, 2)]
    records = []
    for seed, frame in zip((1, 2), frames, strict=True):
        sha = hashlib.sha256(f"batch {seed}".encode()).hexdigest()
        record = batch_record(frame, "event_time", f"/landing/b{seed}.csv", sha, "ingest")
        (data / "batches").mkdir(parents=True, exist_ok=True)
        frame.write_parquet(data / "batches" / f"{record.batch_id}.parquet")
        records.append(record)
    manifest = {"model": "churn", "features": ["tenure"], "batches": [asdict(r) for r in records]}
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (data / "quarantine").mkdir()
    (data / "quarantine" / "20261101T000000Z-bad.csv").write_bytes(b"broken,bytes\n")
    (data / "quarantine" / "20261101T000000Z-bad.csv.reason.json").write_text('{"message": "bad"}')
    (data / "labels").mkdir()
    (data / "labels" / "announced.json").write_text('["joined-1"]', encoding="utf-8")

    entry = HistoryEntry(T0.isoformat(), "churn", "judged", "Promoted", "2", "1", "1", ["better"], {}, "ops@host")
    (home / "history").mkdir()
    (home / "history" / "churn.jsonl").write_text(json.dumps(asdict(entry), sort_keys=True) + "\n")
    intent = Intent("00000000000000000001-abc", "churn", "3", "2", "3", {"t": "v"}, entry, {"event": "decided"})
    (home / "history" / "churn.intents").mkdir()
    (home / "history" / "churn.intents" / f"{intent.key}.json").write_text(json.dumps(asdict(intent)))

    check = CheckRecord("c1", T0, "2", [records[0].batch_id], True, 0.6)
    state, _ = assess(IncidentState(model="churn"), check, IncidentPolicy(k=1, n=1), T0)
    (home / "incidents").mkdir()
    (home / "incidents" / "churn.json").write_text(json.dumps(_state_to_json(state)), encoding="utf-8")
    return {"records": records, "frames": frames, "entry": entry, "intent": intent, "state": state}


def test_migration_moves_every_record_and_copies_the_data_once(tmp_path: Path) -> None:
    home = tmp_path / "old"
    legacy = _legacy_home(home)
    storage = Storage(LocalBlobs(tmp_path / "new-data"), Metadata(sqlite_url(tmp_path / "new" / "metadata.db")))

    done = migrate(home, home / "data", storage)

    store = BatchStore(storage, "churn")
    manifest = store.manifest()
    assert manifest.batches == legacy["records"]
    assert manifest.features == ["tenure"] and manifest.quarantined == 1
    frames = legacy["frames"]
    assert isinstance(frames, list)
    assert store.read(manifest.batches).equals(pl.concat(frames, how="diagonal_relaxed"))
    assert (tmp_path / "new-data" / "churn" / "quarantine" / "20261101T000000Z-bad.csv").read_bytes() == (
        b"broken,bytes\n"
    )
    history = History(storage.metadata, "churn")
    assert history.entries() == [legacy["entry"]]
    assert history.intents() == [legacy["intent"]]
    assert IncidentBook(storage.metadata, "churn").read().open == legacy["state"].open  # type: ignore[attr-defined]
    announced = storage.metadata.get("announced", "churn", "labels")
    assert announced is not None and json.loads(announced.body) == ["joined-1"]
    assert done.copied_objects == 4 and not done.skipped
    assert ModelData.of(storage, "churn").traffic.manifest().batches == []

    again = migrate(home, home / "data", storage)
    assert again.moved == [] and len(again.skipped) == 4
    assert History(storage.metadata, "churn").entries() == [legacy["entry"]]  # not appended twice
    assert (home / "history" / "churn.jsonl").exists()  # the old files are left as they were


def test_a_second_migration_brings_back_no_announced_change_and_appends_no_line_twice(tmp_path: Path) -> None:
    home = tmp_path / "old"
    legacy = _legacy_home(home)
    storage = Storage(LocalBlobs(tmp_path / "new-data"), Metadata(sqlite_url(tmp_path / "new" / "metadata.db")))
    history = History(storage.metadata, "churn")
    # An interrupted first run: the lines went in, the run died before its intents and its mark.
    storage.metadata.append(history.stream, *(home / "history" / "churn.jsonl").read_text().splitlines())

    first = migrate(home, home / "data", storage)
    assert "history of churn: 0 decision(s), 1 unannounced change(s)" in first.moved
    assert history.entries() == [legacy["entry"]]
    history.drop_intent(history.intents()[0])  # what a worker does once it announced the change

    again = migrate(home, home / "data", storage)
    assert "history of churn: already moved" in again.skipped and again.moved == []
    assert history.intents() == [] and history.entries() == [legacy["entry"]]


def test_migration_in_place_copies_no_data_and_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _legacy_home(home)
    storage = Storage(LocalBlobs(home / "data"), Metadata(sqlite_url(home / "metadata.db")))

    dry = migrate(home, home / "data", storage, dry_run=True)
    assert len(dry.moved) == 4 and not (home / "metadata.db").exists()

    done = migrate(home, home / "data", storage)
    assert done.copied_objects == 0 and len(done.moved) == 4
    assert len(BatchStore(storage, "churn").manifest().batches) == 2


def test_the_command_reports_what_it_moved(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _legacy_home(home)
    env = {"RETRAINER_HOME": str(home), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "retrainer.app.cli", "migrate"]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "moved  manifest of churn (labelled): 2 batch(es), 1 quarantined" in shown.stdout
    assert "moved  history of churn: 1 decision(s), 1 unannounced change(s)" in shown.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "skipped  manifest of churn (labelled): already in the metadata store" in again.stdout


def test_the_command_reads_the_old_batches_where_retrainer_data_root_kept_them(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    _legacy_home(home)
    (home / "data").rename(elsewhere)
    env = {"RETRAINER_HOME": str(home), "RETRAINER_DATA_ROOT": str(elsewhere), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "retrainer.app.cli", "migrate"]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "moved  manifest of churn (labelled): 2 batch(es), 1 quarantined" in shown.stdout
    assert "0 data object(s) copied" in shown.stdout  # the store in force is that folder: nothing to copy


def test_the_check_command_reaches_the_default_stores(tmp_path: Path) -> None:
    env = {"RETRAINER_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "retrainer.app.cli", "check"]
    shown = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert f"metadata store sqlite:///{tmp_path / 'home' / 'metadata.db'}: reachable" in shown.stdout
    unwritable = tmp_path / "a-file"
    unwritable.write_text("")
    env["RETRAINER_METADATA_URL"] = f"sqlite:///{unwritable / 'metadata.db'}"
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: metadata store sqlite:///"), refused.stderr
