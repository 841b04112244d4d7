"""The registry's quick read-only view answers exactly as MLflow does, on a real SQLite store."""

from __future__ import annotations

import sqlite3
from importlib.metadata import version
from pathlib import Path

import pytest

from retrainer.data.synth import make_batch
from retrainer.errors import TransientRegistryError
from retrainer.model.registry import CHALLENGER, CHAMPION, AliasMirror, MirrorReader, Registry, StoreReader
from retrainer.model.registry.store_reader import KNOWN_STORE_REVISIONS
from retrainer.storage import Metadata, sqlite_url
from tests.conftest import Project
from tests.unit.model.test_training_and_serving import _fit


def _registry_with_two_versions(project: Project) -> Registry:
    registry = project.workspace().registry
    trained = _fit(make_batch(3000, seed=11))
    example = make_batch(5, seed=12).to_pandas()
    for n, alias in enumerate((CHAMPION, CHALLENGER), start=1):
        run_id = registry.start_run("churn", f"run-{n}", {"seed": n}, {"retrainer.training_batches": f"b{n},c{n}"})
        registry.log_metrics(run_id, {"holdout_roc_auc": 0.7 + n / 100, "holdout_log_loss": 0.5 - n / 100})
        version = registry.register("churn", run_id, trained, example)
        registry.tag_version("churn", version.version, {"retrainer.outcome": f"outcome-{n}"})
        registry.set_alias("churn", alias, version.version)
    return registry


def test_the_reader_of_a_known_sqlite_store_reads_the_file(project: Project) -> None:
    registry = _registry_with_two_versions(project)
    assert isinstance(registry.reader(), StoreReader)


@pytest.mark.parametrize("alias", [CHAMPION, CHALLENGER, "missing"])
def test_the_reader_answers_as_mlflow(project: Project, alias: str) -> None:
    registry = _registry_with_two_versions(project)
    reader = registry.reader()
    expected = registry.alias("churn", alias)
    assert reader.alias("churn", alias) == expected
    if expected is not None:
        assert expected.run_id is not None
        assert reader.run_details(expected.run_id) == registry.run_details(expected.run_id)


def test_the_reader_knows_no_unregistered_model(project: Project) -> None:
    registry = _registry_with_two_versions(project)
    assert registry.reader().alias("nobody", CHAMPION) is None


def test_other_workspaces_and_missing_stores_are_read_through_mlflow(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = project.workspace().registry
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-b")
    assert registry.reader() is registry
    monkeypatch.delenv("MLFLOW_WORKSPACE")
    (project.home / "mlflow.db").unlink()
    assert registry.reader() is registry


def test_the_store_layout_the_reader_knows_is_the_pinned_mlflow_one(mlflow_template: Path) -> None:
    # StoreReader reads MLflow's own tables: an MLflow upgrade must come with a look at its schema.
    assert version("mlflow") == "3.17.2", "new MLflow: check store_reader.py against its SQLite schema"
    assert StoreReader(mlflow_template).revision() in KNOWN_STORE_REVISIONS


def test_a_store_locked_by_a_writer_is_a_transient_error_naming_the_store(project: Project) -> None:
    registry = _registry_with_two_versions(project)
    path = project.home / "mlflow.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientRegistryError, match=f"the MLflow store {path} is locked by another process"):
            StoreReader(path, busy_seconds=0.2).alias("churn", CHAMPION)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert StoreReader(path).alias("churn", CHAMPION) == registry.alias("churn", CHAMPION)


@pytest.mark.parametrize("alias", [CHAMPION, CHALLENGER, "missing"])
def test_the_alias_mirror_answers_as_mlflow_without_asking_it(project: Project, alias: str) -> None:
    registry = _registry_with_two_versions(project)
    assert registry.mirror is not None
    asked: list[str] = []

    def fallback() -> Registry:
        asked.append("registry")
        return registry

    reader = MirrorReader(registry.mirror, fallback)
    expected = registry.alias("churn", alias)
    assert reader.alias("churn", alias) == expected
    if expected is not None:
        assert expected.run_id is not None
        assert reader.run_details(expected.run_id) == registry.run_details(expected.run_id)
    # Only an alias retrainer never moved needs the registry.
    assert asked == ([] if alias in (CHAMPION, CHALLENGER) else ["registry"])


def test_the_alias_mirror_follows_every_move_and_asks_the_registry_only_for_an_unmirrored_model(
    project: Project,
) -> None:
    registry = _registry_with_two_versions(project)
    assert registry.mirror is not None
    challenger = registry.alias("churn", CHALLENGER)
    assert challenger is not None
    registry.set_alias("churn", CHAMPION, challenger.version)
    registry.tag_version("churn", challenger.version, {"retrainer.outcome": "promoted later"})
    registry.mirror_alias("churn", CHAMPION)
    reader = MirrorReader(registry.mirror, lambda: registry)
    assert reader.alias("churn", CHAMPION) == registry.alias("churn", CHAMPION)
    assert reader.alias("churn", CHAMPION).tags["retrainer.outcome"] == "promoted later"  # type: ignore[union-attr]

    unmirrored = MirrorReader(AliasMirror(Metadata(sqlite_url(project.home / "other.db"))), lambda: registry)
    assert unmirrored.alias("churn", CHAMPION) == registry.alias("churn", CHAMPION)  # asked the registry


def test_an_alias_the_mirror_never_saw_is_asked_of_the_registry(project: Project) -> None:
    registry = _registry_with_two_versions(project)
    # State from before the mirror: the champion was set then; since, retrainer moved only the challenger.
    fresh = AliasMirror(Metadata(sqlite_url(project.home / "fresh.db")))
    challenger = registry.alias("churn", CHALLENGER)
    fresh.record("churn", CHALLENGER, challenger, registry.run_details(challenger.run_id))  # type: ignore[union-attr,arg-type]
    reader = MirrorReader(fresh, lambda: registry)
    assert reader.alias("churn", CHAMPION) == registry.alias("churn", CHAMPION) is not None
    fresh.record("churn", CHAMPION, None, ({}, {}))  # retrainer unset it: the mirror's answer stands
    assert MirrorReader(fresh, lambda: registry).alias("churn", CHAMPION) is None


def test_against_a_tracking_server_status_reads_the_mirror(project: Project) -> None:
    registry = project.workspace().registry
    server = Registry("http://127.0.0.1:9", registry.artifact_root, registry.lock_dir, registry.mirror)
    assert isinstance(server.reader(), MirrorReader)
