"""``make bench-decisions``: how good retrainer's decisions are, replayed on seeded labelled streams.

Usage: python bench/decisions.py [--scenarios abrupt,...] [--paths scheduled,event] [--rows 3000]
[--batches 14] [--seed 7] [--out bench/DECISIONS.md] [--keep]

Each scenario of ``bench/streams.py`` is a stream of daily labelled batches. The served ``@champion``
is scored on the next batch *before* that batch is ingested, against three baselines trained in
this process on the same batches with the model's own LightGBM parameters and validation split:

* ``never``: the bootstrap batches only, never retrained;
* ``newest``: retrained on the newest batch alone after every batch;
* ``window``: retrained on the newest ``window.batches`` batches after every batch.

Two paths drive the real product against one local Prefect server this script starts:

* ``scheduled``: after the bootstrap, for each batch: score ``@champion``, ingest the batch, run the
  retrain flow (in this process, against the server);
* ``event``: after the same bootstrap, only ingests; ``retrainer serve`` runs the monitor on each
  ``data.arrived`` event, and the monitor's incidents start retrains. After each ingest the script
  waits until every monitor and retrain run it caused has ended.

Every scenario x path gets its own state directory, config file and model name. Results go to
``--out`` (Markdown) and the same path with ``.json`` (every per-batch figure). Servers and serving
processes this script starts are stopped on exit, error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/streams.py, when run as a script

import numpy as np
import polars as pl
import yaml
from streams import (
    BOOTSTRAP,
    CATEGORICAL,
    FEATURES,
    SCENARIOS,
    SEGMENTS,
    TARGET,
    TIME,
    Scenario,
    make_stream,
    scenario,
    share_of_b,
)

if TYPE_CHECKING:
    from deployments.local_server import Service
    from retrainer.config import ModelConfig, Settings
    from retrainer.model.training import TrainedModel
    from retrainer.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("scheduled", "event")
BASELINES = ("never", "newest", "window")
WINDOW_BATCHES = 3
HOLDOUT_BATCHES = 1
RECOVERY_POINTS = 0.02
MEAN_POINTS = 0.01
PROMOTION_SHARE = 1 / 3
PRODUCT_PACKAGES = ("retrainer", "flows", "tasks", "deployments")
PACKAGES = ("prefect", "mlflow", "lightgbm", "polars", "evidently", "pandas", "numpy", "scikit-learn")
OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
}
SERVE_READY_SECONDS = 300.0
SETTLE_SECONDS = 2.0
RUNS_TIMEOUT_SECONDS = 900.0
POLL_SECONDS = 1.0
STOP_SECONDS = 30.0
FINAL_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# --- configuration and lanes ------------------------------------------------------------------------


def model_config(spec: Scenario) -> dict[str, Any]:
    """The model config of a scenario as it is written to YAML (defaults except the benchmark's settings).

    ``window.batches`` 3, ``holdout.batches`` 1, the scenario's primary metric, drift incidents on
    the first alarming check (k = 1 of n = 1) without cooldown, and no monitor cron (the event path's
    monitor runs on each new batch; a wall-clock schedule would add checks at random points).
    """
    return {
        "task": spec.task,
        "target": TARGET,
        "features": list(FEATURES),
        "categorical": {CATEGORICAL: list(SEGMENTS)},
        "time_column": TIME,
        "window": {"batches": WINDOW_BATCHES},
        "holdout": {"batches": HOLDOUT_BATCHES},
        "promotion": {"metric": spec.metric},
        "drift": {"incident": {"k": 1, "n": 1, "cooldown_seconds": 0}},
        "automation": {"monitor_cron": None},
    }


@dataclass(frozen=True)
class Lane:
    """One scenario replayed on one path: its model name and its own state directory and config file."""

    spec: Scenario
    path: str
    root: Path

    @property
    def model(self) -> str:
        """Model name (unique per scenario and path)."""
        return f"{self.spec.name.replace('_', '-')}-{self.path}"

    @property
    def home(self) -> Path:
        """``RETRAINER_HOME`` of the lane."""
        return self.root / "home"

    @property
    def config_path(self) -> Path:
        """The lane's YAML config."""
        return self.root / "retrainer.yaml"

    def env(self) -> dict[str, str]:
        """The ``RETRAINER_*`` variables that point the product at this lane."""
        return {"RETRAINER_HOME": str(self.home), "RETRAINER_CONFIG": str(self.config_path)}

    def create(self, mlflow_template: Path) -> None:
        """Write the config, the incoming folder and a migrated MLflow store."""
        (self.root / "incoming").mkdir(parents=True)
        self.home.mkdir()
        shutil.copy(mlflow_template, self.home / "mlflow.db")
        document = {"models": {self.model: model_config(self.spec)}}
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    def activate(self) -> None:
        """Point this process's product calls (flows, workspace) at the lane."""
        os.environ.update(self.env())
        os.environ.pop("MLFLOW_TRACKING_URI", None)

    def settings(self) -> Settings:
        """The lane's settings."""
        from retrainer.config import load_settings

        return load_settings(home=self.home, config=self.config_path)

    def workspace(self) -> Workspace:
        """The lane's workspace (registry, stores)."""
        from retrainer.workspace import Workspace

        return Workspace(self.settings())

    def write(self, batch: int, frame: pl.DataFrame) -> str:
        """Write one batch as an incoming Parquet file; return its path."""
        path = self.root / "incoming" / f"batch-{batch:02d}.parquet"
        frame.write_parquet(path)
        return str(path)


def mlflow_template(directory: Path) -> Path:
    """A migrated, empty MLflow SQLite store, copied into each lane (fresh stores race on migrations)."""
    from mlflow import MlflowClient

    path = directory / "mlflow-template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


# --- scoring -------------------------------------------------------------------------------------------


def higher_is_better(spec: Scenario) -> bool:
    """Whether a larger value of the scenario's metric is better."""
    from retrainer.config.metrics import HIGHER_IS_BETTER

    return HIGHER_IS_BETTER[spec.metric]


def labels(spec: Scenario, frame: pl.DataFrame) -> np.ndarray:
    """Targets as the judge sees them: class indices (binary) or values (regression)."""
    if spec.task == "regression":
        return frame[TARGET].cast(pl.Float64).to_numpy()
    return frame[TARGET].cast(pl.Int64).to_numpy()


def metric(spec: Scenario, frame: pl.DataFrame, predictions: np.ndarray) -> float:
    """The scenario's metric of raw predictions (probabilities for binary: accuracy at 0.5)."""
    from retrainer.judge.metrics import point_metric

    return point_metric(spec.task, spec.metric, labels(spec, frame), np.asarray(predictions, dtype=np.float64))


def served_score(workspace: Workspace, lane: Lane, version: str, frame: pl.DataFrame) -> float:
    """Score a registered version on ``frame`` as it is served (the stored model's code on raw columns)."""
    predictions = workspace.registry.predict(lane.model, version, frame.select(FEATURES).to_pandas())
    return metric(lane.spec, frame, predictions)


def champion_version(workspace: Workspace, lane: Lane) -> str | None:
    """The version ``@champion`` points to, if any."""
    found = workspace.registry.alias(lane.model, "champion")
    return found.version if found else None


def better(spec: Scenario, new: float, old: float) -> bool:
    """Whether ``new`` is strictly better than ``old`` in the scenario's metric."""
    return new > old if higher_is_better(spec) else new < old


def within(spec: Scenario, value: float, best: float) -> bool:
    """Whether ``value`` is within the recovery tolerance of ``best``.

    Accuracy: at most 0.02 below. RMSE: at most 2 % above.
    """
    if higher_is_better(spec):
        return value >= best - RECOVERY_POINTS
    return value <= best * (1 + RECOVERY_POINTS)


# --- baselines ---------------------------------------------------------------------------------------------


@dataclass
class Baselines:
    """Next-batch scores of the three baselines, by scored batch, and their promotions judged on the next batch.

    Attributes:
        scores: Baseline name -> score on each scored batch (batch ``BOOTSTRAP`` to the last), in order.
        worse: Baseline name -> how many of its retrains were worse on the next batch than the model replaced.
        retrains: Baseline name -> retrains after the bootstrap (each one "promotes").
        seconds: Wall time of training and scoring them.
    """

    scores: dict[str, list[float]]
    worse: dict[str, int]
    retrains: dict[str, int]
    seconds: float


def fit(frames: list[pl.DataFrame], config: ModelConfig) -> TrainedModel:
    """Train as the product does: the model's LightGBM parameters, early stopping on the latest rows.

    The validation rows are the time-ordered tail (``lightgbm.validation_fraction``) of the pooled
    batches, the product's split for a model with a time column.
    """
    from retrainer.data.contract import schema_for
    from retrainer.data.features import FeatureSpec
    from retrainer.model.training import train

    rows = pl.concat(frames).sort(TIME, maintain_order=True)
    cut = max(1, int(rows.height * (1 - config.lightgbm.validation_fraction)))
    spec = FeatureSpec.build(config, schema_for(config, rows.columns, None))
    return train(rows.head(cut), rows.slice(cut), spec, config.lightgbm)


def run_baselines(spec: Scenario, stream: list[pl.DataFrame], config: ModelConfig) -> Baselines:
    """Train and score the baselines on every batch after the bootstrap."""
    started = time.perf_counter()
    never = fit(stream[:BOOTSTRAP], config)
    scores: dict[str, list[float]] = {name: [] for name in BASELINES}
    worse = dict.fromkeys(BASELINES, 0)
    previous = {"newest": never, "window": never}
    for batch in range(BOOTSTRAP, spec.batches):
        frame = stream[batch]
        scores["never"].append(metric(spec, frame, never.predict(frame)))
        for name, older in (("newest", 1), ("window", WINDOW_BATCHES)):
            model = fit(stream[max(0, batch - older) : batch], config)
            score = metric(spec, frame, model.predict(frame))
            if batch > BOOTSTRAP and better(spec, metric(spec, frame, previous[name].predict(frame)), score):
                worse[name] += 1
            scores[name].append(score)
            previous[name] = model
    retrains = {"never": 0, "newest": spec.batches - 1 - BOOTSTRAP, "window": spec.batches - 1 - BOOTSTRAP}
    return Baselines(scores, worse, retrains, time.perf_counter() - started)


# --- the product's paths ----------------------------------------------------------------------------------


@dataclass
class Step:
    """One scored batch of a path, and what the product did after ingesting it.

    Attributes:
        batch: The batch scored (and then ingested).
        champion: The ``@champion`` version scored, if any.
        score: Its metric on ``batch``.
        replaced: The champion of the previous step, when it was replaced since.
        replaced_score: That champion's metric on ``batch`` (judges the promotion).
        retrains: Final state names of the retrains caused by ingesting ``batch``.
        monitors: Final state names of the monitor runs caused by ingesting ``batch`` (event path).
        notes: The state messages of those runs.
        seconds: Wall time of ingesting ``batch`` until every caused run ended.
        timed_out: Whether the wait for those runs gave up.
    """

    batch: int
    champion: str | None
    score: float | None
    replaced: str | None = None
    replaced_score: float | None = None
    retrains: list[str] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: bool = False


@dataclass
class PathRun:
    """One scenario replayed on one path."""

    path: str
    model: str
    bootstrap: str
    steps: list[Step]
    seconds: float


def score_step(workspace: Workspace, lane: Lane, batch: int, frame: pl.DataFrame, previous: Step | None) -> Step:
    """Score ``@champion`` (and the champion it replaced since the previous step) on ``frame``."""
    current = champion_version(workspace, lane)
    score = served_score(workspace, lane, current, frame) if current else None
    step = Step(batch, current, score)
    if previous is not None and previous.champion and previous.champion != current:
        step.replaced = previous.champion
        step.replaced_score = served_score(workspace, lane, previous.champion, frame)
    return step


def state_name(state: Any) -> str:
    """A flow run's final state name (its type when unnamed)."""
    return str(state.name or state.type.value)


def bootstrap(lane: Lane, stream: list[pl.DataFrame]) -> str:
    """Ingest the bootstrap batches and train the first champion, in this process; the retrain's outcome."""
    from flows.ingest import ingest
    from flows.retrain import retrain

    files = [lane.write(batch, stream[batch]) for batch in range(BOOTSTRAP)]
    ingested = ingest(model=lane.model, files=files, return_state=True)
    if state_name(ingested) != "Accepted":
        raise RuntimeError(f"{lane.model}: bootstrap ingest ended {state_name(ingested)}: {ingested.message}")
    return state_name(retrain(model=lane.model, reason="bench bootstrap", return_state=True))


def ingest_batch(lane: Lane, batch: int, frame: pl.DataFrame) -> None:
    """Ingest one batch through the ingest flow (in this process).

    Raises:
        RuntimeError: the batch was not accepted.
    """
    from flows.ingest import ingest

    state = ingest(model=lane.model, files=[lane.write(batch, frame)], return_state=True)
    if state_name(state) != "Accepted":
        raise RuntimeError(f"{lane.model}: batch {batch} ingest ended {state_name(state)}: {state.message}")


def run_scheduled(lane: Lane, stream: list[pl.DataFrame]) -> PathRun:
    """Score, ingest, retrain for every batch after the bootstrap (the last batch is only scored)."""
    from flows.retrain import retrain

    started = time.perf_counter()
    lane.activate()
    first = bootstrap(lane, stream)
    workspace = lane.workspace()
    steps: list[Step] = []
    for batch in range(BOOTSTRAP, lane.spec.batches):
        step = score_step(workspace, lane, batch, stream[batch], steps[-1] if steps else None)
        steps.append(step)
        if batch == lane.spec.batches - 1:
            break
        began = time.perf_counter()
        ingest_batch(lane, batch, stream[batch])
        state = retrain(model=lane.model, reason=f"scheduled after batch {batch}", return_state=True)
        step.retrains.append(state_name(state))
        step.notes.append(f"retrain {state_name(state)}: {_first_line(state.message)}")
        step.seconds = time.perf_counter() - began
        _progress(lane, step)
    return PathRun(lane.path, lane.model, first, steps, time.perf_counter() - started)


def run_event(lane: Lane, stream: list[pl.DataFrame], api: str) -> PathRun:
    """Bootstrap, then serve and only ingest; wait for the monitor and retrains each batch causes."""
    started = time.perf_counter()
    lane.activate()
    first = bootstrap(lane, stream)
    workspace = lane.workspace()
    steps: list[Step] = []
    with serving(lane, api):
        for batch in range(BOOTSTRAP, lane.spec.batches):
            step = score_step(workspace, lane, batch, stream[batch], steps[-1] if steps else None)
            steps.append(step)
            if batch == lane.spec.batches - 1:
                break
            began = time.perf_counter()
            since = datetime.now(UTC) - timedelta(seconds=1)
            ingest_batch(lane, batch, stream[batch])
            runs, step.timed_out = wait_for_caused_runs(lane.model, since)
            step.monitors = [run.state for run in runs if run.flow == "monitor"]
            step.retrains = [run.state for run in runs if run.flow == "retrain"]
            step.notes = [f"{run.flow}{_on(run.trigger)} {run.state}: {_first_line(run.message)}" for run in runs]
            step.seconds = time.perf_counter() - began
            _progress(lane, step)
    return PathRun(lane.path, lane.model, first, steps, time.perf_counter() - started)


def _on(event: str) -> str:
    return f" (on {event})" if event else ""


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _progress(lane: Lane, step: Step) -> None:
    score = f"{step.score:.4f}" if step.score is not None else "-"
    caused = ", ".join([*(f"monitor {m}" for m in step.monitors), *(f"retrain {r}" for r in step.retrains)])
    print(
        f"[{lane.model}] batch {step.batch}: champion v{step.champion} {lane.spec.metric} {score}; "
        f"then {caused or 'nothing'} ({step.seconds:.1f} s)",
        flush=True,
    )


# --- the Prefect server, serving and flow runs ------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """A flow run as the benchmark reads it from the Prefect API."""

    flow: str
    state: str
    final: bool
    message: str
    created: datetime
    trigger: str = ""


def runs_since(model: str, since: datetime) -> list[RunInfo]:
    """Monitor and retrain runs of ``model`` created at or after ``since``, oldest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    found: list[RunInfo] = []
    with get_client(sync_client=True) as client:
        for flow in ("monitor", "retrain"):
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=50,
            )
            for run in runs:
                if run.parameters.get("model") != model or run.created is None or run.created < since:
                    continue
                state = run.state
                final = bool(state and state.type.value in FINAL_TYPES)
                name = (state.name or state.type.value) if state else "Pending"
                message = (state.message or "") if state else ""
                trigger = str(run.parameters.get("event_name") or "")
                found.append(RunInfo(flow, name, final, message, run.created, trigger))
    return sorted(found, key=lambda run: run.created)


def wait_for_caused_runs(model: str, since: datetime) -> tuple[list[RunInfo], bool]:
    """Wait until the runs an ingest caused have ended: its monitor, and the retrain an incident starts.

    Done when at least one monitor run exists, every run has ended, a monitor that opened an incident
    has a retrain, and nothing new appeared for :data:`SETTLE_SECONDS`.

    Returns:
        The runs, oldest first, and whether the wait gave up after :data:`RUNS_TIMEOUT_SECONDS`.
    """
    deadline = time.monotonic() + RUNS_TIMEOUT_SECONDS
    settled: tuple[float, int] | None = None  # since when the runs were done, and how many there were
    while True:
        runs = runs_since(model, since)
        monitors = [run for run in runs if run.flow == "monitor"]
        incident = any(run.state == "Incident" for run in monitors)
        retrains = [run for run in runs if run.flow == "retrain"]
        done = bool(monitors) and all(run.final for run in runs) and bool(retrains or not incident)
        if not done:
            settled = None
        elif settled is None or settled[1] != len(runs):
            settled = (time.monotonic(), len(runs))
        elif time.monotonic() - settled[0] >= SETTLE_SECONDS:
            return runs, False
        if time.monotonic() > deadline:
            return runs, True
        time.sleep(POLL_SECONDS)


@contextmanager
def serving(lane: Lane, api: str) -> Iterator[None]:
    """``retrainer serve`` for the lane's config against ``api``; stopped, and its deployments removed, after."""
    from deployments.local_server import serve_in_background, services

    settings = lane.settings()
    serve_in_background(settings, api)
    try:
        _wait(lambda: _served_deployments() >= 4, SERVE_READY_SECONDS, "the served deployments", lane)
        time.sleep(3)  # automations reach the trigger service asynchronously
        yield
    finally:
        stop_child(services(settings)[2])
        clear_server()


def _served_deployments() -> int:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return len(client.read_deployments())


def clear_server() -> None:
    """Remove every deployment and automation, and cancel runs that have not ended (the next lane starts clean)."""
    from prefect import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        for automation in client.read_automations():
            client.delete_automation(automation.id)
        for deployment in client.read_deployments():
            client.delete_deployment(deployment.id)
        for run in client.read_flow_runs(limit=200):
            if run.state is not None and run.state.type.value not in FINAL_TYPES:
                client.set_flow_run_state(run.id, Cancelled(message="bench lane ended"), force=True)


def _wait(check: Callable[[], bool], seconds: float, what: str, lane: Lane) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"gave up after {seconds:.0f} s waiting for {what}; see {lane.home / 'prefect' / 'serve.log'}")


@contextmanager
def prefect_server(directory: Path) -> Iterator[str]:
    """A local Prefect server (``deployments.local_server.up``) with its state under ``directory``; its API URL.

    The server is stopped when the block ends, however it ends.
    """
    from deployments.local_server import services, up
    from retrainer.config import load_settings

    settings = load_settings(home=directory)
    try:
        urls = up(settings, _free_port())
        os.environ["PREFECT_API_URL"] = urls["prefect_api"]
        yield urls["prefect_api"]
    finally:
        stop_child(services(settings)[0])


def stop_child(service: Service) -> None:
    """Stop a service this process started: TERM to its process group, KILL after a grace period, then reap it.

    ``Service.stop`` polls with ``kill(pid, 0)``, which a child that exited but was not reaped yet
    still answers, so it would wait its whole grace period; this waits for the child itself.
    """
    pid = service.pid()
    if pid is None:
        service.stop()
        return
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and not _reaped(pid):
        time.sleep(0.2)
    if not _reaped(pid):
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with suppress(ChildProcessError):
            os.waitpid(pid, 0)
    service.stop()


def _reaped(pid: int) -> bool:
    """Whether the child ``pid`` has exited (reaping it); True for a process that is not our child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- summaries ----------------------------------------------------------------------------------------------


@dataclass
class Summary:
    """One policy on one scenario.

    Attributes:
        policy: ``scheduled``, ``event`` or a baseline's name.
        mean_after: Mean next-batch metric over the scored batches from the first change on (all without one).
        mean_all: Mean next-batch metric over every scored batch.
        recovery: Per change, batches to recover (None: never within the run).
        retrains: Retrains after the bootstrap.
        promotions: Promotions after the bootstrap.
        worse_promotions: Promotions whose model was worse on the next batch than the one it replaced.
        growth: Retrains after the bootstrap whose widest training window grew (product paths).
    """

    policy: str
    mean_after: float
    mean_all: float
    recovery: list[int | None]
    retrains: int
    promotions: int
    worse_promotions: int
    growth: int = 0


def best_baseline(spec: Scenario, baselines: Baselines) -> list[float]:
    """Per scored batch, the best of the three baselines' scores."""
    pick = max if higher_is_better(spec) else min
    return [pick(values) for values in zip(*(baselines.scores[name] for name in BASELINES), strict=True)]


def recovery(spec: Scenario, scores: list[float | None], best: list[float]) -> list[int | None]:
    """Per change, batches from its first labelled batch until the policy is within tolerance of the best baseline.

    A change at batch ``c`` is first seen after ingesting ``c``; the model scored on ``c + 1 + k`` is
    the one ``k`` batches later, so 0 means recovered within one batch. ``None``: not within tolerance
    on any scored batch before the next change (or the stream's end).
    """
    found: list[int | None] = []
    ends = [*spec.changes[1:], spec.batches][: len(spec.changes)]
    for change, end in zip(spec.changes, ends, strict=True):
        found.append(None)
        for batch in range(change + 1, end):
            index = batch - BOOTSTRAP
            value = scores[index]
            if value is not None and within(spec, value, best[index]):
                found[-1] = batch - change - 1
                break
    return found


def _means(spec: Scenario, scores: list[float | None]) -> tuple[float, float]:
    after = spec.changes[0] if spec.changes else BOOTSTRAP
    known = [s for s in scores if s is not None]
    later = [s for batch, s in enumerate(scores, start=BOOTSTRAP) if batch >= after and s is not None]
    return _mean(later), _mean(known)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def window_growth(retrain_batches: list[int]) -> int:
    """How many of the retrains (after ingesting these batches) trained on a wider window than the one before.

    The widest window holds ``min(window.batches, accepted - holdout.batches)`` older batches; the
    bootstrap retrain saw ``BOOTSTRAP`` batches.
    """
    widest = min(WINDOW_BATCHES, BOOTSTRAP - HOLDOUT_BATCHES)
    grew = 0
    for batch in retrain_batches:
        now = min(WINDOW_BATCHES, batch + 1 - HOLDOUT_BATCHES)
        grew += now > widest
        widest = max(widest, now)
    return grew


def summarise_path(spec: Scenario, run: PathRun, best: list[float]) -> Summary:
    """The summary of a product path."""
    scores = [step.score for step in run.steps]
    after, overall = _means(spec, scores)
    retrain_batches = [step.batch for step in run.steps for _ in step.retrains]
    promotions = sum(state == "Promoted" for step in run.steps for state in step.retrains)
    worse = sum(
        1
        for step in run.steps
        if step.replaced_score is not None and step.score is not None and better(spec, step.replaced_score, step.score)
    )
    return Summary(
        run.path,
        after,
        overall,
        recovery(spec, scores, best),
        len(retrain_batches),
        promotions,
        worse,
        window_growth(sorted(set(retrain_batches))),
    )


def summarise_baseline(spec: Scenario, name: str, baselines: Baselines, best: list[float]) -> Summary:
    """The summary of a baseline (every retrain of ``newest`` and ``window`` promotes)."""
    scores: list[float | None] = list(baselines.scores[name])
    after, overall = _means(spec, scores)
    retrains = baselines.retrains[name]
    return Summary(name, after, overall, recovery(spec, scores, best), retrains, retrains, baselines.worse[name])


# --- goals ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    """One goal checked on one scenario and path."""

    goal: str
    scenario: str
    path: str
    value: str
    target: str
    met: bool


def goals(spec: Scenario, summaries: dict[str, Summary]) -> list[Goal]:
    """The benchmark's goals for the product paths of one scenario."""
    found: list[Goal] = []
    naive = summaries["newest"].promotions
    best_mean = _best_mean(spec, summaries)
    for path in PATHS:
        if path not in summaries:
            continue
        mine = summaries[path]
        if spec.abrupt:
            for change, needed in zip(spec.changes, mine.recovery, strict=True):
                met = needed == 0
                shown = "never" if needed is None else str(needed)
                found.append(Goal("recovery within 1 batch", spec.name, path, f"batch {change}: {shown}", "0", met))
        found.append(_mean_goal(spec, path, mine, best_mean))
        found.append(
            Goal(
                "promotions <= 1/3 of naive",
                spec.name,
                path,
                str(mine.promotions),
                f"<= {naive * PROMOTION_SHARE:.2f} (naive {naive})",
                mine.promotions <= naive * PROMOTION_SHARE,
            )
        )
        if spec.name in {"stationary_noise", "covariate"}:
            allowed = mine.growth + mine.retrains / 10
            found.append(
                Goal(
                    "promotions <= window growth + 1 per 10 retrains",
                    spec.name,
                    path,
                    str(mine.promotions),
                    f"<= {allowed:.1f} ({mine.growth} + {mine.retrains}/10)",
                    mine.promotions <= allowed,
                )
            )
    return found


def _best_mean(spec: Scenario, summaries: dict[str, Summary]) -> float:
    values = [summaries[name].mean_all for name in BASELINES]
    return max(values) if higher_is_better(spec) else min(values)


def _mean_goal(spec: Scenario, path: str, mine: Summary, best_mean: float) -> Goal:
    if higher_is_better(spec):
        floor = best_mean - MEAN_POINTS
        return Goal(
            "mean >= best baseline - 1 point",
            spec.name,
            path,
            f"{mine.mean_all:.4f}",
            f">= {floor:.4f}",
            mine.mean_all >= floor,
        )
    ceiling = best_mean * (1 + MEAN_POINTS)
    return Goal(
        "mean >= best baseline - 1 point",
        spec.name,
        path,
        f"{mine.mean_all:.4f}",
        f"<= {ceiling:.4f} (RMSE +1 %)",
        mine.mean_all <= ceiling,
    )


# --- one scenario --------------------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """Everything measured on one scenario."""

    spec: Scenario
    baselines: Baselines
    runs: dict[str, PathRun]
    summaries: dict[str, Summary]
    goals: list[Goal]
    seconds: float


def run_scenario(name: str, args: argparse.Namespace, work: Path, template: Path, api: str) -> ScenarioResult:
    """Generate the stream, compute the baselines, replay it on every requested path."""
    from retrainer.config import parse_project

    started = time.perf_counter()
    spec = scenario(name, args.batches)
    stream = make_stream(spec, args.rows, args.seed)
    config = parse_project({"models": {"bench": model_config(spec)}}, source="bench").model("bench")
    baselines = run_baselines(spec, stream, config)
    print(f"[{name}] baselines in {baselines.seconds:.1f} s", flush=True)
    runs: dict[str, PathRun] = {}
    for path in args.paths:
        lane = Lane(spec, path, work / f"{name}-{path}")
        lane.create(template)
        clear_server()
        runs[path] = run_scheduled(lane, stream) if path == "scheduled" else run_event(lane, stream, api)
        print(f"[{name}] {path} path in {runs[path].seconds:.1f} s", flush=True)
    best = best_baseline(spec, baselines)
    summaries = {path: summarise_path(spec, run, best) for path, run in runs.items()}
    summaries.update({b: summarise_baseline(spec, b, baselines, best) for b in BASELINES})
    return ScenarioResult(spec, baselines, runs, summaries, goals(spec, summaries), time.perf_counter() - started)


# --- the report ----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU count and model, RAM, Python and the key packages' versions."""
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                ram_kib = int(line.split()[1])
                break
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "missing"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(ram_kib / 2**20, 1),
        "python": platform.python_version(),
        "packages": packages,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "changed_files": [line[3:] for line in _git("status", "--porcelain").splitlines()],
        "source_digest": source_digest(),
    }


def source_digest() -> str:
    """SHA-256 (first 12 hex digits) of the product's Python sources as they are on disk now."""
    digest = hashlib.sha256()
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _git(*args: str) -> str:
    try:
        answer = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return answer.stdout.strip()


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _recovery_text(found: list[int | None]) -> str:
    if not found:
        return "–"
    return " / ".join("never" if k is None else str(k) for k in found)


def batch_table(result: ScenarioResult, run: PathRun) -> list[str]:
    """The per-batch table of one path."""
    spec, scores = result.spec, result.baselines.scores
    best = best_baseline(spec, result.baselines)
    lines = [
        "| batch | share of B | champion | served | never | newest | window | best baseline "
        "| replaced champion on this batch | after ingesting the batch |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for i, step in enumerate(run.steps):
        replaced = f"v{step.replaced}: {_fmt(step.replaced_score)}" if step.replaced else ""
        caused = ", ".join([*(f"monitor {m}" for m in step.monitors), *(f"retrain {r}" for r in step.retrains)])
        if step.timed_out:
            caused += " (wait timed out)"
        shift = "features shifted" if spec.name == "covariate" and step.batch >= spec.changes[0] else ""
        concept = shift or f"{share_of_b(spec, step.batch):.2f}"
        lines.append(
            f"| {step.batch} | {concept} | v{step.champion} | {_fmt(step.score)} | {_fmt(scores['never'][i])} "
            f"| {_fmt(scores['newest'][i])} | {_fmt(scores['window'][i])} | {_fmt(best[i])} | {replaced} "
            f"| {caused or ('–' if step.batch == spec.batches - 1 else 'nothing')} |"
        )
    return lines


def summary_table(result: ScenarioResult) -> list[str]:
    """The summary table of one scenario: each path and baseline."""
    metric_name = result.spec.metric
    lines = [
        f"| policy | mean {metric_name} after the change | mean {metric_name} overall | batches to recover "
        f"| retrains | promotions | worse promotions |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, summary in result.summaries.items():
        label = f"served @champion ({name})" if name in PATHS else f"baseline: {name}"
        lines.append(
            f"| {label} | {_fmt(summary.mean_after)} | {_fmt(summary.mean_all)} | {_recovery_text(summary.recovery)} "
            f"| {summary.retrains} | {summary.promotions} | {summary.worse_promotions} |"
        )
    return lines


def render(results: list[ScenarioResult], args: argparse.Namespace, info: dict[str, Any], total: float) -> str:
    """The Markdown report."""
    packages = ", ".join(f"{name} {v}" for name, v in info["packages"].items())
    changed = info["changed_files"]
    dirty = f" with {len(changed)} uncommitted paths" if changed else ""
    lines = [
        "# Decision benchmark: served @champion vs baselines on labelled streams",
        "",
        f"- Date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- Command: `{args.command}` (in `{ROOT}`)",
        f"- Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM",
        f"- Python {info['python']}; {packages}",
        f"- Code: commit {info['commit'] or 'unknown'}{dirty}; product source digest {info['source_digest']} "
        "(SHA-256 of retrainer/, flows/, tasks/, deployments/)"
        + (
            ""
            if info["source_digest"] == info["source_digest_at_start"]
            else f" — **the product's code changed during the run** (digest {info['source_digest_at_start']} at "
            "the start): the figures mix two versions"
        ),
        f"- Seed {args.seed}; {args.batches} daily batches of {args.rows} rows per scenario; "
        f"bootstrap: the first {BOOTSTRAP} batches",
        f"- Total wall time: {total / 60:.1f} min"
        + (
            ""
            if len(results) == len(args.scenarios)
            else f" (**partial: {len(results)} of {len(args.scenarios)} scenarios done**)"
        ),
        "",
        *method_section(),
        "",
        "## Summary",
        "",
        *overview_table(results),
        "",
        "## Goals",
        "",
        *goal_section(results),
    ]
    for result in results:
        lines += ["", *scenario_section(result)]
    return "\n".join(lines) + "\n"


def method_section() -> list[str]:
    """How the figures are made and what the columns mean."""
    return [
        "## Method",
        "",
        "Each scenario is a seeded stream (`bench/streams.py`): five numeric features, one categorical, an "
        "`event_time` spread over the batch's day in random order, and a label given by concept A or concept B. "
        "The served `@champion` is scored on batch *t* before batch *t* is ingested (MLflow pyfunc model from "
        "the registry, on raw columns), so every figure is a next-batch figure. Accuracy is on the predicted class "
        "(probability >= 0.5).",
        "",
        f"Model config: `window.batches` {WINDOW_BATCHES}, `holdout.batches` {HOLDOUT_BATCHES}, primary metric "
        "`accuracy` (classification) or `rmse` (regression), `drift.incident` k = 1 of n = 1 with cooldown 0, "
        "`automation.monitor_cron` null; everything else the product's defaults (window candidates, holdout "
        "share, promotion policy, drift and performance tolerances). Both paths use the same config.",
        "",
        "- **scheduled**: after the bootstrap, for each batch: score, ingest (ingest flow), retrain (retrain flow); "
        "flows run in the benchmark process against the benchmark's Prefect server.",
        "- **event**: after the same bootstrap (in the benchmark process), `retrainer serve` is started against the "
        "server and the benchmark only ingests; the monitor runs on each `data.arrived` event, and its incidents "
        "start retrains. After each ingest the benchmark waits until the monitor and any retrain it caused have "
        "ended (and nothing new started for a few seconds), then scores.",
        f"- **baselines** (trained in the benchmark process with the product's `train`, the model's LightGBM "
        f"parameters and early stopping on the time-ordered last `validation_fraction` of the rows): `never` "
        f"(bootstrap batches only), `newest` (newest batch alone), `window` (newest {WINDOW_BATCHES} batches), "
        "each retrained after every batch; a baseline's retrain always replaces its model (`newest` is the naive "
        "policy of the promotion goal).",
        "",
        "Definitions:",
        "",
        "- *after the change*: scored batches from the first changed batch on (the stationary stream: all).",
        "- *batches to recover*: per change at batch *c* (shown `first / return` for two changes), the smallest *k* "
        "such that the policy scored on batch *c + 1 + k* (after ingesting *k + 1* batches of the new concept) is "
        "within tolerance of the best of the three baselines on that batch: for accuracy at most 0.02 below, for "
        "RMSE at most 2 % above. 0 means recovered within one batch; `never`: not before the next change or the "
        "end of the stream.",
        "- *retrains, promotions*: after the bootstrap (the bootstrap's first champion is not counted); the last "
        "batch is only scored, so each retrain is judged on a next batch.",
        "- *worse promotions*: promotions whose new champion scored worse on the next batch than the champion it "
        "replaced (both scored on that batch).",
        "- Goals: recovery 0 (within one batch) after each abrupt change (abrupt, recurring, regression); overall "
        "mean within 1 point of the best baseline's overall mean (accuracy: 0.01; RMSE: 1 %); promotions at most "
        "1/3 of the naive policy's; on stationary_noise and covariate, promotions at most window growth (retrains "
        "whose widest window was wider than at the retrain before) + retrains/10.",
    ]


def overview_table(results: list[ScenarioResult]) -> list[str]:
    """One row per scenario and policy (the product paths and the best baseline)."""
    lines = [
        "| scenario | metric | policy | mean after change | mean overall | recover | retrains | promotions "
        "| worse promotions | wall time |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for name, summary in result.summaries.items():
            wall = f"{result.runs[name].seconds / 60:.1f} min" if name in result.runs else ""
            label = f"served ({name})" if name in PATHS else name
            lines.append(
                f"| {result.spec.name} | {result.spec.metric} | {label} | {_fmt(summary.mean_after)} "
                f"| {_fmt(summary.mean_all)} | {_recovery_text(summary.recovery)} | {summary.retrains} "
                f"| {summary.promotions} | {summary.worse_promotions} | {wall} |"
            )
    return lines


def goal_section(results: list[ScenarioResult]) -> list[str]:
    """Every goal, met or not."""
    found = [goal for result in results for goal in result.goals]
    met = sum(goal.met for goal in found)
    lines = [
        f"{met} of {len(found)} checks met.",
        "",
        "| goal | scenario | path | value | target | met |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {g.goal} | {g.scenario} | {g.path} | {g.value} | {g.target} | {'met' if g.met else '**not met**'} |"
        for g in found
    ]
    return lines


def scenario_section(result: ScenarioResult) -> list[str]:
    """The per-scenario part: description, summary and per-batch tables."""
    spec = result.spec
    lines = [
        f"## {spec.name} ({spec.metric})",
        "",
        f"{spec.description}. Wall time {result.seconds / 60:.1f} min (baselines {result.baselines.seconds:.0f} s"
        + "".join(f", {path} {run.seconds:.0f} s" for path, run in result.runs.items())
        + ").",
        "",
        *summary_table(result),
    ]
    for path, run in result.runs.items():
        lines += [
            "",
            f"### {spec.name}, {path} path (model `{run.model}`; bootstrap retrain: {run.bootstrap})",
            "",
            *batch_table(result, run),
        ]
    return lines


def to_json(results: list[ScenarioResult], args: argparse.Namespace, info: dict[str, Any], total: float) -> str:
    """Every figure of the run as one JSON document."""
    document = {
        "command": args.command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "seed": args.seed,
        "rows": args.rows,
        "batches": args.batches,
        "bootstrap": BOOTSTRAP,
        "total_seconds": total,
        "complete": len(results) == len(args.scenarios),
        "scenarios": [
            {
                "scenario": asdict(result.spec),
                "seconds": result.seconds,
                "first_scored_batch": BOOTSTRAP,
                "baselines": asdict(result.baselines),
                "best_baseline": best_baseline(result.spec, result.baselines),
                "paths": {path: asdict(run) for path, run in result.runs.items()},
                "summaries": {name: asdict(s) for name, s in result.summaries.items()},
                "goals": [asdict(goal) for goal in result.goals],
            }
            for result in results
        ],
    }
    return json.dumps(document, indent=1, default=str, allow_nan=True)


# --- command line ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; ``command`` is the line as typed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list (default: all)")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma list of scheduled,event")
    parser.add_argument("--rows", type=int, default=3000, help="rows per batch")
    parser.add_argument("--batches", type=int, default=14, help="batches per scenario")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "DECISIONS.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (state, logs)")
    args = parser.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.paths = [p for p in args.paths.split(",") if p]
    unknown = [s for s in args.scenarios if s not in SCENARIOS] + [p for p in args.paths if p not in PATHS]
    if unknown:
        parser.error(f"unknown scenario or path: {', '.join(unknown)}")
    for name in args.scenarios:
        try:
            scenario(name, args.batches)
        except ValueError as exc:
            parser.error(str(exc))
    executable = os.path.relpath(sys.executable) if sys.executable.startswith(str(ROOT)) else sys.executable
    args.command = shlex.join([executable, *sys.argv]) if argv is None else shlex.join(["decisions.py", *argv])
    return args


def _stop_on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write the report and its JSON. Returns the exit code."""
    args = parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    signal.signal(signal.SIGTERM, _stop_on_term)
    work = Path(tempfile.mkdtemp(prefix="bench-decisions-"))
    os.environ["PREFECT_HOME"] = str(work / "prefect-client")
    started = time.perf_counter()
    digest_at_start = source_digest()
    print(f"[bench] scratch directory {work}", flush=True)
    results: list[ScenarioResult] = []
    try:
        template = mlflow_template(work)
        with prefect_server(work / "server") as api:
            for name in args.scenarios:
                results.append(run_scenario(name, args, work, template, api))
                write_report(results, args, digest_at_start, time.perf_counter() - started)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    print(f"[bench] wrote {args.out} and {args.out.with_suffix('.json')} in {total / 60:.1f} min", flush=True)
    return 0


def write_report(results: list[ScenarioResult], args: argparse.Namespace, digest_at_start: str, total: float) -> None:
    """Write the report and its JSON for the scenarios done so far (marked partial until all are done)."""
    info = {**machine(), "source_digest_at_start": digest_at_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(results, args, info, total), encoding="utf-8")
    args.out.with_suffix(".json").write_text(to_json(results, args, info, total), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
