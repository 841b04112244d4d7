"""Drift monitoring through the real Prefect engine, real Evidently, LightGBM and MLflow on SQLite."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flows.ingest import ingest
from flows.monitor import monitor
from flows.retrain import retrain
from retrainer.app.cli import main as cli_main
from retrainer.data.synth import demo_config, make_batch
from retrainer.monitor.incidents import retrain_started
from retrainer.monitor.reference import REFERENCE_ARTIFACT
from tests.conftest import Project

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROWS = 5000


def _config(cooldown: float = 0.0, window: str = "latest", training_batches: int = 1) -> dict[str, Any]:
    config = demo_config()
    model = config["models"]["churn"]  # type: ignore[index]
    model["window"] = {"batches": training_batches}
    model["drift"] = {
        "drift_share": 0.3,
        "window": {"mode": window, "batches": 1},
        "incident": {"k": 1, "n": 1, "cooldown_seconds": cooldown},
    }
    return config


def _ingest(project: Project, day: int, shift: float = 0.0) -> None:
    path = project.file(f"d{day}-{shift}", make_batch(ROWS, seed=day, day=day, shift=shift))
    state = ingest(model="churn", files=[path], return_state=True)
    assert state.name == "Accepted", state.message


def _newest_batch(project: Project) -> str:
    return project.workspace().store("churn").manifest().batches[-1].batch_id


def _bootstrap(project: Project) -> None:
    for day in range(3):
        _ingest(project, day)
    first = retrain(model="churn", reason="initial", return_state=True)
    assert first.name == "Promoted", first.message


def _summary(state: Any) -> dict[str, Any]:
    summary = state.result()
    assert isinstance(summary, dict)
    return summary


def test_no_champion_and_no_new_data_are_named_outcomes(project: Project) -> None:
    project.write_config(_config(window="since_last_check"))
    _ingest(project, 0)
    assert monitor(model="churn", return_state=True).name == "NoChampion"
    _ingest(project, 1)
    assert retrain(model="churn", reason="initial", return_state=True).name == "Promoted"
    assert monitor(model="churn", return_state=True).name == "Stable"
    again = monitor(model="churn", return_state=True)
    assert again.name == "NoNewData", again.message


def test_shift_opens_one_incident_its_retrain_closes_it_and_rebaselines(project: Project) -> None:
    project.write_config(_config())
    _bootstrap(project)
    _ingest(project, 3, shift=0.8)
    shifted = _newest_batch(project)

    opened = monitor(model="churn", return_state=True)
    assert opened.name == "Incident", opened.message
    summary = _summary(opened)
    key = summary["incident"]
    assert key.startswith("churn:v2:check-")  # v1 judged, v2 its refit and the champion
    assert summary["drift_detected"] is True and summary["drift_share"] >= 0.3
    assert summary["batch_ids"] == [shifted] and summary["champion_version"] == "2"
    assert {"score", "method", "threshold", "drifted"} <= set(summary["columns"]["tenure"])
    assert summary["prediction"]["score"] is not None
    assert summary["performance"]["metric"] == "roc_auc"

    attached = monitor(model="churn", batch_id=shifted, return_state=True)
    assert attached.name == "Attached" and _summary(attached)["incident"] == key

    ws = project.workspace()
    runs = ws.registry.client.search_runs([ws.registry.experiment_id("churn", "monitoring")])
    assert len(runs) == 2
    artifacts = {a.path for a in ws.registry.client.list_artifacts(runs[0].info.run_id, "drift")}
    assert artifacts == {"drift/report.html", "drift/report.json", "drift/summary.json"}

    _ingest(project, 4, shift=0.8)
    answered = retrain(model="churn", reason="drift", incident_key=key, return_state=True)
    assert answered.name == "Promoted", answered.message
    state = ws.incidents("churn").read()
    assert state.open is None and state.retrain_in_flight_since is None
    assert state.closed[-1].key == key and state.closed[-1].resolution == "Promoted"
    assert ws.registry.version("churn", "4").tags.get("retrainer.outcome") == "Promoted"

    rebaselined = monitor(model="churn", return_state=True)
    after = _summary(rebaselined)
    assert after["champion_version"] == "4"
    assert rebaselined.name == "Stable", rebaselined.message
    assert after["drift_share"] < summary["drift_share"]


def test_every_registered_version_carries_its_reference_sample(project: Project) -> None:
    project.write_config(_config())
    _bootstrap(project)
    ws = project.workspace()
    version = ws.registry.version("churn", "1")
    assert version.run_id is not None
    reference = pl.read_parquet(ws.registry.download(version.run_id, REFERENCE_ARTIFACT, project.root / "ref"))
    # The chosen window's rows, fit and validation parts: its older batches and the holdout batch's earlier half.
    params = ws.registry.client.get_run(version.run_id).data.params
    assert reference.height == int(params["train_rows"]) + int(params["valid_rows"])
    assert reference.height in {ROWS // 2, ROWS + ROWS // 2}
    assert "champion_prediction" in reference.columns and "churned" in reference.columns
    assert reference["champion_prediction"].is_between(0, 1).all()


def test_cooldown_after_a_promotion_opens_no_incident(project: Project) -> None:
    project.write_config(_config(cooldown=3600))
    _bootstrap(project)
    _ingest(project, 3, shift=0.8)
    state = monitor(model="churn", return_state=True)
    assert state.name == "Cooldown", state.message
    assert _summary(state)["drift_detected"] is True and _summary(state)["incident"] is None
    assert project.workspace().incidents("churn").read().open is None


def test_drift_during_a_retrain_in_flight_is_absorbed(project: Project) -> None:
    project.write_config(_config())
    _bootstrap(project)
    _ingest(project, 3, shift=0.8)
    book = project.workspace().incidents("churn")
    book.update(lambda state: (retrain_started(state, datetime.now(UTC), None), None))
    state = monitor(model="churn", return_state=True)
    assert state.name == "Attached", state.message
    assert "in flight" in (state.message or "")
    assert book.read().open is None


def test_a_failed_retrain_is_no_longer_in_flight(project: Project) -> None:
    project.write_config(_config())
    failed = retrain(model="churn", reason="nothing ingested", return_state=True)
    assert failed.is_failed()
    state = project.workspace().incidents("churn").read()
    assert state.last_retrain_started_at is not None
    assert state.retrain_in_flight_since is None


def test_cli_monitor_prints_one_json_object(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config(_config())
    _bootstrap(project)
    _ingest(project, 3, shift=0.8)
    capsys.readouterr()
    assert cli_main(["monitor", "--model", "churn", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["drift_detected"] is True
    assert printed["incident"].startswith("churn:v2:")
    features = {"tenure", "monthly_charges", "plan", "region", "age", "support_calls", "autopay"}
    assert set(printed["columns"]) == features | {"f00", "f01", "f02", "f03"}


def test_cli_monitor_names_an_unknown_batch(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config(_config())
    _bootstrap(project)
    assert cli_main(["monitor", "--model", "churn", "--batch", "nope"]) == 1
    assert "batch 'nope' is not an accepted batch" in capsys.readouterr().err


def test_a_champion_without_reference_gets_one_from_its_training_batches(project: Project) -> None:
    project.write_config(_config())
    _bootstrap(project)
    ws = project.workspace()
    champion = ws.registry.alias("churn", "champion")
    assert champion is not None and champion.run_id is not None
    run_id = champion.run_id
    stored = ws.registry.download(run_id, REFERENCE_ARTIFACT, project.root / "before")
    original = pl.read_parquet(stored)
    artifact_dir = ws.settings.artifact_root / "churn" / run_id / "artifacts" / "reference"
    shutil.rmtree(artifact_dir)
    assert not ws.registry.has_artifact(run_id, REFERENCE_ARTIFACT)

    state = monitor(model="churn", return_state=True)
    assert state.name == "Stable", state.message
    rebuilt = pl.read_parquet(ws.registry.download(run_id, REFERENCE_ARTIFACT, project.root / "after"))
    assert rebuilt.columns == original.columns and rebuilt.height == original.height
    # Same rows and a served model that predicts what the trained booster predicted.
    key = ["tenure", "monthly_charges"]
    assert_frame_equal(rebuilt.sort(key), original.sort(key), check_exact=False, rel_tol=1e-9)


def test_an_incident_or_event_never_causes_two_retrains(project: Project) -> None:
    project.write_config(_config())
    _bootstrap(project)
    _ingest(project, 3, shift=0.8)
    key = _summary(monitor(model="churn", return_state=True))["incident"]
    payload = {"incident_key": key, "drift_share": 0.9, "top_columns": [{"column": "tenure", "score": 0.4}]}
    first = retrain(
        model="churn",
        reason="drift",
        incident_key=key,
        event_id="evt-1",
        event_name="retrainer.drift.detected",
        event_payload=payload,
        return_state=True,
    )
    assert first.name in {"Promoted", "Rejected"}, first.message
    again = retrain(model="churn", reason="drift", incident_key=key, event_id="evt-2", return_state=True)
    assert again.name == "Duplicate" and key in (again.message or "")
    replay = retrain(model="churn", reason="replayed", event_id="evt-1", return_state=True)
    assert replay.name == "Duplicate" and "evt-1" in (replay.message or "")
    decisions = project.workspace().history("churn").entries()
    assert len(decisions) == 2
    version = project.workspace().registry.version("churn", decisions[-1].version)
    assert json.loads(version.tags["retrainer.trigger"])["event_payload"]["incident_key"] == key
