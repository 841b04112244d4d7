"""``make demo``: the whole story on generated data, synchronously, in one process."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl
import yaml

from retrainer.errors import ConfigError
from retrainer.synth import demo_config, make_batch

if TYPE_CHECKING:
    from prefect import State

MODEL = "churn"
MARKER = ".retrainer-demo"
ROWS = 20_000


def run_demo(workdir: Path) -> int:
    """Generate data, ingest, train the first champion, detect drift after a shift, retrain, reject a file.

    Returns:
        0 when every step ended as the story expects, 1 otherwise.
    """
    workdir = _fresh_workdir(workdir.absolute())
    incoming = workdir / "incoming"
    incoming.mkdir(parents=True)
    (workdir / "retrainer.yaml").write_text(yaml.safe_dump(demo_config(), sort_keys=False), encoding="utf-8")
    os.environ["RETRAINER_CONFIG"] = str(workdir / "retrainer.yaml")
    os.environ["RETRAINER_HOME"] = str(workdir / ".retrainer")
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from flows.ingest import ingest
    from flows.monitor import monitor
    from flows.retrain import retrain
    from retrainer.status import model_status, render_text
    from retrainer.workspace import Workspace

    started = time.monotonic()
    story: list[tuple[str, str]] = []

    def step(label: str, state: State) -> str:
        name = state.name or state.type.value
        story.append((f"{time.monotonic() - started:6.1f}s  {label}", f"{name}: {state.message or ''}"))
        print(f"[demo] {label}: {name}")
        return name

    initial = [_write(incoming, f"day{d}", make_batch(ROWS, seed=d, day=d)) for d in range(3)]
    step("ingest 3 initial batches", ingest(model=MODEL, files=initial, return_state=True))
    first = step("retrain (no champion yet)", retrain(model=MODEL, reason="initial model", return_state=True))
    shifted = [_write(incoming, f"day{d}-shifted", make_batch(ROWS, seed=d, day=d, shift=0.8)) for d in (3, 4)]
    step("ingest 2 batches after a market shift", ingest(model=MODEL, files=shifted, return_state=True))
    checked = monitor(model=MODEL, return_state=True)
    drift = step("check the newest batch for drift", checked)
    summary = checked.result() if drift == "Incident" else None
    incident = summary["incident"] if isinstance(summary, dict) else None
    second = step(
        "retrain for the drift incident",
        retrain(model=MODEL, reason="drift incident", incident_key=incident, return_state=True),
    )
    bad = make_batch(500, seed=99, day=5).with_columns(pl.col("churned") + 5)
    rejected = step(
        "ingest a batch with impossible labels",
        ingest(model=MODEL, files=[_write(incoming, "bad", bad)], return_state=True),
    )

    print("\n=== story ===")
    for label, outcome in story:
        print(f"{label}\n          {outcome.splitlines()[0]}")
    print("\n=== status ===")
    workspace = Workspace.open()
    print(render_text(model_status(workspace, MODEL)))
    print(
        "\nOpen the MLflow UI:\n"
        f"  .venv/bin/mlflow ui --backend-store-uri {workspace.settings.mlflow_uri} --host 127.0.0.1 --port 5000\n"
        "Try it yourself:\n"
        f"  RETRAINER_CONFIG={workdir / 'retrainer.yaml'} RETRAINER_HOME={workdir / '.retrainer'} \\\n"
        f"    .venv/bin/retrainer status --model {MODEL}"
    )
    expected = (
        first == "Promoted" and drift == "Incident" and second in {"Promoted", "Rejected"} and rejected == "Quarantined"
    )
    return 0 if expected else 1


def _fresh_workdir(workdir: Path) -> Path:
    """Reset a directory the demo made before; refuse to touch any other non-empty directory.

    Raises:
        ConfigError: ``workdir`` holds files the demo did not create.
    """
    marker = workdir / MARKER
    if workdir.exists() and any(workdir.iterdir()):
        if not marker.exists():
            raise ConfigError(f"{workdir}: not empty and not a demo directory; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by `retrainer demo`; the next demo run deletes this directory\n", encoding="utf-8")
    return workdir


def _write(directory: Path, name: str, frame: pl.DataFrame) -> str:
    path = directory / f"{name}.parquet"
    frame.write_parquet(path)
    return str(path)
