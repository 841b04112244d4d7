"""``make bench-traffic``: unlabelled traffic observed and checked for drift, and late labels joined, at scale.

Usage: python bench/traffic.py [--rows 1000000] [--inference-rows 10000000] [--labels 1000000] [--out PATH]

Measured, each step in a fresh process (wall time and the process's own peak RSS, ``wait4``), on
seeded churn data with 20 features (18 numeric, 2 categorical), an id and a time column:

1. ``observe``: one inference file of ``--rows`` rows checked against the contract (no target, ids
   unique and new) and stored as a traffic batch;
2. ``check``: the monitor's drift check of that batch against the champion's reference (features
   and the champion's predictions, as served);
3. ``label``: one label file of ``--labels`` (id, target) rows checked whole and kept;
4. ``join``: those labels joined by id to ``--inference-rows`` stored inference rows (polars lazy
   scans and hash joins) and written as one labelled batch.

The inference rows of step 4 are stored beforehand in batches of ``--rows`` rows (not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/bench.py, when run as a script

from bench import Run, _machine, _versions, run
from retrainer.data.synth import demo_config, make_batch

ID = "request_id"
MODEL = "churn"
FEATURES = 16


def main() -> None:
    """Run every step and write the results page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the inference batch observed and checked")
    parser.add_argument("--inference-rows", type=int, default=10_000_000, help="stored inference rows labels join")
    parser.add_argument("--labels", type=int, default=1_000_000, help="rows of the label file joined")
    parser.add_argument("--out", type=Path, default=Path("bench/RESULTS-traffic.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.workdir, args.file)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-traffic-") as scratch:
        results = _measure(Path(scratch), args)
    results["total_seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_render(args, results), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"[bench] wrote {args.out}")


def _measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = _environment(root)
    step = _stepper(root, env)
    step("champion")
    observed = step("observe", _inference(root / "traffic-0.parquet", args.rows, first_id=0, shift=0.6))
    checked = step("check")
    stored, growing = args.rows, []
    while stored < args.inference_rows:
        rows = min(args.rows, args.inference_rows - stored)
        later = step("observe", _inference(root / f"traffic-{stored}.parquet", rows, first_id=stored, shift=0.0))
        growing.append({"stored_before": stored, "seconds": later.seconds, "peak_gib": later.peak_gib})
        stored += rows
    labels = _labels(root / "labels.parquet", args.labels, stored)
    labelled = step("label", labels)
    joined = step("join")
    outcome = json.loads((root / "join.json").read_text(encoding="utf-8"))
    check = json.loads((root / "check.json").read_text(encoding="utf-8"))
    return {
        "observe": _figures(observed, args.rows),
        "check": {**_figures(checked, args.rows), **check},
        "label": _figures(labelled, args.labels),
        "join": {**_figures(joined, args.labels), **outcome, "inference_rows": stored},
        "observe_as_traffic_grows": growing,
    }


def _stepper(root: Path, env: dict[str, str]) -> Any:
    def step(name: str, file: Path | None = None) -> Run:
        command = [sys.executable, __file__, "--child", name, "--workdir", str(root)]
        measured = run([*command, "--file", str(file)] if file else command, env, root)
        print(f"[bench] {name}{f' {file.name}' if file else ''}: {measured.seconds:.1f} s, {measured.peak_gib:.2f} GiB")
        return measured

    return step


def _figures(measured: Run, rows: int) -> dict[str, Any]:
    return {"seconds": measured.seconds, "peak_gib": measured.peak_gib, "rows": rows}


def _environment(root: Path) -> dict[str, str]:
    config = demo_config()
    churn = config["models"]["churn"]  # type: ignore[index]
    churn["drift"] = {"drift_share": 0.3}
    (root / "retrainer.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, "RETRAINER_CONFIG": str(root / "retrainer.yaml"), "RETRAINER_HOME": str(root / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _inference(path: Path, rows: int, first_id: int, shift: float) -> Path:
    frame = make_batch(rows, seed=first_id % 9973, day=1, shift=shift, extra_numeric=FEATURES)
    frame.drop("churned").with_row_index(ID, offset=first_id).write_parquet(path)
    return path


def _labels(path: Path, rows: int, stored: int) -> Path:
    ids = np.random.default_rng(5).choice(stored, size=min(rows, stored), replace=False)
    labels = np.random.default_rng(6).integers(0, 2, ids.size)
    pl.DataFrame({ID: ids.astype(np.int64), "churned": labels}).write_parquet(path)
    return path


# --- the steps, each in its own process -------------------------------------------------------------


def _child(name: str, workdir: Path, file: Path | None) -> None:
    from retrainer.workspace import Workspace

    ws = Workspace.open()
    config = ws.model(MODEL)
    data = ws.data(MODEL)
    if name == "champion":
        _register_champion(ws)
    elif name == "observe" and file is not None:
        from retrainer.data.traffic import observe_file

        outcome = observe_file(data, config, file)
        if outcome.error is not None:
            raise SystemExit(str(outcome.error))
    elif name == "check":
        _check(ws, workdir)
    elif name == "label" and file is not None:
        from retrainer.data.traffic import label_file

        outcome = label_file(data, config, file)
        if outcome.error is not None:
            raise SystemExit(str(outcome.error))
    elif name == "join":
        from retrainer.data.traffic import join_labels

        report = join_labels(data, config)
        summary = {"joined_rows": report.joined_rows, "pending_rows": report.pending_rows}
        (workdir / "join.json").write_text(json.dumps(summary), encoding="utf-8")


def _register_champion(ws: Any) -> None:
    from retrainer.data.contract import check_batch, schema_for
    from retrainer.data.features import FeatureSpec
    from retrainer.model.registry import CHAMPION
    from retrainer.model.training import train
    from retrainer.monitor.reference import reference_rows, reference_sample, store_reference

    config = ws.model(MODEL)
    raw = make_batch(100_000, seed=1, day=0, extra_numeric=FEATURES)
    schema = schema_for(config, raw.columns, None)
    frame = check_batch(raw, schema, config, "champion")
    spec = FeatureSpec.build(config, schema)
    trained = train(frame.head(90_000), frame.slice(90_000), spec, config.lightgbm)
    registry = ws.registry
    run_id = registry.start_run(MODEL, "bench-champion", {}, {})
    version = registry.register(MODEL, run_id, trained, frame.head(5).to_pandas())
    rows = reference_rows(frame, config.drift)
    store_reference(registry, run_id, reference_sample(rows, spec, trained.predict(rows)))
    registry.set_alias(MODEL, CHAMPION, version.version)


def _check(ws: Any, workdir: Path) -> None:
    from retrainer.model.registry import CHAMPION
    from retrainer.monitor.check import check_champion
    from retrainer.monitor.reference import champion_reference
    from retrainer.monitor.window import traffic_window

    config = ws.model(MODEL)
    data = ws.data(MODEL)
    champion = ws.registry.alias(MODEL, CHAMPION)
    reference = champion_reference(data.labelled, ws.registry, config, champion)
    window = traffic_window(data.traffic, config.drift.window)
    result = check_champion(data.traffic, ws.registry, config, champion, reference, window, None, [])
    check = result.check
    summary = {"drift_detected": check.drift_detected, "drift_share": check.drift_share, "engine": check.engine}
    (workdir / "check.json").write_text(json.dumps(summary), encoding="utf-8")


# --- report -------------------------------------------------------------------------------------------


def _render(args: argparse.Namespace, results: dict[str, Any]) -> str:
    o, c, lab, j = results["observe"], results["check"], results["label"], results["join"]
    rows = [
        ("observe an inference batch (contract, ids unique and new, store)", o),
        ("drift check of that batch vs the champion's reference", c),
        ("keep a label file (checked whole)", lab),
        (f"join the labels to {j['inference_rows']:,} stored inference rows", j),
    ]
    table = "\n".join(
        f"| {what} | {m['rows']:,} | {m['seconds']:.1f} s | {m['peak_gib']:.2f} GiB |" for what, m in rows
    )
    return f"""# Traffic and late labels at scale

- Date: {datetime.now(UTC).isoformat(timespec="seconds")}
- Command: `{" ".join([Path(sys.executable).name, *sys.argv])}`
- Machine: {_machine()}
- Versions: {_versions()}
- Total wall time: {results["total_seconds"] / 60:.1f} min

Each step ran in a fresh process; the figures are its wall time and its own peak RSS (`wait4`).
Seeded churn data: 20 features (18 numeric, 2 categorical), `request_id`, `event_time`.

| step | rows | wall time | peak RSS |
|---|---:|---:|---:|
{table}

- The checked batch drifted (shift 0.6): drift detected {c["drift_detected"]}, share {c["drift_share"]:.2f},
  statistics by {c["engine"]}.
- The join joined {j["joined_rows"]:,} labels; {j["pending_rows"]:,} were left waiting.
- Steps 1 and 3 include reading every stored id once (an id must be new to the traffic, a label
  new to the label files), so observing slows as the traffic grows: {_growth(results)}.
"""


def _growth(results: dict[str, Any]) -> str:
    growing = results["observe_as_traffic_grows"]
    if not growing:
        return "not measured"
    last = growing[-1]
    first = results["observe"]
    return (
        f"{first['seconds']:.1f} s with none stored, {last['seconds']:.1f} s ({last['peak_gib']:.2f} GiB) with "
        f"{last['stored_before']:,} rows stored"
    )


if __name__ == "__main__":
    main()
