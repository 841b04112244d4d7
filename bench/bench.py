"""``make bench``: what a retraining cycle costs and how fast retrainer reacts, as ratios measured in one run.

Usage: python bench/bench.py [--sizes 100000,1000000] [--runs 3] [--skip-tests] [--out bench/RESULTS.md]

Measured (seeded data: 20 features, 18 numeric and 2 categorical):

1. drift check vs Evidently's DataDriftPreset on the full frames (``bench/drift.py``, scenario "large");
2. retrain cycle through the flows (``retrainer ingest`` of a new batch, then ``retrainer retrain`` judged
   against the champion, decision recorded) vs bare LightGBM on the same files (read, train, predict
   the holdout with the new and the previous model), each a fresh process;
3. peak RSS of each process (``wait4``);
4. event emitted -> retrain flow running, on a local server with ``retrainer serve``;
5. ``retrainer --help`` wall time;
6. the test suite's wall time (``pytest``, as ``make test``);
7. CLI round trips: ``retrainer status``, and ``retrainer ingest`` of a 10k-row batch with the local
   server running and without one (Prefect's temporary server).

Every figure is the median of ``--runs`` runs unless said otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from retrainer.config import PromotionPolicy
from retrainer.data.synth import demo_config, make_batch

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
BATCHES = 5  # per cycle: 4 training batches and the newest as holdout
POLICY = PromotionPolicy.model_validate(demo_config()["models"]["churn"]["promotion"])  # type: ignore[index]


@dataclass(frozen=True)
class Run:
    """One process: wall seconds and peak RSS."""

    seconds: float
    peak_gib: float


def run(command: list[str], env: dict[str, str], cwd: Path) -> Run:
    """Run ``command`` to completion; its wall time and its own peak RSS.

    Raises:
        RuntimeError: the command failed (its output is shown).
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        if process.returncode != 0:
            output.seek(0)
            raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{output.read().decode()[-3000:]}")
    return Run(elapsed, usage.ru_maxrss / 2**20)


def median(runs: list[Run]) -> Run:
    """Median wall time; the largest peak RSS."""
    return Run(statistics.median(r.seconds for r in runs), max(r.peak_gib for r in runs))


# --- workspace -------------------------------------------------------------------------------------


@dataclass
class Workspace:
    """A retrainer workspace in a scratch directory, with the environment its commands run in."""

    root: Path
    env: dict[str, str]

    @classmethod
    def create(cls, root: Path, api: str | None) -> Workspace:
        config = demo_config()
        churn = config["models"]["churn"]  # type: ignore[index]
        churn["window"] = {"batches": BATCHES - 1}
        churn["holdout"] = {"batches": 1}
        churn["automation"] = {"monitor_cron": None}
        root.mkdir(parents=True, exist_ok=True)
        (root / "retrainer.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        env = {
            **os.environ,
            "RETRAINER_CONFIG": str(root / "retrainer.yaml"),
            "RETRAINER_HOME": str(root / "home"),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("PREFECT_API_URL", None)
        if api is not None:
            env["PREFECT_API_URL"] = api
        return cls(root, env)

    def batch(self, name: str, rows: int, day: int) -> Path:
        path = self.root / f"{name}.parquet"
        make_batch(rows, seed=1000 + day, day=day, extra_numeric=16).write_parquet(path)
        return path

    def retrainer(self, *args: str) -> Run:
        return run([str(BIN / "retrainer"), *args], self.env, self.root)


# --- 1. drift ---------------------------------------------------------------------------------------


def drift(rows: int, runs: int, out: Path) -> dict[str, Any]:
    """Monitor check vs Evidently on the full frames (scenario "large"), both medians of ``runs``.

    ``make bench-drift`` compares all six shift scenarios, with per-column scores.
    """
    target = out / f"drift-{rows}"
    command = [
        sys.executable,
        str(ROOT / "bench" / "drift.py"),
        f"--rows={rows}",
        "--scenarios=large",
        "--evidently-scenarios=large",
        f"--repeats={runs}",
        f"--evidently-repeats={runs}",
        f"--out={target}",
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    raw = json.loads((target / "outcomes.json").read_text(encoding="utf-8"))
    outcomes = raw["outcomes"]
    agreeing = sum(
        m["drifted"] == e["drifted"] for o in outcomes for m, e in zip(o["monitor"], o["evidently"], strict=True)
    )
    columns = sum(len(o["monitor"]) for o in outcomes)
    check = sum(o["check_s"] for o in outcomes)
    evidently = sum(o["evidently_s"] for o in outcomes)
    return {
        "rows": rows,
        "check_s": check / len(outcomes),
        "evidently_s": evidently / len(outcomes),
        "ratio": evidently / check,
        "verdicts": all(o["monitor_dataset"] == o["evidently_dataset"] for o in outcomes),
        "agreement": agreeing / columns,
        "check_rss_gib": raw["rss"]["peak_mib"] / 1024,
    }


# --- 2./3. retrain cycle ------------------------------------------------------------------------------


def retrain_cycle(rows: int, runs: int, scratch: Path, api: str) -> dict[str, Any]:
    """Ingest + judged retrain through the CLI vs bare LightGBM on the same batch files."""
    work = Workspace.create(scratch / f"cycle-{rows}", api)
    per_batch = rows // BATCHES
    files = [work.batch(f"day{d:02d}", per_batch, d) for d in range(BATCHES + runs)]
    work.retrainer("ingest", "--model", "churn", *map(str, files[:BATCHES]))
    work.retrainer("retrain", "--model", "churn", "--reason", "bench: first champion")
    bare_model = work.root / "bare-champion.txt"
    bare = _bare_command(files[: BATCHES - 1], files[BATCHES - 1], None, bare_model)
    run(bare, work.env, work.root)  # the bare champion, untimed like the flows' first one
    flows, bares = [], []
    for n in range(runs):
        newest = BATCHES + n
        ingest = work.retrainer("ingest", "--model", "churn", str(files[newest]))
        retrain = work.retrainer("retrain", "--model", "churn", "--reason", f"bench cycle {n}")
        flows.append(Run(ingest.seconds + retrain.seconds, max(ingest.peak_gib, retrain.peak_gib)))
        window = files[newest - BATCHES + 1 : newest]
        challenger = work.root / f"bare-{n}.txt"
        bares.append(run(_bare_command(window, files[newest], bare_model, challenger), work.env, work.root))
        bare_model = challenger
    flow, plain = median(flows), median(bares)
    return {"rows": rows, "flow": flow, "bare": plain, "ratio": flow.seconds / plain.seconds}


def _bare_command(train: list[Path], holdout: Path, champion: Path | None, save: Path) -> list[str]:
    command = [sys.executable, str(Path(__file__)), "--bare", str(save), "--holdout", str(holdout)]
    if champion is not None:
        command += ["--champion", str(champion)]
    return [*command, *map(str, train)]


def bare_lightgbm(train: list[Path], holdout: Path, champion: Path | None, save: Path) -> None:
    """Child mode: what retraining costs without retrainer: read, train, predict the holdout with both models."""
    import lightgbm as lgb
    import numpy as np
    import polars as pl

    model = demo_config()["models"]["churn"]  # type: ignore[index]
    params, levels = model["lightgbm"], model["categorical"]
    target, time_column = "churned", "event_time"

    def matrix(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, list[int]]:
        features = frame.drop(target, time_column).with_columns(
            pl.col(name).cast(pl.Enum(values)).to_physical().cast(pl.Float64) for name, values in levels.items()
        )
        categorical = [features.columns.index(name) for name in levels]
        return features.cast(pl.Float64).to_numpy(), frame[target].to_numpy(), categorical

    frame = pl.concat([pl.read_parquet(p) for p in train]).sort(time_column)
    x, y, categorical = matrix(frame)
    split = int(len(y) * (1 - params.get("validation_fraction", 0.1)))
    # The LightGBM configuration retrainer trains with, so that only the orchestration differs.
    booster_params = {
        "objective": "binary",
        "learning_rate": params.get("learning_rate", 0.05),
        "num_leaves": params.get("num_leaves", 31),
        "min_data_in_leaf": params.get("min_child_samples", 20),
        "num_threads": params.get("num_threads", 1),
        "seed": params.get("seed", 42),
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }
    train_set = lgb.Dataset(x[:split], y[:split], categorical_feature=categorical)
    booster = lgb.train(
        booster_params,
        train_set,
        num_boost_round=params.get("n_estimators", 500),
        valid_sets=[lgb.Dataset(x[split:], y[split:], categorical_feature=categorical, reference=train_set)],
        callbacks=[lgb.early_stopping(params.get("early_stopping_rounds", 50), verbose=False)],
    )
    booster.save_model(str(save))
    holdout_x, _, _ = matrix(pl.read_parquet(holdout))
    booster.predict(holdout_x, num_threads=0)  # on every core, as retrainer predicts
    if champion is not None:
        lgb.Booster(model_file=str(champion)).predict(holdout_x, num_threads=0)


# --- 4. event latency -------------------------------------------------------------------------------


def event_latency(runs: int, api: str) -> list[float]:
    """Seconds from a posted drift event to its retrain flow run's start, one event at a time."""
    latencies = []
    for n in range(runs):
        event_id, key = str(uuid.uuid4()), f"churn:bench:{n}:{uuid.uuid4().hex[:8]}"
        occurred = datetime.now(UTC)
        event = {
            "id": event_id,
            "occurred": occurred.isoformat(),
            "event": "retrainer.drift.detected",
            "resource": {"prefect.resource.id": "retrainer.model.churn", "prefect.resource.name": "churn"},
            "payload": {"incident_key": key},
            "related": [],
        }
        httpx.post(f"{api}/events", json=[event], timeout=10).raise_for_status()
        started = _wait(partial(_run_of, api, event_id), 300, "the retrain of a bench event")
        latencies.append((datetime.fromisoformat(started["start_time"]) - occurred).total_seconds())
        _wait(partial(_finished, api, started["id"]), 600, "the bench retrain to finish")
    return latencies


def _run_of(api: str, event_id: str) -> dict[str, Any] | None:
    body = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "COMPLETED", "FAILED", "CRASHED"]}}}, "limit": 50}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    found = [r for r in runs if r["parameters"].get("event_id") == event_id and r["start_time"]]
    return found[0] if found else None


def _finished(api: str, run_id: str) -> bool:
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state_type"]
    return state in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


# --- 5./7. CLI ----------------------------------------------------------------------------------------


def help_time(runs: int) -> float:
    """Median wall time of ``retrainer --help`` in a fresh process."""
    return median([run([str(BIN / "retrainer"), "--help"], dict(os.environ), ROOT) for _ in range(runs)]).seconds


# What any Prefect flow run costs in a fresh process: the floor under `retrainer ingest`.
ONE_TASK_FLOW = """
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

@task(cache_policy=NO_CACHE)
def step() -> int:
    return 1

@flow
def one_task() -> int:
    return step()

one_task()
"""


def cli_round_trips(runs: int, work: Workspace, api: str) -> dict[str, float]:
    """``retrainer status``, the ingest of a 10k-row batch with and without the local server, and
    a one-task Prefect flow against the same server; each once the runs earlier ones set off are over."""

    def when_idle(command: list[str], env: dict[str, str]) -> Run:
        wait_idle(api)  # an accepted batch starts a monitor under `retrainer serve`
        return run(command, env, work.root)

    retrainer = str(BIN / "retrainer")
    status = median([when_idle([retrainer, "status", "--model", "churn"], work.env) for _ in range(runs)])
    files = [work.batch(f"cli-{n}", 10_000, 100 + n) for n in range(2 * runs)]
    with_server = median([when_idle([retrainer, "ingest", "--model", "churn", str(f)], work.env) for f in files[:runs]])
    floor = median([when_idle([sys.executable, "-c", ONE_TASK_FLOW], work.env) for _ in range(runs)])
    alone = {k: v for k, v in work.env.items() if k != "PREFECT_API_URL"}
    without = median([when_idle([retrainer, "ingest", "--model", "churn", str(f)], alone) for f in files[runs:]])
    return {
        "status": status.seconds,
        "ingest_server": with_server.seconds,
        "prefect_floor": floor.seconds,
        "ingest_temporary": without.seconds,
    }


# --- 6. tests -----------------------------------------------------------------------------------------


def test_suite(log: Path) -> dict[str, Any]:
    """Wall time and exit code of the test suite as ``make test`` runs it; its output goes to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log.open("wb") as output:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        code = subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, check=False).returncode
    return {"seconds": time.perf_counter() - started, "exit": code, "log": log}


# --- the local server ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(work: Workspace) -> str:
    """``retrainer up`` on a free port; returns the API URL (also set in ``work``'s environment)."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    work.env["PREFECT_API_URL"] = api
    subprocess.run([str(BIN / "retrainer"), "up", "--port", str(port)], env=work.env, check=True, capture_output=True)
    return api


def start_serving(work: Workspace, api: str) -> subprocess.Popen[bytes]:
    """``retrainer serve`` for ``work``, once its deployments and automations are in place."""
    log = (work.root / "serve.log").open("w")
    serving = subprocess.Popen([str(BIN / "retrainer"), "serve"], env=work.env, cwd=work.root, stdout=log, stderr=log)
    _wait(lambda: len(httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()) >= 4, 300, "serve")
    time.sleep(3)  # automations reach the trigger service asynchronously
    return serving


def wait_idle(api: str) -> None:
    """Until no flow run is pending or running (runs started by earlier events)."""
    busy = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}}}
    time.sleep(3)
    _wait(lambda: not httpx.post(f"{api}/flow_runs/filter", json=busy, timeout=10).json(), 600, "idle server")


# --- report -------------------------------------------------------------------------------------------


def _machine() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        cpu = names[0] if names else cpu
    return f"{cpu} ({platform.machine()}), {os.cpu_count()} cores, {pages / 2**30:.0f} GiB RAM"


def _versions() -> str:
    from importlib.metadata import version

    names = ["prefect", "mlflow", "lightgbm", "polars", "evidently", "numpy", "pandas"]
    return ", ".join(f"{n} {version(n)}" for n in names) + f", Python {platform.python_version()}"


def _check(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(args: argparse.Namespace, results: dict[str, Any]) -> str:
    """The results page."""
    lines = [
        "# retrainer benchmarks",
        "",
        f"machine: {_machine()}",
        f"packages: {_versions()}",
        f"command: {' '.join([sys.executable, *sys.argv])}  (cwd {Path.cwd()})",
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; every time is the median of {args.runs} run(s)"
        " unless said otherwise; the machine is shared and noisy, so the ratios are the figures that count.",
        "",
        "| # | measure | measured | goal | result |",
        "|---|---|---|---|---|",
    ]
    for d in results["drift"]:
        lines.append(
            f"| 1 | drift check vs Evidently DataDriftPreset, {d['rows']:,} rows per side (scenario large) | "
            f"{d['check_s']:.2f} s vs {d['evidently_s']:.1f} s = **{d['ratio']:.1f}x**; dataset verdicts "
            f"{'agree' if d['verdicts'] else 'DIFFER'}, columns agree {d['agreement']:.0%} | "
            f"{'>= 30x at 1M' if d['rows'] >= 1_000_000 else 'reported'} | "
            f"{_check(d['ratio'] >= 30) if d['rows'] >= 1_000_000 else '-'} |"
        )
    for c in results["cycle"]:
        lines.append(
            f"| 2 | retrain cycle through the flows vs bare LightGBM, {c['rows']:,} rows | "
            f"{c['flow'].seconds:.1f} s vs {c['bare'].seconds:.1f} s = **{c['ratio']:.2f}x** | <= 1.5x | "
            f"{_check(c['ratio'] <= 1.5)} |"
        )
        big = c["rows"] >= 1_000_000
        goal = "<= 3 GB (2.79 GiB) at 1M" if big else "reported"
        verdict = _check(c["flow"].peak_gib <= 2.79) if big else "-"
        peaks = f"{c['flow'].peak_gib:.2f} / {c['bare'].peak_gib:.2f} GiB"
        lines.append(f"| 3 | peak RSS, {c['rows']:,} rows: flows / bare | {peaks} | {goal} | {verdict} |")
    for d in results["drift"]:
        lines.append(f"| 3 | peak RSS, drift check at {d['rows']:,} rows | {d['check_rss_gib']:.2f} GiB | - | - |")
    latency = statistics.median(results["latency"])
    spread = ", ".join(f"{s:.1f}" for s in results["latency"])
    lines += [
        f"| 4 | event emitted -> retrain flow running (local server, `retrainer serve`) | **{latency:.1f} s** "
        f"(runs: {spread}) | <= 5 s | {_check(latency <= 5)} |",
        f"| 5 | `retrainer --help` | {results['help']:.2f} s | <= 1 s | {_check(results['help'] <= 1)} |",
    ]
    tests = results.get("tests")
    suite = "not run" if tests is None else f"{tests['seconds']:.0f} s" + (" (FAILED)" if tests["exit"] else "")
    lines.append(f"| 6 | test suite (`pytest`, one run) | {suite} | - | - |")
    cli = results["cli"]
    lines += [
        f"| 7 | `retrainer status` | {cli['status']:.2f} s | <= 1.5 s | {_check(cli['status'] <= 1.5)} |",
        f"| 7 | `retrainer ingest` 10k rows, local server running | {cli['ingest_server']:.2f} s | <= 3 s | "
        f"{_check(cli['ingest_server'] <= 3)} |",
        f"| 7 | the floor: a one-task Prefect flow, local server running | {cli['prefect_floor']:.2f} s | "
        "reported | - |",
        f"| 7 | `retrainer ingest` 10k rows, Prefect's temporary server | {cli['ingest_temporary']:.2f} s | "
        "reported | - |",
        "",
        "How: (1) `bench/drift.py` on scenario large (monitor check = `check_window`: exact "
        "scores in polars + Evidently's HTML on a sample; Evidently = the preset on the full frames), "
        "peak RSS of the check in a fresh process. (2) A cycle is `retrainer ingest` of one new batch "
        f"and `retrainer retrain` judged against the champion ({BATCHES - 1} training batches, the newest "
        f"as holdout; the bound is a {POLICY.resamples}-resample paired bootstrap below "
        f"{POLICY.large_sample_rows:,} holdout rows and DeLong's from there), each a fresh process against the "
        "local server; bare "
        "LightGBM is a fresh process that reads the same files with polars, trains with the same "
        "parameters and early stopping, and predicts the holdout with the new and the previous model. "
        "(3) Peak RSS is each process's own (`wait4`). (4) A drift event posted to the server's events "
        "API until the retrain's flow run has a start time, one event at a time. (7) Fresh processes; "
        "the 10k-row ingest without a server pays for Prefect's temporary server; the one-task flow is "
        "what importing Prefect and running any flow against the server costs here.",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run every measure and write the results page."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-tests", action="store_true", help="do not time the test suite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--holdout", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--champion", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("train", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare is not None:
        bare_lightgbm(args.train, args.holdout, args.champion, args.bare)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="retrainer-bench-"))
    results: dict[str, Any] = {"help": help_time(max(args.runs, 5))}
    results["drift"] = [drift(rows, args.runs, scratch) for rows in sizes]
    services = Workspace.create(scratch / "services", None)
    api = start_server(services)
    try:
        results["cycle"] = [retrain_cycle(rows, args.runs, scratch, api) for rows in sizes]
        serving = start_serving(services, api)
        try:
            days = [str(services.batch(f"s{d}", 4000, d)) for d in range(BATCHES)]
            services.retrainer("ingest", "--model", "churn", *days)
            services.retrainer("retrain", "--model", "churn", "--reason", "bench: champion")
            wait_idle(api)
            results["latency"] = event_latency(args.runs, api)
            results["cli"] = cli_round_trips(args.runs, services, api)
        finally:
            serving.terminate()
            serving.wait(timeout=60)
    finally:
        subprocess.run([str(BIN / "retrainer"), "down"], env=services.env, check=False, capture_output=True)
    if not args.skip_tests:
        results["tests"] = test_suite(ROOT / "bench" / "out" / "tests.log")
    page = render(args, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page + "\n", encoding="utf-8")
    print(page)
    shutil.rmtree(scratch, ignore_errors=True)
    if results.get("tests", {}).get("exit", 0) != 0:
        sys.exit(f"the test suite failed: {results['tests']['log']}")


if __name__ == "__main__":
    main()
