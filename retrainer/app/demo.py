"""``make demo``: the whole story on generated data, driven by events on a local Prefect server.

1. start a local Prefect server (``retrainer up``) and serve every deployment (``retrainer serve``);
2. ingest three days of data and train the first champion;
3. land a batch after a market shift; from here on only events act: ``data.arrived`` runs the
   monitor, the monitor opens a drift incident, ``drift.detected`` runs the retrain, which judges
   the challenger and promotes it or not;
4. unlabelled traffic drifts on day 6: ``data.observed`` runs the monitor on it, the incident's
   retrain waits for labels (``WaitingForLabels``); the labels come two days later, join the traffic
   by id, and ``labels.joined`` runs the retrain on them;
5. land a file with impossible labels (quarantined), print the story with timings and the UI URLs,
   and stop the server and the serving process (unless ``keep`` is set).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import yaml

from retrainer.data.synth import demo_config, make_batch
from retrainer.errors import ConfigError, RetrainerError

if TYPE_CHECKING:
    from prefect import State

MODEL = "churn"
ID = "request_id"
MARKER = ".retrainer-demo"
ROWS = 20_000
WAIT_SECONDS = 240.0
BIN = Path(sys.executable).parent


class Story:
    """The demo's steps with the time each ended, printed at the end."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lines: list[tuple[str, str]] = []

    def add(self, label: str, outcome: str) -> str:
        """Record a step and echo it; return the outcome."""
        self.lines.append((f"{time.monotonic() - self.started:6.1f}s  {label}", outcome))
        print(f"[demo] {label}: {outcome.splitlines()[0] if outcome else ''}")
        return outcome

    def state(self, label: str, state: State) -> str:
        """Record a flow run's final state; return its name."""
        name = state.name or state.type.value
        self.add(label, f"{name}: {state.message or ''}")
        return name


def run_demo(workdir: Path, keep: bool = False) -> int:
    """Run the story in ``workdir`` (reset if the demo made it).

    Returns:
        0 when every step ended as the story expects, 1 otherwise.
    """
    from deployments.local_server import down, serve_in_background, up
    from retrainer.config import load_settings

    workdir = _fresh_workdir(workdir.absolute())
    _point_environment_at(workdir)
    settings = load_settings()
    story = Story()
    urls = up(settings, _free_port())
    os.environ["PREFECT_API_URL"] = urls["prefect_api"]
    story.add("local Prefect server", urls["prefect_ui"])
    serve_in_background(settings, urls["prefect_api"])
    try:
        expected = _play(workdir, story)
    finally:
        if not keep:
            down(settings)
    _epilogue(workdir, story, urls, keep)
    return 0 if expected else 1


def _point_environment_at(workdir: Path) -> None:
    (workdir / "incoming").mkdir(parents=True)
    (workdir / "retrainer.yaml").write_text(yaml.safe_dump(demo_config(), sort_keys=False), encoding="utf-8")
    os.environ["RETRAINER_CONFIG"] = str(workdir / "retrainer.yaml")
    os.environ["RETRAINER_HOME"] = str(workdir / ".retrainer")
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def _play(workdir: Path, story: Story) -> bool:
    from flows.ingest import ingest
    from flows.retrain import retrain

    incoming = workdir / "incoming"
    _wait(lambda: _deployments() >= 6, "the served deployments")
    time.sleep(3)  # automations reach the trigger service asynchronously
    initial = [_write(incoming, f"day{d}", make_batch(ROWS, seed=d, day=d)) for d in range(3)]
    story.state("ingest 3 initial batches", ingest(model=MODEL, files=initial, return_state=True))
    _wait(lambda: len(_runs("monitor", finished=True)) >= 3, "the monitors started by the first batches")
    first = story.state("train the first champion", retrain(model=MODEL, reason="initial model", return_state=True))

    shifted = [_write(incoming, f"day{d}-shifted", make_batch(ROWS, seed=d, day=d, shift=0.8)) for d in (3, 4)]
    story.state("land 2 batches after a market shift", ingest(model=MODEL, files=shifted, return_state=True))
    story.add("... now only events act", "data.arrived → monitor → drift.detected → retrain")
    check = _wait(lambda: _first_run("monitor", lambda r: r["state_name"] == "Incident"), "a drift incident")
    story.add("monitor (started by data.arrived)", f"{check['state_name']}: {check['state_message']}")
    answer = _wait(lambda: _first_run("retrain", lambda r: bool(r["parameters"].get("incident_key"))), "the retrain")
    second = story.add("retrain (started by drift.detected)", f"{answer['state_name']}: {answer['state_message']}")

    waited, joined = _late_labels(incoming, story, shifted_champion=second.startswith("Promoted"))

    bad = make_batch(500, seed=99, day=5).with_columns(pl.col("churned") + 5)
    refused = ingest(model=MODEL, files=[_write(incoming, "bad", bad)], return_state=True)
    rejected = story.state("ingest a batch with impossible labels", refused)
    decided = {"Promoted", "Rejected"}
    traffic_story = waited == "WaitingForLabels" and joined in decided
    return first == "Promoted" and second.split(":")[0] in decided and traffic_story and rejected == "Quarantined"


def _late_labels(incoming: Path, story: Story, shifted_champion: bool) -> tuple[str, str]:
    """Traffic drifts on day 6 without labels; its labels come on day 8. Returns both retrains' outcomes."""
    from flows.label import label
    from flows.observe import observe

    # Away from whichever population the champion now serves.
    day6 = make_batch(ROWS, seed=6, day=6, shift=0.0 if shifted_champion else 0.8).with_row_index(ID, offset=600_000)
    traffic = _write(incoming, "traffic-day6", day6.drop("churned"))
    story.state("observe day 6's unlabelled traffic", observe(model=MODEL, files=[traffic], return_state=True))
    story.add("... events act again", "data.observed → monitor (traffic) → drift.detected → retrain")
    check = _wait(
        lambda: _first_run("monitor", lambda r: r["parameters"].get("kind") == "inference"), "the traffic check"
    )
    story.add("monitor of the traffic (started by data.observed)", f"{check['state_name']}: {check['state_message']}")
    waiting = _wait(lambda: _first_run("retrain", lambda r: r["state_name"] == "WaitingForLabels"), "a waiting retrain")
    waited = story.add("retrain (started by drift.detected)", f"{waiting['state_name']}: {waiting['state_message']}")
    labels = day6.select(ID, "churned", pl.lit("2026-01-09T09:00:00").alias("label_time"))
    kept = label(model=MODEL, files=[_write(incoming, "labels-day8", labels)], return_state=True)
    story.state("labels for day 6 arrive on day 8", kept)
    answer = _wait(
        lambda: _first_run("retrain", lambda r: r["parameters"].get("event_name") == "retrainer.labels.joined"),
        "the retrain on joined labels",
    )
    joined = story.add("retrain (started by labels.joined)", f"{answer['state_name']}: {answer['state_message']}")
    return waited.split(":")[0], joined.split(":")[0]


def _epilogue(workdir: Path, story: Story, urls: dict[str, str], keep: bool) -> None:
    from retrainer.app.status import model_status, render_text
    from retrainer.workspace import Workspace

    print("\n=== story ===")
    for label, outcome in story.lines:
        print(f"{label}\n          {outcome.splitlines()[0] if outcome else ''}")
    print("\n=== status ===")
    workspace = Workspace.open()
    print(render_text(model_status(workspace, MODEL)))
    environment = f"RETRAINER_CONFIG={workdir / 'retrainer.yaml'} RETRAINER_HOME={workdir / '.retrainer'}"
    print(
        f"\nPrefect UI:  {urls['prefect_ui']}"
        + ("  (running: stop it with `retrainer down`)" if keep else "  (stopped)")
        + "\nMLflow UI:\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {workspace.settings.mlflow_uri} --host 127.0.0.1 --port 5000\n"
        "Try it yourself:\n"
        f"  {environment} \\\n    .venv/bin/retrainer status --model {MODEL}"
    )


def _wait(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1.0)
    raise RetrainerError(
        f"demo: gave up after {WAIT_SECONDS:.0f} s waiting for {what} (see .retrainer/prefect/serve.log)"
    )


def _deployments() -> int:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return len(client.read_deployments())


def _runs(flow_name: str, finished: bool = False) -> list[dict[str, Any]]:
    """Flow runs of ``flow_name`` (oldest first) as plain dicts; only terminal ones if ``finished``."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.EXPECTED_START_TIME_ASC
        )
    found = [
        {
            "state_name": run.state.name if run.state else None,
            "state_message": (run.state.message or "") if run.state else "",
            "parameters": run.parameters,
            "final": bool(run.state and run.state.is_final()),
        }
        for run in runs
    ]
    return [run for run in found if run["final"]] if finished else found


def _first_run(flow_name: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    return next((run for run in _runs(flow_name, finished=True) if wanted(run)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_workdir(workdir: Path) -> Path:
    """Reset a directory the demo made before; refuse to touch any other non-empty directory.

    Raises:
        ConfigError: ``workdir`` holds files the demo did not create.
    """
    marker = workdir / MARKER
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():
            raise ConfigError(f"{workdir}: not empty and not a demo directory; choose another --workdir")
        _stop_previous(workdir)
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by `retrainer demo`; the next demo run deletes this directory\n", encoding="utf-8")
    return workdir


def _stop_previous(workdir: Path) -> None:
    """Stop a server a previous ``KEEP=1`` demo left running in this directory."""
    from deployments.local_server import down
    from retrainer.config import load_settings

    down(load_settings(home=workdir / ".retrainer"))


def _write(directory: Path, name: str, frame: pl.DataFrame) -> str:
    path = directory / f"{name}.parquet"
    frame.write_parquet(path)
    return str(path)
