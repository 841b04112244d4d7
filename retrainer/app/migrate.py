"""``retrainer migrate``: move the state of the file layout (before the metadata store) into the stores in force.

The file layout kept, under ``RETRAINER_HOME``::

    data/<model>[/traffic|/labels]/manifest.json    manifests (and batches/, quarantine/ beside them)
    data/<model>/labels/announced.json              joins whose labels.joined event left
    history/<model>.jsonl                           the promotion history
    history/<model>.intents/<key>.json              promotions not yet announced
    incidents/<model>.json                          drift checks, incidents, the retrain slot

Each becomes the same JSON in the metadata store; batches and quarantine copies are copied under
the same keys when the data store is elsewhere (an ``s3://`` URL, another folder). The migration
never changes or deletes the old files, and never overwrites: a model whose manifest, history or
incident state is already in the metadata store keeps it (reported as skipped), so running it
twice is harmless (a model's history is marked as moved once it is, so intents announced since are
not brought back). Run it with no worker running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from retrainer.data.store import LABELLED, MANIFEST
from retrainer.data.traffic import ANNOUNCED, LABELS, TRAFFIC
from retrainer.model.history import INTENT
from retrainer.monitor.incidents import INCIDENTS
from retrainer.storage import LocalBlobs, Storage

_AREAS = {LABELLED: "", TRAFFIC: TRAFFIC, LABELS: LABELS}
# Written last for a model's history: intents are dropped once announced, so "absent" alone cannot
# tell a finished migration from an unfinished one.
MIGRATED = "migrated"


@dataclass
class Migration:
    """What one migration did (or would do, in a dry run), one line per document or folder."""

    moved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    copied_objects: int = 0


def migrate(home: Path, data_root: Path, storage: Storage, dry_run: bool = False) -> Migration:
    """Move every model's state found under ``home`` (batches under ``data_root``) into ``storage``.

    Args:
        home: The old ``RETRAINER_HOME``.
        data_root: The old data root (``home/data`` unless ``RETRAINER_DATA_ROOT`` moved it).
        storage: The data and metadata stores in force.
        dry_run: Report only; write nothing.

    Raises:
        StorageError: a store refused or could not be reached (``TransientStorageError``); what was
            moved before stays moved, and a re-run continues where this one stopped.
    """
    done = Migration()
    copy_data = not (isinstance(storage.blobs, LocalBlobs) and storage.blobs.root == data_root.absolute())
    for model in _models(home, data_root):
        for area, folder in _AREAS.items():
            _migrate_store(data_root / model / folder, model, area, storage, copy_data, dry_run, done)
        _migrate_document(
            data_root / model / LABELS / "announced.json", ANNOUNCED, model, LABELS, storage, dry_run, done
        )
        _migrate_document(home / "incidents" / f"{model}.json", INCIDENTS, model, "", storage, dry_run, done)
        _migrate_history(home / "history", model, storage, dry_run, done)
    return done


def _models(home: Path, data_root: Path) -> list[str]:
    named = {p.parent.name for p in data_root.glob("*/manifest.json")}
    named |= {p.parent.parent.name for area in (TRAFFIC, LABELS) for p in data_root.glob(f"*/{area}/manifest.json")}
    named |= {p.stem for p in (home / "history").glob("*.jsonl")}
    named |= {p.stem for p in (home / "incidents").glob("*.json")}
    return sorted(named)


def _migrate_store(
    directory: Path, model: str, area: str, storage: Storage, copy_data: bool, dry_run: bool, done: Migration
) -> None:
    manifest = directory / "manifest.json"
    if not manifest.is_file():
        return
    what = f"manifest of {model} ({area})"
    if storage.metadata.get(MANIFEST, model, area) is not None:
        done.skipped.append(f"{what}: already in the metadata store")
        return
    content = json.loads(manifest.read_text(encoding="utf-8"))
    content["quarantined"] = len(list((directory / "quarantine").glob("*.reason.json")))
    if copy_data:
        done.copied_objects += _copy_objects(directory, model, area, storage, dry_run)
    if not dry_run:  # the manifest last: its batches are in place before it lists them
        storage.metadata.put(MANIFEST, model, area, json.dumps(content, indent=2, sort_keys=True), expected=0)
    done.moved.append(f"{what}: {len(content['batches'])} batch(es), {content['quarantined']} quarantined")


def _copy_objects(directory: Path, model: str, area: str, storage: Storage, dry_run: bool) -> int:
    prefix = f"{model}/{_AREAS[area]}".rstrip("/")
    copied = 0
    for folder in ("batches", "quarantine"):
        for path in sorted((directory / folder).glob("*")):
            if path.name.startswith(".tmp-") or not path.is_file():
                continue
            if not dry_run:
                read_only = folder == "batches" or not path.name.endswith(".reason.json")
                storage.blobs.put_private(f"{prefix}/{folder}/{path.name}", path.read_bytes(), read_only=read_only)
            copied += 1
    return copied


def _migrate_document(
    path: Path, kind: str, model: str, name: str, storage: Storage, dry_run: bool, done: Migration
) -> None:
    if not path.is_file():
        return
    if storage.metadata.get(kind, model, name) is not None:
        done.skipped.append(f"{kind} of {model}: already in the metadata store")
        return
    if not dry_run:
        storage.metadata.put(kind, model, name, path.read_text(encoding="utf-8"), expected=0)
    done.moved.append(f"{kind} of {model}")


def _migrate_history(directory: Path, model: str, storage: Storage, dry_run: bool, done: Migration) -> None:
    stream = f"history/{model}"
    lines = _lines(directory / f"{model}.jsonl")
    intents = sorted((directory / f"{model}.intents").glob("*.json"))
    intents = [p for p in intents if not p.name.startswith(".tmp-")]
    if not lines and not intents:
        return
    if storage.metadata.get(MIGRATED, model, "history") is not None:
        done.skipped.append(f"history of {model}: already moved")
        return
    present = {name for name, _ in storage.metadata.documents(INTENT, model)}
    missing = [p for p in intents if p.stem not in present]
    # A stream already written (an earlier, interrupted run) is kept whole, never appended to twice.
    appended = [] if storage.metadata.lines(stream) else lines
    if not dry_run:
        # Intents first: each is reconciled against the alias whether or not its history line came.
        for path in missing:
            storage.metadata.put(INTENT, model, path.stem, path.read_text(encoding="utf-8"), expected=0)
        if appended:
            storage.metadata.append(stream, *appended)
        marker = json.dumps({"decisions": len(appended), "intents": len(missing)})
        storage.metadata.put(MIGRATED, model, "history", marker, expected=0)
    done.moved.append(f"history of {model}: {len(appended)} decision(s), {len(missing)} unannounced change(s)")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
