"""Ingest + retrain at scale through the ``retrainer`` command; reports wall time and peak RSS.

Usage: python bench/scale.py [--rows 1000000] [--batches 10] [--out bench/out]

Each command runs as its own process; peak RSS is that process's maximum resident set size
(``getrusage(RUSAGE_CHILDREN)`` after it exits), so the figures include Prefect and MLflow.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

from retrainer.synth import demo_config, make_batch

BIN = Path(sys.executable).parent


def _machine() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    python = platform.python_version()
    return f"{platform.machine()}, {os.cpu_count()} cores, {pages / 2**30:.0f} GiB RAM, Python {python}"


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak_kib, before) / 2**20


def main() -> None:
    """Generate the data, run ingest and retrain, print and save a results table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/out/scale"))
    args = parser.parse_args()
    work = args.out.absolute()
    work.mkdir(parents=True, exist_ok=True)
    config = demo_config()
    config["models"]["churn"]["window"] = {"batches": args.batches}  # type: ignore[index]
    (work / "retrainer.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    per_batch = args.rows // args.batches
    files = []
    for day in range(args.batches):
        path = work / f"day{day:02d}.parquet"
        make_batch(per_batch, seed=day, day=day, extra_numeric=16).write_parquet(path)
        files.append(str(path))
    env = {**os.environ, "RETRAINER_CONFIG": str(work / "retrainer.yaml"), "RETRAINER_HOME": str(work / "home")}
    retrainer = str(BIN / "retrainer")
    late = work / "day-late.parquet"
    make_batch(per_batch, seed=args.batches, day=args.batches, shift=0.5, extra_numeric=16).write_parquet(late)
    steps = [
        (f"retrainer ingest ({args.batches} files)", [retrainer, "ingest", "--model", "churn", *files]),
        ("retrainer retrain (first model)", [retrainer, "retrain", "--model", "churn", "--reason", "scale"]),
        ("retrainer ingest (1 shifted file)", [retrainer, "ingest", "--model", "churn", str(late)]),
        ("retrainer retrain (judged vs champion)", [retrainer, "retrain", "--model", "churn", "--reason", "scale"]),
    ]
    rows = []
    for label, command in steps:
        seconds, gib = _run(command, env)
        rows.append(f"| {label} | {seconds:.1f} | {gib:.2f} |")
    server = "PREFECT_API_URL=" + os.environ["PREFECT_API_URL"] if "PREFECT_API_URL" in os.environ else "temporary"
    table = "\n".join(
        [
            f"machine: {_machine()}",
            f"command: {' '.join([sys.executable, *sys.argv])}  (Prefect server: {server})",
            f"data: {args.rows:,} rows x 20 features (18 numeric, 2 categorical) in {args.batches} batches",
            "| step | wall s (incl. process start) | peak RSS GiB |",
            "|---|---|---|",
            *rows,
            "",
            "Peak RSS is the largest of the command processes run so far (getrusage of children).",
        ]
    )
    (work / "RESULTS.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
