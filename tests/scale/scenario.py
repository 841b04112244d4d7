"""The event-driven story on the scaled layout, as the scale tests and ``bench/scale.py`` drive it.

:func:`deployed` renders ``prefect.yaml`` for three models, deploys it to a process pool, creates
the crashed-runs automation, starts workers (each in its own directory, on its own API replica)
and the signed webhook receiver;
:func:`drive` lands two batches per model in S3 with a notice each, then a drift alert per model,
and waits until every started run has ended.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from retrainer.data.synth import demo_config, make_batch
from tests.scale.stack import BIN, Stack, Worker

MODELS = ["churn_a", "churn_b", "churn_c"]
LANDING = "s3://retrainer-data/landing"
SECRET = "a-shared-secret-of-the-scale-test"  # noqa: S105 (a test secret)
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
HEARTBEAT = "30"


@dataclass(frozen=True)
class Deployed:
    """The deployed project: its directory, workers, the receiver and a client environment for it."""

    root: Path
    workers: list[Worker]
    receiver: str
    env: dict[str, str]


def project(models: list[str] = MODELS, n_estimators: int = 60) -> dict[str, Any]:
    """A config of ``models``, each retrained on new data, with S3 landing allowed for notices."""
    base = demo_config()["models"]["churn"]  # type: ignore[index]
    found = {}
    for name in models:
        model = copy.deepcopy(base)
        model["lightgbm"] = {"learning_rate": 0.1, "num_leaves": 15, "n_estimators": n_estimators}
        model["automation"] = {"retrain_on_new_data": True}
        found[name] = model
    return {"models": found, "webhook": {"landing_roots": [LANDING]}}


@contextmanager
def deployed(stack: Stack, root: Path, workers: int = 2) -> Iterator[Deployed]:
    """The project deployed to a process pool, ``workers`` workers and the receiver running."""
    config = root / "deploy" / "retrainer.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump(project()), encoding="utf-8")
    env = {**stack.client_env(), "RETRAINER_CONFIG": str(config), "PREFECT_HOME": str(root / "deploy" / ".prefect")}
    run(env, config.parent, BIN / "retrainer", "prefect-yaml", "--output", "prefect.yaml")
    run(env, config.parent, BIN / "prefect", "work-pool", "create", "retrainer", "--type", "process")
    run(env, config.parent, BIN / "prefect", "--no-prompt", "deploy", "--all")
    run(env, config.parent, BIN / "python", "-m", "deployments.crashed_runs", "--heartbeat-seconds", HEARTBEAT)
    started = []
    for index in range(workers):
        workdir = root / f"worker-{index}"
        workdir.mkdir()
        (workdir / "retrainer.yaml").write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
        extra = {
            "RETRAINER_CONFIG": str(workdir / "retrainer.yaml"),
            "RETRAINER_OUTAGE_BUDGET_SECONDS": "30",  # an outage fails a run within a minute
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": HEARTBEAT,  # what the crashed-runs automation expects
        }
        api = stack.prefect_api_urls[index % len(stack.prefect_api_urls)]
        started.append(stack.start_worker(f"w{index}", "retrainer", workdir, api, extra))
    receiver_env = {
        **stack.client_env(stack.prefect_api_urls[-1]),
        "RETRAINER_CONFIG": str(config),
        "RETRAINER_WEBHOOK_SECRET": SECRET,
        "PREFECT_HOME": str(root / "receiver" / ".prefect"),
        "RETRAINER_HOME": str(root / "receiver" / ".retrainer"),
    }
    (root / "receiver").mkdir()
    with receiver(root / "receiver", receiver_env) as url:
        yield Deployed(root, started, url, receiver_env)


def drive(stack: Stack, scene: Deployed, timeout: float = 900) -> tuple[float, list[dict[str, Any]]]:
    """Two data notices per model, then a drift alert per model; the wall time and every run."""
    began = time.monotonic()
    for day in range(2):
        for index, model in enumerate(MODELS):
            land(stack, scene, model, day=day, seed=100 * index + day)
    wait_until_quiet(stack, scene.workers, expected_retrains=len(MODELS), timeout=timeout)
    for model in MODELS:
        send(scene, "drift", "--model", model, "--share", "0.8", "--column", "tenure", "--alert-id", f"a-{model}")
    runs = wait_until_quiet(stack, scene.workers, expected_retrains=2 * len(MODELS), timeout=timeout)
    return time.monotonic() - began, runs


def run(env: dict[str, str], cwd: Path, *argv: object) -> str:
    """Run a command; its output, or an assertion error with its output tails."""
    done = subprocess.run([str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def send(scene: Deployed, kind: str, *args: str) -> None:
    """Send a signed message (``data`` or ``drift``) through the receiver, as ``retrainer send`` does."""
    run(
        scene.env, scene.root, BIN / "retrainer", "send", "--url", scene.receiver, "--source", "scale-test", kind, *args
    )


@contextmanager
def receiver(directory: Path, env: dict[str, str]) -> Iterator[str]:
    """``retrainer webhook`` on a free loopback port until the block ends; yields its URL."""
    from tests.e2e.conftest import free_port, wait_for

    port = free_port()
    log = directory / "webhook.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "retrainer"), "webhook", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=directory,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 120, "the webhook receiver")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def flow_runs(stack: Stack, workers: list[Worker]) -> list[dict[str, Any]]:
    """Every run started so far (not the scheduled ones), with its flow, state and worker."""
    api = stack.prefect_api_urls[0]
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    # Scheduled monitor runs (each model's schedule) wait for their time: they are not this test's work.
    started = {"state": {"type": {"not_any_": ["SCHEDULED"]}}}
    raw = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200, "flow_runs": started}, timeout=30).json()
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "flow": flows.get(r["flow_id"], "?"),
            "parameters": r["parameters"],
            "state_type": r["state_type"],
            "state_name": r["state_name"],
            "message": (r.get("state") or {}).get("message"),
            "start": r["start_time"],
            "end": r["end_time"],
            "worker": worker_of(stack, workers, r["id"]),
        }
        for r in raw
    ]


def worker_of(stack: Stack, workers: list[Worker], run_id: str) -> str | None:
    """The worker whose log names the run (each worker logs the runs it submits)."""
    for worker in workers:
        if run_id in stack.log(f"worker-{worker.name}").read_text(errors="replace"):
            return worker.name
    return None


def wait_until_quiet(
    stack: Stack, workers: list[Worker], expected_retrains: int, timeout: float
) -> list[dict[str, Any]]:
    """Wait until at least ``expected_retrains`` retrains ran and every started run ended, 20 s quiet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = flow_runs(stack, workers)
        retrains = [r for r in runs if r["flow"] == "retrain"]
        if len(retrains) >= expected_retrains and all(r["state_type"] in FINAL for r in runs):
            time.sleep(20)  # a trigger may still fire (coalescing window): then wait for it too
            again = flow_runs(stack, workers)
            if len(again) == len(runs) and all(r["state_type"] in FINAL for r in again):
                return again
        time.sleep(3)
    summary = [(r["flow"], r["parameters"].get("model"), r["state_name"]) for r in flow_runs(stack, workers)]
    raise AssertionError(f"runs not finished within {timeout:.0f} s: {summary}")


def land(stack: Stack, scene: Deployed, model: str, day: int, seed: int, rows: int = 2500) -> None:
    """Put a labelled batch in S3 and send its notice."""
    key = f"landing/{model}/day{day}-{seed}.parquet"
    path = scene.root / f"{model}-{day}-{seed}.parquet"
    make_batch(rows, seed=seed, day=day).write_parquet(path)
    stack.s3_client().upload_file(str(path), "retrainer-data", key)
    send(scene, "data", "--model", model, f"s3://retrainer-data/{key}")
