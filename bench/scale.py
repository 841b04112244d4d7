"""``make bench-scale``: the scaled layout's throughput and cost, measured in one run on this machine.

Usage: python bench/scale.py [--rows 100000] [--out bench/RESULTS-scale.md]

1. **Workers.** The event-driven story of ``tests/scale/scenario.py`` (3 models; two labelled
   batches each, landed in S3 with a signed notice through the webhook receiver, then one drift
   alert each) on a fresh scaled layout with 1 worker, then with 2 workers (``--limit 1`` each):
   wall time from the first notice until every started run has ended.
2. **One retrain at ``--rows`` rows.** ``retrainer retrain`` of one model over four batches, as a
   process, on the embedded default (a local Prefect server on SQLite, SQLite MLflow, data and
   metadata under ``RETRAINER_HOME``) and on the scaled layout (Prefect on PostgreSQL behind two
   replicas, MLflow server with S3 artifacts, PostgreSQL metadata, S3 data); then
   ``retrainer status`` on each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.scale, when run as a script
sys.path.insert(0, str(ROOT / "bench"))

from bench import _machine, _versions  # noqa: E402
from retrainer.data.synth import demo_config, make_batch  # noqa: E402
from tests.scale.scenario import deployed, drive, run  # noqa: E402
from tests.scale.stack import BIN, Stack, clean_environ, free_port  # noqa: E402


def main() -> None:
    """Run both measures and write the results page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the single retrain (four batches)")
    parser.add_argument("--out", type=Path, default=Path("bench/RESULTS-scale.md"))
    args = parser.parse_args()
    started = time.perf_counter()
    walls = {workers: _scenario(workers) for workers in (1, 2)}
    embedded, scaled = _single_retrain(args.rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_render(args, walls, embedded, scaled, time.perf_counter() - started), encoding="utf-8")
    print(args.out.read_text(encoding="utf-8"))


def _scenario(workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch, Stack() as stack:
        with deployed(stack, Path(scratch), workers=workers) as scene:
            wall, runs = drive(stack, scene)
        failed = [r for r in runs if r["state_type"] != "COMPLETED"]
        if failed:
            raise SystemExit(f"runs did not complete: {[(r['flow'], r['state_name']) for r in failed]}")
        return wall


def _single_retrain(rows: int) -> tuple[dict[str, float], dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
        root = Path(scratch)
        config = root / "retrainer.yaml"
        config.write_text(yaml.safe_dump(demo_config()), encoding="utf-8")
        files = []
        for day in range(4):
            path = root / f"batch{day}.parquet"
            make_batch(rows // 4, seed=40 + day, day=day).write_parquet(path)
            files.append(path)
        embedded = _embedded(root / "embedded", config, files)
        with Stack() as stack:
            s3 = stack.s3_client()
            keys = []
            for path in files:
                s3.upload_file(str(path), "retrainer-data", f"landing/{path.name}")
                keys.append(f"s3://retrainer-data/landing/{path.name}")
            home = root / "scaled"
            home.mkdir()
            env = {**stack.client_env(), "RETRAINER_CONFIG": str(config), "PREFECT_HOME": str(home / ".prefect")}
            scaled = _timed_commands(env, home, keys)
    return embedded, scaled


def _embedded(home: Path, config: Path, files: list[Path]) -> dict[str, float]:
    home.mkdir()
    port = free_port()
    env = {
        **clean_environ(),
        "PREFECT_HOME": str(home / ".prefect"),
        "RETRAINER_HOME": str(home / ".retrainer"),
        "RETRAINER_CONFIG": str(config),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        _wait_healthy(env["PREFECT_API_URL"])
        return _timed_commands(env, home, [str(f) for f in files])
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()


def _timed_commands(env: dict[str, str], cwd: Path, files: list[str]) -> dict[str, float]:
    times = {}
    for name, argv in (
        ("ingest", ["ingest", "--model", "churn", *files]),
        ("retrain", ["retrain", "--model", "churn", "--reason", "bench"]),
        ("status", ["status", "--model", "churn"]),
    ):
        began = time.perf_counter()
        run(env, cwd, BIN / "retrainer", *argv)
        times[name] = time.perf_counter() - began
    return times


def _wait_healthy(api: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the embedded Prefect server did not start")


def _render(
    args: argparse.Namespace,
    walls: dict[int, float],
    embedded: dict[str, float],
    scaled: dict[str, float],
    total: float,
) -> str:
    lines = [
        "# Scaled layout: workers and cost (`make bench-scale`)",
        "",
        f"- Run {datetime.now(UTC).isoformat(timespec='seconds')} on {_machine()}",
        f"- {_versions()}",
        f"- Command: `python bench/scale.py --rows {args.rows}`; total {total:.0f} s",
        "",
        "## 3 models, event-driven (2 data notices + 1 drift alert each), wall time",
        "",
        "| workers | wall | vs 1 worker |",
        "|---:|---:|---:|",
        *(f"| {w} | {s:.0f} s | {s / walls[1]:.2f} |" for w, s in walls.items()),
        "",
        f"## One retrain at {args.rows:,} rows (four batches), each command a fresh process",
        "",
        "| command | embedded default | scaled layout | ratio |",
        "|---|---:|---:|---:|",
        *(f"| `{c}` | {embedded[c]:.1f} s | {scaled[c]:.1f} s | {scaled[c] / embedded[c]:.2f} |" for c in embedded),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
