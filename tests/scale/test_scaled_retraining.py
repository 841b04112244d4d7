"""Three models retrained by events on the scaled layout: two workers, no shared local state.

PostgreSQL (Prefect, MLflow and retrainer's metadata), Redis, two Prefect API replicas and one
services process, an MLflow server with S3 artifacts, SeaweedFS S3 for the data; two process
workers (``--limit 1``) in separate working directories, each on its own API replica. New data
arrives as signed notices through the real webhook receiver (files in S3), drift as signed alerts
(``tests/scale/scenario.py``).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrainer.monitor.incidents import COALESCE_SECONDS
from tests.scale.scenario import FINAL, MODELS, Deployed, deployed, drive, flow_runs, land, run
from tests.scale.stack import BIN, Stack, Worker

pytestmark = pytest.mark.scale


@pytest.fixture(scope="module")
def scene(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The project deployed to a process pool, two workers, each with its own directory, and the receiver."""
    with deployed(stack, tmp_path_factory.mktemp("scaled"), workers=2) as found:
        yield found


def test_three_models_retrain_by_events_on_two_workers(stack: Stack, scene: Deployed) -> None:
    wall, runs = drive(stack, scene)

    retrains = [r for r in runs if r["flow"] == "retrain"]
    assert all(r["state_type"] == "COMPLETED" for r in runs), [(r["name"], r["state_name"], r["message"]) for r in runs]
    for model in MODELS:
        _never_overlapping(stack, model, [r for r in retrains if r["parameters"]["model"] == model])
    decided = [r for r in retrains if r["state_name"] != "Duplicate"]
    workers_used = {r["worker"] for r in runs} - {None}
    assert len(workers_used) == 2, workers_used  # both machines served runs

    metadata = _metadata(stack)
    for model in MODELS:
        entries = metadata["history"][model]
        runs_of_model = {r["id"] for r in decided if r["parameters"]["model"] == model}
        recorded = [e["trigger"].get("flow_run_id") for e in entries if e["action"] == "judged"]
        assert sorted(recorded) == sorted(runs_of_model), (model, recorded, runs_of_model)  # once each
        assert metadata["intents"][model] == 0  # every change announced
        assert len(metadata["manifests"][model]) == 2  # both batches, once
    _champions_load_from_an_empty_directory(stack, scene.root / "third", metadata)
    for worker in scene.workers:
        _no_local_data(worker)
    print(f"\n3 models x (2 data notices + 1 drift alert) on 2 workers: {wall:.0f} s wall")


# --- helpers -----------------------------------------------------------------------------------


def _never_overlapping(stack: Stack, model: str, runs: list[dict[str, Any]]) -> None:
    """The spans in which the model's retrains held its slot are disjoint.

    A retrain run starts, then waits for its model's slot: the span is from its first task in the
    slot (``reconcile-promotions``) to its last one before it leaves (emitting its events is after).
    """
    spans = sorted(span for span in (_slot_span(stack, r["id"]) for r in runs) if span is not None)
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end, f"two retrains of {model} held its slot at once: {spans}"


def _slot_span(stack: Stack, run_id: str) -> tuple[datetime, datetime] | None:
    api = stack.prefect_api_urls[1]
    query = {"task_runs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    tasks = httpx.post(f"{api}/task_runs/filter", json=query, timeout=30).json()
    timed = [(t["name"], t["start_time"], t["end_time"]) for t in tasks if t["start_time"] and t["end_time"]]
    began = [datetime.fromisoformat(s) for name, s, _ in timed if name.startswith("reconcile-promotions")]
    if not began:
        return None
    after = ("emit-events", "mark-announced")
    ends = [datetime.fromisoformat(e) for name, s, e in timed if not name.startswith(after)]
    return min(began), max(ends)


def _metadata(stack: Stack) -> dict[str, dict[str, Any]]:
    from retrainer.data.store import BatchStore
    from retrainer.model.history import History
    from retrainer.storage import Metadata, S3Access, S3Blobs, Storage

    access = S3Access(stack.s3_endpoint, stack.s3_region, stack.s3_key, stack.s3_secret)
    storage = Storage(S3Blobs(stack.data_url, access), Metadata(stack.postgres_url("retrainer")))
    found: dict[str, dict[str, Any]] = {"history": {}, "intents": {}, "manifests": {}}
    for model in MODELS:
        history = History(storage.metadata, model)
        found["history"][model] = [e.__dict__ for e in history.entries()]
        found["intents"][model] = len(history.intents())
        found["manifests"][model] = BatchStore(storage, model).manifest().batches
    return found


def _champions_load_from_an_empty_directory(stack: Stack, directory: Path, metadata: dict[str, Any]) -> None:
    directory.mkdir()
    script = (
        "import json, sys, mlflow\n"
        "from mlflow import MlflowClient\n"
        "from retrainer.data.synth import make_batch\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    version = MlflowClient().get_model_version_by_alias(name, 'champion').version\n"
        "    model = mlflow.pyfunc.load_model(f'models:/{name}@champion')\n"
        "    frame = make_batch(50, seed=7).drop('churned').to_pandas()\n"
        "    out[name] = [version, len(model.predict(frame))]\n"
        "print(json.dumps(out))\n"
    )
    env = {**stack.client_env(), "HOME": str(directory)}
    env.pop("RETRAINER_METADATA_URL")
    env.pop("RETRAINER_DATA_URL")
    shown = run(env, directory, BIN / "python", "-c", script, *MODELS)
    loaded = json.loads(shown.strip().splitlines()[-1])
    for model in MODELS:
        version, predictions = loaded[model]
        promoted = [e for e in metadata["history"][model] if e["outcome"] in {"Promoted", "RolledBack"}]
        assert promoted and promoted[-1]["version"] == version, (model, version, promoted)  # alias = metadata
        assert predictions == 50
    assert sorted(p.name for p in directory.iterdir()) == []  # nothing written where it loaded


def _no_local_data(worker: Worker) -> None:
    parquet = list(worker.workdir.rglob("*.parquet"))
    assert parquet == [], f"worker {worker.name} kept data locally: {parquet[:5]}"
    assert not (worker.workdir / ".retrainer" / "metadata.db").exists()


def test_an_mlflow_outage_mid_retrain_fails_it_cleanly_and_a_rerun_completes(stack: Stack, scene: Deployed) -> None:
    workers = scene.workers
    model = MODELS[0]
    champion = _champion(stack, model)
    before = {r["id"] for r in flow_runs(stack, workers)}
    land(stack, scene, model, day=5, seed=500)
    started = _wait_for_new_run(stack, workers, before, "retrain", model, "RUNNING", timeout=300)
    stack.stop_mlflow()
    try:
        failed = _wait_for_state(stack, workers, started["id"], FINAL, timeout=600)
    finally:
        stack.start_mlflow()
    assert failed["state_type"] == "FAILED", failed
    assert "unreachable" in str(failed["message"]) and stack.mlflow_uri in str(failed["message"]), failed["message"]
    assert _champion(stack, model) == champion  # untouched
    assert _metadata(stack)["intents"][model] == 0  # no half-done promotion

    again = run(scene.env, scene.root, BIN / "prefect", "deployment", "run", "retrain/default", "-p", f"model={model}")
    run_id = again.split("UUID: ")[1].split()[0] if "UUID: " in again else None
    assert run_id, again
    done = _wait_for_state(stack, workers, run_id, FINAL, timeout=600)
    assert done["state_type"] == "COMPLETED", done


def test_a_worker_killed_mid_retrain_leaves_the_next_event_to_the_other_worker(stack: Stack, scene: Deployed) -> None:
    workers = scene.workers
    model = MODELS[1]
    before = {r["id"] for r in flow_runs(stack, workers)}
    land(stack, scene, model, day=6, seed=600)
    started = _wait_for_new_run(stack, workers, before, "retrain", model, "RUNNING", timeout=300)
    victim = next(w for w in workers if w.name == started["worker"])
    survivor = next(w for w in workers if w is not victim)
    stack.kill_worker(victim)
    # A data.arrived within the trigger's coalescing window of the last one starts no run (it was the
    # killed run's to answer): the next event comes after the window.
    time.sleep(COALESCE_SECONDS + 2)

    before = {r["id"] for r in flow_runs(stack, [survivor])}
    land(stack, scene, model, day=7, seed=700)
    nxt = _wait_for_new_run(stack, [survivor], before, "retrain", model, "COMPLETED", timeout=600)
    assert nxt["worker"] == survivor.name
    # Marked by the retrain that took its slot from it, or (killed before it held one) by the
    # crashed-runs automation once its heartbeats stop.
    crashed = _wait_for_state(stack, [survivor], started["id"], FINAL, timeout=240)
    assert crashed["state_type"] == "CRASHED", crashed
    assert _slot_holder(stack, model) is None  # the model's slot is free again
    assert nxt["state_name"] != "Duplicate"


def _slot_holder(stack: Stack, model: str) -> object:
    from retrainer.monitor.incidents import IncidentBook
    from retrainer.storage import Metadata

    return IncidentBook(Metadata(stack.postgres_url("retrainer")), model).read().slot


def _champion(stack: Stack, model: str) -> str | None:
    from mlflow import MlflowClient

    return str(MlflowClient(stack.mlflow_uri).get_model_version_by_alias(model, "champion").version)


def _wait_for_new_run(
    stack: Stack, workers: list[Worker], before: set[str], flow: str, model: str, state: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for found in flow_runs(stack, workers):
            new = found["id"] not in before and found["flow"] == flow and found["parameters"].get("model") == model
            if new and found["state_type"] == state and found["worker"]:
                return found
            if new and found["state_type"] in FINAL - {state}:
                raise AssertionError(f"{flow} of {model} ended {found['state_name']}: {found['message']}")
        time.sleep(1)
    raise AssertionError(f"no {flow} run of {model} reached {state} within {timeout:.0f} s")


def _wait_for_state(
    stack: Stack, workers: list[Worker], run_id: str, states: set[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next((r for r in flow_runs(stack, workers) if r["id"] == run_id), None)
        if found is not None and found["state_type"] in states:
            return found
        time.sleep(2)
    raise AssertionError(f"run {run_id} not in {states} within {timeout:.0f} s")
