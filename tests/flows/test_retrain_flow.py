"""The core loop through the real Prefect engine, real LightGBM and MLflow on SQLite."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import mlflow
import numpy as np
import pytest

from flows.ingest import ingest
from flows.retrain import retrain
from flows.rollback import rollback
from retrainer.app.cli import main as cli_main
from retrainer.app.status import model_status
from retrainer.cycle.decide import announcement_event
from retrainer.data.synth import demo_config, make_batch
from retrainer.model.history import HistoryEntry, Intent, new_intent_key
from tests.conftest import Project

pytestmark = pytest.mark.usefixtures("prefect_harness")
ROWS = 6000


def _ingest_days(project: Project, days: range, shift: float = 0.0) -> None:
    files = [project.file(f"d{d}-{shift}", make_batch(ROWS, seed=d, day=d, shift=shift)) for d in days]
    state = ingest(model="churn", files=files, return_state=True)
    assert state.name == "Accepted", state.message


def _retrain(reason: str) -> Any:
    return retrain(model="churn", reason=reason, return_state=True)


def _config_with(**promotion: Any) -> dict[str, Any]:
    config = demo_config()
    config["models"]["churn"]["promotion"].update(promotion)  # type: ignore[index]
    return config


def test_bootstrap_then_better_challenger_promoted_then_worse_rejected(project: Project) -> None:
    _ingest_days(project, range(3))
    first = _retrain("initial")
    assert first.name == "Promoted", first.message
    _ingest_days(project, range(3, 5), shift=0.8)
    second = _retrain("after shift")
    assert second.name == "Promoted", second.message

    weak = demo_config()
    weak["models"]["churn"]["lightgbm"] = {"n_estimators": 2, "num_leaves": 2, "learning_rate": 0.01}  # type: ignore[index]
    project.write_config(weak)
    third = _retrain("weak params")
    assert third.name == "Rejected"
    assert "improvement:roc_auc" in third.message

    # Each promotion registers the judged challenger and its refit (v1, v2; v3, v4); v5 was rejected.
    status = model_status(project.workspace(), "churn")
    assert status["champion"]["version"] == "4"
    assert [d["outcome"] for d in status["decisions"]] == ["Rejected", "Promoted", "Promoted"]
    # After the shift the newest data alone wins: v3 trained on the holdout batch's earlier rows only,
    # and its refit v4 on all of that batch.
    registry, manifest = project.workspace().registry, project.workspace().store("churn").manifest()
    judged = registry.client.get_run(registry.version("churn", "3").run_id)
    assert judged.data.params["training_window"] == "newest" and judged.data.tags["retrainer.refit_into"] == "4"
    assert registry.client.get_run(registry.version("churn", "4").run_id).data.tags["retrainer.refit_of"] == "3"
    assert status["champion"]["holdout_batches"] == [manifest.batches[-1].batch_id]
    assert status["champion"]["training_batches"] == [manifest.batches[-1].batch_id]


def test_run_records_params_lineage_trigger_and_decision(project: Project) -> None:
    _ingest_days(project, range(2))
    state = retrain(model="churn", reason="drift incident 7", event_id="evt-123", return_state=True)
    assert state.name == "Promoted"
    ws = project.workspace()
    version = ws.registry.version("churn", "1")
    run = ws.registry.client.get_run(version.run_id)
    assert run.data.params["task"] == "binary"
    assert int(run.data.params["best_iteration"]) >= 1
    assert run.data.tags["retrainer.trigger.reason"] == "drift incident 7"
    assert run.data.tags["retrainer.trigger.event_id"] == "evt-123"
    assert run.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    manifest = ws.store("churn").manifest()
    assert run.data.tags["retrainer.training_batches"] == ",".join(b.batch_id for b in manifest.batches[:1])
    assert run.data.tags["retrainer.holdout_batches"] == manifest.batches[1].batch_id
    assert "holdout_roc_auc" in run.data.metrics
    assert run.data.tags["retrainer.refit_into"] == "2"
    assert ws.registry.alias("churn", "challenger").version == "1"
    # The judged v1 is promoted as its refit v2, which carries the decision, the trigger and v1's figures.
    refit = ws.registry.version("churn", "2")
    assert refit.tags["retrainer.outcome"] == "Promoted" and ws.registry.alias("churn", "champion").version == "2"
    assert json.loads(refit.tags["retrainer.trigger"])["event_id"] == "evt-123"
    assert json.loads(refit.tags["retrainer.metrics"])["roc_auc"]["challenger"] == run.data.metrics["holdout_roc_auc"]
    refit_run = ws.registry.client.get_run(refit.run_id)
    assert refit_run.data.tags["retrainer.training_batches"] == ",".join(b.batch_id for b in manifest.batches)
    assert int(refit_run.data.params["train_rows"]) == sum(b.rows for b in manifest.batches)


def test_champion_loads_with_plain_mlflow_on_raw_columns(project: Project) -> None:
    _ingest_days(project, range(2))
    assert _retrain("initial").name == "Promoted"
    mlflow.set_tracking_uri(project.workspace().settings.mlflow_uri)
    served = mlflow.pyfunc.load_model("models:/churn@champion")
    raw = make_batch(50, seed=123, day=9).drop("churned", "event_time").to_pandas()
    raw.loc[0, "plan"] = "platinum"
    raw.loc[1, "region"] = None
    predictions = np.asarray(served.predict(raw))
    assert predictions.shape == (50,)
    assert np.all((predictions > 0) & (predictions < 1))


def test_dry_run_records_without_moving_champion(project: Project) -> None:
    _ingest_days(project, range(3))
    assert _retrain("initial").name == "Promoted"
    _ingest_days(project, range(3, 5), shift=0.8)
    project.write_config(_config_with(mode="dry_run"))
    state = _retrain("dry")
    assert state.name == "DryRun"
    assert "would promote" in state.message
    ws = project.workspace()
    assert ws.registry.alias("churn", "champion").version == "2"  # v1 judged, v2 its refit
    assert ws.registry.version("churn", "3").tags["retrainer.outcome"] == "DryRun"  # a dry run is never refit


def test_disabled_mode_skips_judgement(project: Project) -> None:
    _ingest_days(project, range(2))
    project.write_config(_config_with(mode="disabled"))
    state = _retrain("off")
    assert state.name == "Skipped"
    assert project.workspace().registry.alias("churn", "champion") is None


def test_two_concurrent_retrains_promote_exactly_once(project: Project) -> None:
    _ingest_days(project, range(3))
    states: list[Any] = []
    threads = [threading.Thread(target=lambda: states.append(_retrain("race"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = sorted(state.name for state in states)
    assert names.count("Promoted") == 1, names
    assert names in (["Promoted", "Superseded"], ["Promoted", "Rejected"])


def test_rollback_restores_replaced_champion_and_records_it(project: Project) -> None:
    _ingest_days(project, range(3))
    assert _retrain("initial").name == "Promoted"
    _ingest_days(project, range(3, 5), shift=0.8)
    assert _retrain("shift").name == "Promoted"
    state = rollback(model="churn", reason="bad feedback", return_state=True)
    assert state.name == "RolledBack", state.message
    ws = project.workspace()
    assert ws.registry.alias("churn", "champion").version == "2"
    last = ws.history("churn").entries()[-1]
    assert (last.outcome, last.version, last.replaced, last.reasons) == ("RolledBack", "2", "4", ["bad feedback"])


def test_rollback_to_unjudged_version_needs_force(project: Project) -> None:
    _ingest_days(project, range(2))
    assert _retrain("initial").name == "Promoted"
    project.write_config(_config_with(mode="disabled"))
    assert _retrain("unjudged").name == "Skipped"
    refused = rollback(model="churn", reason="try", to_version="3", return_state=True)
    assert refused.is_failed() and "--force" in refused.message
    forced = rollback(model="churn", reason="try", to_version="3", force=True, return_state=True)
    assert forced.name == "RolledBack"
    assert project.workspace().registry.alias("churn", "champion").version == "3"


def test_cli_round_trip(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    good = project.file("good", make_batch(ROWS, seed=1))
    bad = project.file("bad", make_batch(300, seed=2).drop("tenure"))
    assert cli_main(["ingest", "--model", "churn", good]) == 0
    assert cli_main(["ingest", "--model", "churn", bad]) == 2
    assert "column 'tenure': missing_column" in capsys.readouterr().err
    assert cli_main(["retrain", "--model", "churn", "--reason", "cli"]) == 0
    capsys.readouterr()
    assert cli_main(["status", "--model", "churn", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["tracking_uri"].startswith("sqlite:///")
    assert status["champion"]["version"] == "2" and status["champion"]["model_uri"] == "models:/churn@champion"
    assert status["decisions"][0]["outcome"] == "Promoted" and status["decisions"][0]["reasons"]
    assert cli_main(["retrain", "--model", "nope"]) == 1


def _event_ids(name: str) -> set[str]:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
    return {str(event.id) for event in page.events}


def test_next_retrain_announces_a_promotion_whose_event_a_crash_lost(project: Project) -> None:
    _ingest_days(project, range(3))
    assert _retrain("initial").name == "Promoted"
    history = project.workspace().history("churn")
    assert history.intents() == []  # announced promotions leave nothing behind
    # What a retrain killed after recording v7's promotion, before emitting its event, leaves behind.
    entry = HistoryEntry(
        at="2026-01-01T00:00:00+00:00", model="churn", action="judged", outcome="Promoted", version="7"
    )
    trigger = {"reason": "killed", "event_id": None, "incident_key": None, "event_name": None}
    said = {"event": "decided", "model": "churn", "version": "7", "outcome": "Promoted", "champion_before": "1"}
    lost = Intent(
        key=new_intent_key(),
        model="churn",
        version="7",
        alias_from="1",
        alias_to="7",
        tags={},
        entry=entry,
        announcement={**said, "champion_after": "7", "reasons": [], "trigger": {**trigger, "event_payload": {}}},
        state="recorded",
    )
    history.write_intent(lost)
    expected = str(announcement_event(lost).id)

    assert _retrain("next").name in {"Promoted", "Rejected"}

    assert history.intents() == []
    deadline = time.monotonic() + 20
    while expected not in _event_ids("retrainer.model.promoted"):
        assert time.monotonic() < deadline, "the lost model.promoted event was never emitted"
        time.sleep(0.5)


def test_a_retrain_records_the_alerts_coalesced_into_it_in_the_incident_book(project: Project) -> None:
    from retrainer import events
    from tasks.emit import emit

    _ingest_days(project, range(2))
    evidence = events.DriftEvidence(check_id="x", drift_share=0.9, drift_detected=True)
    keys = [f"churn:alert:flowtest:a{i}" for i in range(3)]
    alerts = [events.drift_detected(model="churn", incident_key=k, reason="t", evidence=evidence) for k in keys]
    ids = emit.fn(alerts)
    deadline = time.monotonic() + 30
    while not set(ids) <= _event_ids(events.DRIFT_DETECTED) and time.monotonic() < deadline:
        time.sleep(0.5)
    state = retrain(model="churn", reason="storm", event_id=ids[0], incident_key=keys[0], return_state=True)
    assert state.name == "Promoted", state.message
    (attached,) = project.workspace().incidents("churn").read().attachments
    assert attached.incident_keys == keys and attached.event_ids == ids
    assert attached.flow_run_id == str(state.state_details.flow_run_id)
    (decided,) = project.workspace().history("churn").entries()[-1:]
    assert decided.trigger["answers"] == 3 and decided.trigger["answers_sample"] == keys


def test_when_the_data_returns_its_earlier_champion_is_brought_back_as_it_is(project: Project) -> None:
    _ingest_days(project, range(3))
    assert _retrain("initial").name == "Promoted"  # v1 judged, refit v2
    _ingest_days(project, range(3, 5), shift=1.0)
    assert _retrain("shift").name == "Promoted"  # v3 judged, refit v4
    _ingest_days(project, range(5, 7))  # the first population again

    back = _retrain("return")

    ws = project.workspace()
    assert back.name == "Promoted", back.message
    assert ws.registry.alias("churn", "champion").version == "2"  # no new version: v2 as it was
    assert ws.registry.alias("churn", "challenger").version == "2"
    assert len(ws.registry.client.search_model_versions("name='churn'")) == 4
    last = ws.history("churn").entries()[-1]
    assert (last.outcome, last.version, last.replaced) == ("Promoted", "2", "4")
    # v2's training run keeps its own record; the version's tags carry this decision.
    run = ws.registry.client.get_run(ws.registry.version("churn", "2").run_id)
    assert run.data.tags["retrainer.outcome"] == "Promoted" and run.data.tags["retrainer.refit_of"] == "1"
    tags = ws.registry.version("churn", "2").tags
    assert json.loads(tags["retrainer.trigger"])["reason"] == "return"
    record = _decision_record(str(back.state_details.flow_run_id))
    assert "**earlier champion v2**" in record and "reinstated_version" in record
    assert "## Refit" not in record
    # A rollback undoes the return like any promotion.
    assert rollback(model="churn", reason="undo", return_state=True).name == "RolledBack"
    assert ws.registry.alias("churn", "champion").version == "4"


def _decision_record(flow_run_id: str) -> str:
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )
    return "\n".join(str(a.data) for a in found if a.type == "markdown")
