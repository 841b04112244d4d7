"""The monitor's drift check against Evidently's DataDriftPreset on the full frames, side by side.

Usage: python bench/drift.py [--rows 1000000] [--scenarios none,small,...] [--evidently-scenarios ...]

For each scenario (a seeded current frame against one seeded reference frame, 18 numeric and 2
categorical features plus the champion's prediction), in one process:

* the monitor check: ``retrainer.monitor.check.check_window``, i.e. the verdicts from ``fast_drift`` on
  the full frames plus the Evidently HTML report drawn on a ``report_rows`` sample per side;
* the verdicts alone: ``retrainer.monitor.fast_stats.fast_drift`` on the full frames;
* the sampled report alone: ``retrainer.monitor.evidently.run_evidently`` on the samples and columns the check draws;
* Evidently's ``DataDriftPreset`` on the full frames (``retrainer.monitor.evidently.run_evidently``).

Imports and first-call costs are paid by a warm-up on small frames before anything is timed; the
cache of ``fast_drift``'s quantile steps is cleared before each timed run, so every figure is a cold
check. Peak RSS of the monitor check is measured in a child process of this script (``--rss-child``)
that reads the frames from Parquet, as the monitor does, and runs only the check.
Results go to ``<out>/RESULTS.md`` and stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from retrainer.config import DriftConfig, ModelConfig
from retrainer.data.contract import Schema
from retrainer.monitor.check import CheckResult, _pinned, check_window
from retrainer.monitor.evidently import EvidentlyRun, run_evidently
from retrainer.monitor.fast_stats import ColumnDrift, ColumnKinds, _quantile_steps, dataset_verdict, fast_drift
from retrainer.monitor.reference import PREDICTION
from retrainer.monitor.window import Window

SCENARIOS = ("none", "small", "medium", "large", "variance", "categorical")
NUMERIC = [f"n{i:02d}" for i in range(18)]
CATEGORICAL = {"c0": ["a", "b", "c", "d"], "c1": [f"k{i:02d}" for i in range(30)]}
FEATURES = [*NUMERIC, *CATEGORICAL]
TARGET = "y"
REFERENCE_SEED = 1_000
SPEEDUP_GOAL = 30.0
AGREEMENT_GOAL = 0.95
RSS_GOAL_GIB = 1.5
# Probabilities of the few-valued integer column n15 and of the categorical columns.
FEW_VALUE_PROBS = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
C0_PROBS = np.array([0.4, 0.3, 0.2, 0.1])
C0_SHIFTED = np.array([0.2, 0.2, 0.3, 0.3])
C1_PROBS = 1 / np.arange(1, 31) / np.sum(1 / np.arange(1, 31))


@dataclass(frozen=True)
class Shift:
    """How a scenario's current frame departs from the reference distribution.

    Attributes:
        mean: Mean shift, in reference standard deviations, per numeric column.
        scale: Factor on the deviations from the mean, per numeric column.
        few_values_tilt: Exponential tilt of n15's five probabilities (0: unchanged).
        categorical: Whether c0 and c1 change their frequencies.
    """

    mean: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    few_values_tilt: float = 0.0
    categorical: bool = False


def _shifts() -> dict[str, Shift]:
    mixed = ["n00", "n01", "n02", "n08", "n09", "n12", "n13", "n16", "n17"]  # normal, lognormal, integer, other
    return {
        "none": Shift(),
        "small": Shift(mean=dict.fromkeys([*NUMERIC[:10], "n12", "n16"], 0.03)),
        "medium": Shift(mean=dict.fromkeys(mixed, 0.2)),
        "large": Shift(mean=dict.fromkeys([*NUMERIC[:12], "n12", "n13"], 0.5), few_values_tilt=0.8),
        "variance": Shift(scale=dict.fromkeys([*NUMERIC[:10], "n14", "n16"], 1.5)),
        "categorical": Shift(categorical=True),
    }


def make_frame(rows: int, seed: int, shift: Shift) -> tuple[pl.DataFrame, np.ndarray]:
    """A seeded frame of the 20 features and the target, and the champion's predictions on it.

    Numeric columns: n00-n07 normal, n08-n11 lognormal, n12-n14 integers with many values, n15
    integers 0-4, n16 uniform, n17 a bimodal mixture with 1 % nulls. Categorical: c0 (4 levels),
    c1 (30 levels, Zipf-like, 0.5 % nulls).

    Args:
        rows: Number of rows.
        seed: Seed of the generator.
        shift: The departure from the reference distribution.

    Returns:
        The frame and the predicted probabilities, row for row.
    """
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}

    def moved(name: str, values: np.ndarray, mean: float, std: float) -> np.ndarray:
        return mean + shift.mean.get(name, 0.0) * std + shift.scale.get(name, 1.0) * (values - mean)

    for i in range(8):
        mean, std = 10.0 * i - 20.0, 1.0 + i
        columns[f"n{i:02d}"] = moved(f"n{i:02d}", rng.normal(mean, std, rows), mean, std)
    for i, sigma in zip(range(8, 12), (0.25, 0.5, 0.75, 1.0), strict=True):
        mean = float(np.exp(sigma**2 / 2))
        std = float(np.sqrt((np.exp(sigma**2) - 1) * np.exp(sigma**2)))
        columns[f"n{i:02d}"] = moved(f"n{i:02d}", rng.lognormal(0.0, sigma, rows), mean, std)
    for i, (mean, std) in zip(range(12, 15), ((100.0, 15.0), (0.0, 40.0), (1000.0, 120.0)), strict=True):
        columns[f"n{i:02d}"] = np.round(moved(f"n{i:02d}", rng.normal(mean, std, rows), mean, std))
    tilted = FEW_VALUE_PROBS * np.exp(shift.few_values_tilt * (np.arange(5) - 2))
    columns["n15"] = rng.choice(5, rows, p=tilted / tilted.sum()).astype(np.float64)
    columns["n16"] = moved("n16", rng.uniform(0.0, 1.0, rows), 0.5, float(np.sqrt(1 / 12)))
    mixture = np.where(rng.random(rows) < 0.3, rng.normal(-2.0, 0.5, rows), rng.normal(1.0, 1.0, rows))
    mixture = moved("n17", mixture, 0.1, float(np.sqrt(0.3 * 0.25 + 0.7 * 1.0 + 0.3 * 0.7 * 9.0)))
    columns["n17"] = np.where(rng.random(rows) < 0.01, np.nan, mixture)
    c0_probs = C0_SHIFTED if shift.categorical else C0_PROBS
    c1_probs = C1_PROBS * np.exp(3.0 * np.arange(30) / 29) if shift.categorical else C1_PROBS
    columns["c0"] = np.asarray(CATEGORICAL["c0"])[rng.choice(4, rows, p=c0_probs)]
    c1 = np.asarray(CATEGORICAL["c1"], dtype=object)[rng.choice(30, rows, p=c1_probs / c1_probs.sum())]
    c1[rng.random(rows) < 0.005] = None
    columns["c1"] = c1
    logit = (
        0.8 * (columns["n00"] + 20.0)
        - 0.3 * (columns["n01"] + 10.0) / 2.0
        + 0.6 * (np.log(np.clip(columns["n09"], 1e-3, None)) / 0.5)
        + 0.4 * (columns["n15"] - 2.0)
        + np.where(columns["c0"] == "a", 0.15, -0.05)
    )
    prediction = 1 / (1 + np.exp(-logit))
    columns[TARGET] = (rng.random(rows) < prediction).astype(np.int64)
    frame = pl.DataFrame(columns).with_columns(
        pl.col("n17").fill_nan(None), pl.col("c0").cast(pl.String), pl.col("c1").cast(pl.String)
    )
    return frame, prediction


def _config(rows: int, fast_above: int | None) -> ModelConfig:
    default = DriftConfig().fast_above
    chosen = fast_above if fast_above is not None else (default if rows > default else max(1000, rows // 2))
    return ModelConfig(
        task="binary",
        target=TARGET,
        features=FEATURES,
        categorical=CATEGORICAL,
        drift=DriftConfig(fast_above=chosen),
    )


def _schema() -> Schema:
    return Schema(FEATURES, CATEGORICAL, TARGET, None)


def _kinds() -> ColumnKinds:
    return ColumnKinds(list(NUMERIC), list(CATEGORICAL))


def _with_prediction(frame: pl.DataFrame, prediction: np.ndarray) -> pl.DataFrame:
    return frame.with_columns(pl.Series(PREDICTION, prediction, dtype=pl.Float64))


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """The sample ``retrainer.monitor.check`` draws for the report (same call, same seed)."""
    return frame if frame.height <= rows else frame.sample(n=rows, seed=seed)


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    _quantile_steps.cache_clear()
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def _median_timed(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    runs = [_timed(action) for _ in range(repeats)]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


def _evidently_dataset_verdict(run: EvidentlyRun) -> bool:
    """Evidently's own dataset verdict: the failed share test of DriftedColumnsCount."""
    snapshot = json.loads(run.snapshot_json)
    counts = {m["id"] for m in snapshot["metrics"] if str(m["config"].get("type", "")).endswith(":DriftedColumnsCount")}
    share_tests = [t for t in snapshot["tests"] if t["metric_config"]["metric_id"] in counts]
    if len(share_tests) != 1:
        raise RuntimeError(f"expected one DriftedColumnsCount test, found {len(share_tests)}")
    return bool(share_tests[0]["status"] == "FAIL")


@dataclass
class Outcome:
    """One scenario's measurements."""

    scenario: str
    engine: str
    check_s: float
    fast_s: float
    report_s: float
    evidently_s: float | None
    monitor: list[ColumnDrift]
    monitor_prediction: ColumnDrift | None
    monitor_dataset: bool
    monitor_share: float
    report_columns: list[ColumnDrift]
    report_dataset: bool
    evidently: list[ColumnDrift] | None = None
    evidently_prediction: ColumnDrift | None = None
    evidently_dataset: bool | None = None
    evidently_share: float | None = None

    @property
    def agreeing(self) -> int:
        """Feature columns whose monitor verdict equals Evidently's full-frame verdict."""
        assert self.evidently is not None  # noqa: S101
        return sum(m.drifted == e.drifted for m, e in zip(self.monitor, self.evidently, strict=True))

    @property
    def max_score_gap(self) -> float:
        """Largest absolute difference of the monitor's and Evidently's scores (features and prediction)."""
        assert self.evidently is not None  # noqa: S101
        pairs = list(zip(self.monitor, self.evidently, strict=True))
        if self.monitor_prediction and self.evidently_prediction:
            pairs.append((self.monitor_prediction, self.evidently_prediction))
        return max(abs((m.score or 0.0) - (e.score or 0.0)) for m, e in pairs)


def _warm_up(config: ModelConfig) -> None:
    """Pay imports and first calls (Evidently, plotly, polars' thread pool) before timing."""
    reference, reference_prediction = make_frame(2_000, 1, Shift())
    current, prediction = make_frame(2_000, 2, _shifts()["large"])
    reference = _with_prediction(reference, reference_prediction)
    check_window("bench", config, _schema(), "1", reference, Window([]), current, prediction, None)
    fast_drift(reference, _with_prediction(current, prediction), _kinds(), config.drift)


def run_scenario(
    name: str,
    reference: pl.DataFrame,
    config: ModelConfig,
    rows: int,
    repeats: int,
    with_evidently: bool,
    evidently_repeats: int = 1,
) -> Outcome:
    """Time the monitor check, its two parts and (optionally) Evidently on the full frames."""
    current, prediction = make_frame(rows, REFERENCE_SEED + 1 + SCENARIOS.index(name), _shifts()[name])
    schema, drift = _schema(), config.drift

    def check() -> CheckResult:
        return check_window("bench", config, schema, "1", reference, Window([]), current, prediction, None)

    check_s, result = _median_timed(check, repeats)
    full_current = _with_prediction(current, prediction)

    def verdicts() -> list[ColumnDrift]:
        # As retrainer.monitor.check does: the features with their settings, the prediction with the defaults.
        features = fast_drift(reference, full_current, _kinds(), drift)
        return [*features, *fast_drift(reference, full_current, ColumnKinds([PREDICTION], []), DriftConfig())]

    fast_s, _ = _median_timed(verdicts, repeats)
    shown = {c.column for c in result.report.columns} | {PREDICTION}
    shown_kinds = ColumnKinds([c for c in NUMERIC if c in shown], [c for c in CATEGORICAL if c in shown])
    report_s, _ = _median_timed(
        lambda: run_evidently(
            _sample(reference, drift.report_rows, drift.reference_seed),
            _sample(full_current, drift.report_rows, drift.reference_seed),
            shown_kinds,
            _pinned(drift, [c for c in [*result.check.columns, result.check.prediction] if c and c.column in shown]),
            (PREDICTION, "numerical"),
        ),
        repeats,
    )
    outcome = Outcome(
        scenario=name,
        engine=result.check.engine,
        check_s=check_s,
        fast_s=fast_s,
        report_s=report_s,
        evidently_s=None,
        monitor=result.check.columns,
        monitor_prediction=result.check.prediction,
        monitor_dataset=result.check.drift_detected,
        monitor_share=result.check.drift_share,
        report_columns=result.report.columns,
        report_dataset=_evidently_dataset_verdict(result.report),
    )
    if with_evidently:
        evidently_s, run = _median_timed(
            lambda: run_evidently(reference, full_current, _kinds(), drift, (PREDICTION, "numerical")),
            evidently_repeats,
        )
        outcome.evidently_s = evidently_s
        outcome.evidently = run.columns
        outcome.evidently_prediction = run.prediction
        outcome.evidently_dataset = _evidently_dataset_verdict(run)
        outcome.evidently_share = dataset_verdict(run.columns, drift.drift_share)[0]
    return outcome


def _rss_child(directory: Path, rows: int, fast_above: int | None) -> None:
    """Child mode: read the frames like the monitor does, run one check, print RSS figures as JSON."""
    started = time.perf_counter()
    reference = pl.read_parquet(directory / "reference.parquet")
    current = pl.read_parquet(directory / "current.parquet")
    prediction = current[PREDICTION].to_numpy()
    current = current.drop(PREDICTION)
    loaded_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded_s = time.perf_counter() - started
    config = _config(rows, fast_above)
    result = check_window("bench", config, _schema(), "1", reference, Window([]), current, prediction, None)
    figures = {
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loaded_mib": loaded_mib,
        "load_seconds": loaded_s,
        "check_seconds": time.perf_counter() - started - loaded_s,
        "engine": result.check.engine,
    }
    print(json.dumps(figures))


def measure_rss(
    directory: Path, reference: pl.DataFrame, name: str, rows: int, fast_above: int | None
) -> dict[str, Any]:
    """Peak RSS of a fresh process that loads the frames and runs the monitor check on scenario ``name``."""
    current, prediction = make_frame(rows, REFERENCE_SEED + 1 + SCENARIOS.index(name), _shifts()[name])
    reference.write_parquet(directory / "reference.parquet")
    _with_prediction(current, prediction).write_parquet(directory / "current.parquet")
    del current
    command = [sys.executable, __file__, "--rss-child", str(directory), "--rows", str(rows)]
    if fast_above is not None:
        command += ["--fast-above", str(fast_above)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["children_peak_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return figures


def _machine() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    python = platform.python_version()
    return f"{cpu} ({platform.machine()}), {os.cpu_count()} cores, {pages / 2**30:.0f} GiB RAM, Python {python}"


def _versions() -> str:
    names = ("polars", "evidently", "numpy", "pandas", "scipy")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names)


def _code() -> str:
    """Short SHA-256 of the retrainer modules measured, to tie the figures to the code."""
    root = Path(__file__).resolve().parents[1] / "retrainer" / "monitor"
    names = ("fast_stats.py", "evidently.py", "check.py", "page.py", "reference.py")
    return ", ".join(f"{n} {hashlib.sha256((root / n).read_bytes()).hexdigest()[:12]}" for n in names)


def _verdict(flag: bool | None) -> str:
    return "-" if flag is None else ("drift" if flag else "no drift")


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _cell(monitor: ColumnDrift, evidently: ColumnDrift | None) -> str:
    mark = "*" if monitor.drifted else ""
    if evidently is None:
        return f"{monitor.score:.4f}{mark}"
    flag = "" if monitor.drifted == evidently.drifted else " **DISAGREE**"
    return f"{monitor.score:.4f}{mark} / {evidently.score:.4f}{'*' if evidently.drifted else ''}{flag}"


def render(
    args: argparse.Namespace, config: ModelConfig, outcomes: list[Outcome], rss: dict[str, Any], code: str
) -> str:
    """The results as markdown: settings, per-scenario table, goals, per-column scores."""
    compared = [o for o in outcomes if o.evidently is not None]
    lines = [
        "# Drift check: monitor vs Evidently DataDriftPreset on the full frames",
        "",
        f"machine: {_machine()}",
        f"packages: {_versions()}",
        f"code: {code}" + ("" if code == _code() else f" (CHANGED during the run, now: {_code()})"),
        f"command: {' '.join([sys.executable, *sys.argv])}  (cwd {Path.cwd()})",
        f"data: {args.rows:,} reference rows and {args.rows:,} current rows per scenario, 20 features "
        f"(18 numeric, 2 categorical) + champion prediction; drift_share {config.drift.drift_share}, "
        f"fast_above {config.drift.fast_above:,}, report_rows {config.drift.report_rows:,}, "
        f"report_columns {getattr(config.drift, 'report_columns', 'all')}",
        f"timing: median of {args.repeats} run(s) for the monitor check, fast verdicts and sampled report; "
        f"Evidently full median of {args.evidently_repeats}; imports and first calls warmed up beforehand; "
        "quantile-step cache cleared before each timed run.",
        "",
        "| scenario | engine | monitor check s | fast verdicts s | sampled report s | Evidently full s | "
        "speed-up | dataset verdict monitor / Evidently (share) | per-column agreement | max abs score gap | "
        "prediction verdict monitor / Evidently | HTML report: columns agreeing with monitor | "
        "HTML report: dataset verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        monitor_by_name = {m.column: m for m in o.monitor}
        report_agree = sum(monitor_by_name[r.column].drifted == r.drifted for r in o.report_columns)
        if o.evidently is not None and o.evidently_s is not None:
            speedup = f"{o.evidently_s / o.check_s:.1f}x"
            dataset = (
                f"{_verdict(o.monitor_dataset)} ({o.monitor_share:.2f}) / "
                f"{_verdict(o.evidently_dataset)} ({o.evidently_share:.2f})"
            )
            agreement = f"{o.agreeing}/{len(o.monitor)}"
            gap = f"{o.max_score_gap:.2e}"
            evidently_prediction = o.evidently_prediction.drifted if o.evidently_prediction else None
            evidently_s = f"{o.evidently_s:.1f}"
        else:
            speedup, agreement, gap, evidently_s = "-", "-", "-", "not run"
            dataset = f"{_verdict(o.monitor_dataset)} ({o.monitor_share:.2f}) / -"
            evidently_prediction = None
        monitor_prediction = o.monitor_prediction.drifted if o.monitor_prediction else None
        lines.append(
            f"| {o.scenario} | {o.engine} | {o.check_s:.2f} | {o.fast_s:.2f} | {o.report_s:.2f} | {evidently_s} | "
            f"{speedup} | {dataset} | {agreement} | {gap} | "
            f"{_verdict(monitor_prediction)} / {_verdict(evidently_prediction)} | "
            f"{report_agree}/{len(o.report_columns)} | {_verdict(o.report_dataset)} |"
        )
    lines.append("")
    if compared:
        ratios = [o.evidently_s / o.check_s for o in compared if o.evidently_s is not None]
        total_ratio = sum(o.evidently_s or 0.0 for o in compared) / sum(o.check_s for o in compared)
        same_dataset = all(o.monitor_dataset == o.evidently_dataset for o in compared)
        agreeing = sum(o.agreeing for o in compared)
        total = sum(len(o.monitor) for o in compared)
        scenarios = ", ".join(o.scenario for o in compared)
        full_set = {o.scenario for o in compared} == set(SCENARIOS)
        lines += [
            f"Compared with Evidently on: {scenarios}{'' if full_set else ' (NOT the full scenario set)'}.",
            "",
            "| goal | measured | result |",
            "|---|---|---|",
            f"| monitor check >= {SPEEDUP_GOAL:.0f}x faster than Evidently full (every scenario) | "
            f"min {min(ratios):.1f}x, max {max(ratios):.1f}x, total time ratio {total_ratio:.1f}x | "
            f"{_pass(min(ratios) >= SPEEDUP_GOAL)} |",
            f"| same dataset verdict in every scenario | "
            f"{sum(o.monitor_dataset == o.evidently_dataset for o in compared)}/{len(compared)} scenarios | "
            f"{_pass(same_dataset)} |",
            f"| per-column verdict agreement >= {AGREEMENT_GOAL:.0%} overall | "
            f"{agreeing}/{total} = {agreeing / total:.1%} | {_pass(agreeing / total >= AGREEMENT_GOAL)} |",
        ]
    else:
        lines += ["Evidently was not run on the full frames: no comparison.", "", "| goal | measured | result |"]
        lines.append("|---|---|---|")
    peak_gib = rss["peak_mib"] / 1024
    lines += [
        f"| monitor check peak RSS <= {RSS_GOAL_GIB} GiB | {peak_gib:.2f} GiB "
        f"(scenario {args.rss_scenario}, engine {rss['engine']}) | {_pass(peak_gib <= RSS_GOAL_GIB)} |",
        "",
        f"Peak RSS: a fresh process (`{Path(__file__).name} --rss-child`) that imports retrainer, reads the "
        f"reference and current frames from Parquet ({rss['loaded_mib']:.0f} MiB peak after reading) and runs "
        f"check_window once (reading {rss['load_seconds']:.1f} s; cold check {rss['check_seconds']:.1f} s, i.e. "
        "including Evidently's lazy import and first-call costs that the timed runs above exclude): "
        f"{rss['peak_mib']:.0f} MiB (getrusage of the child: {rss['children_peak_mib']:.0f} MiB). "
        f"This process (data generation, all checks, all Evidently full runs): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, an upper bound of "
        "Evidently's own peak.",
        "",
        "Columns: the monitor check is `check_window` (fast verdicts on the full frames + Evidently HTML report "
        "on a seeded sample per side + rules + labelled performance); fast verdicts is `fast_drift` alone; "
        "sampled report is `run_evidently` on the samples and columns the check's report draws; Evidently full "
        "is `run_evidently` (DataDriftPreset + ValueDrift of the prediction, HTML and JSON) on the full frames. "
        "Speed-up = Evidently full / monitor check. HTML report columns: the per-column verdicts the check's "
        "own (sampled) Evidently report shows, compared with the monitor's verdicts on the same columns; HTML "
        "report dataset verdict: the DriftedColumnsCount test of that report (over the columns it draws).",
        "",
        "## Scores per column (monitor / Evidently full; * = drift, threshold 0.1)",
        "",
        "| column | " + " | ".join(o.scenario for o in outcomes) + " |",
        "|---|" + "---|" * len(outcomes),
    ]
    for index, column in enumerate([*FEATURES, PREDICTION]):
        cells = []
        for o in outcomes:
            if column == PREDICTION:
                monitor, evidently = o.monitor_prediction, o.evidently_prediction
            else:
                monitor, evidently = o.monitor[index], (o.evidently[index] if o.evidently else None)
            cells.append(_cell(monitor, evidently) if monitor else "-")
        method = o.monitor[index].method if column != PREDICTION else "wasserstein"
        lines.append(f"| {column} ({method}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Generate the data, run every scenario, measure peak RSS, print and save the results."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per frame (reference and current)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated scenarios to run")
    parser.add_argument(
        "--evidently-scenarios",
        default=",".join(SCENARIOS),
        help="comma-separated scenarios to also run Evidently on the full frames for ('' for none)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the monitor check (median)")
    parser.add_argument("--evidently-repeats", type=int, default=1, help="timed runs of Evidently (median)")
    parser.add_argument("--rss-scenario", default="large", choices=SCENARIOS)
    parser.add_argument(
        "--fast-above",
        type=int,
        default=None,
        help="drift.fast_above (default: the config default, lowered to rows/2 when rows do not exceed it)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out/drift"))
    parser.add_argument("--rss-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        _rss_child(args.rss_child, args.rows, args.fast_above)
        return
    scenarios = [s for s in args.scenarios.split(",") if s]
    with_evidently = {s for s in args.evidently_scenarios.split(",") if s}
    unknown = (set(scenarios) | with_evidently) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    code = _code()
    config = _config(args.rows, args.fast_above)
    reference_frame, reference_prediction = make_frame(args.rows, REFERENCE_SEED, Shift())
    reference = _with_prediction(reference_frame, reference_prediction)
    del reference_frame
    with tempfile.TemporaryDirectory(dir=out) as scratch:
        rss = measure_rss(Path(scratch), reference, args.rss_scenario, args.rows, args.fast_above)
    print(f"peak RSS of the monitor check: {rss['peak_mib']:.0f} MiB", flush=True)
    _warm_up(config)
    outcomes = []
    for name in scenarios:
        outcome = run_scenario(
            name, reference, config, args.rows, args.repeats, name in with_evidently, args.evidently_repeats
        )
        evidently = f"{outcome.evidently_s:.1f} s" if outcome.evidently_s is not None else "not run"
        print(f"{name}: check {outcome.check_s:.2f} s, fast {outcome.fast_s:.2f} s, Evidently {evidently}", flush=True)
        outcomes.append(outcome)
    raw = {"args": {k: str(v) for k, v in vars(args).items()}, "rss": rss, "outcomes": [asdict(o) for o in outcomes]}
    (out / "outcomes.json").write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    table = render(args, config, outcomes, rss, code)
    (out / "RESULTS.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
