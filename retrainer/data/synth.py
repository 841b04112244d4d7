"""Seeded synthetic churn data for the demo, the tests and the benchmarks.

Batches share one schema: the float features ``tenure``, ``monthly_charges``, ``f00``…, the integer
``age``, the nullable integer ``support_calls`` (about 5 % missing), the boolean ``autopay``, the
categorical ``plan`` and ``region``, an ``event_time`` and the binary label ``churned``. The integer,
nullable and boolean columns are there because real tables have them: a model must train on them and
serve them as users have them. ``shift`` moves both the feature distributions and the relation
between features and label (concept drift), so a model trained on shifted data beats one trained
before the shift.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

PLANS = ["basic", "pro", "enterprise"]
REGIONS = ["north", "south", "east", "west"]
START = datetime(2026, 1, 1)


def make_batch(
    rows: int,
    seed: int,
    *,
    day: int = 0,
    shift: float = 0.0,
    extra_numeric: int = 4,
) -> pl.DataFrame:
    """Return one labelled batch.

    Args:
        rows: Number of rows.
        seed: Seed of every random draw; the same arguments give the same frame.
        day: Day offset of the batch's ``event_time`` values from 2026-01-01.
        shift: 0 for the original population; 1 for a fully shifted one.
        extra_numeric: Number of extra numeric columns ``f00``, ``f01``, … (16 gives 18 numeric).
    """
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(2.0, 12.0, rows) * (1 + 0.5 * shift)
    charges = rng.normal(70 + 15 * shift, 20, rows)
    plan_p = np.array([0.5, 0.35, 0.15]) * (1 - shift) + np.array([0.2, 0.3, 0.5]) * shift
    plan = rng.choice(len(PLANS), rows, p=plan_p)
    region = rng.choice(len(REGIONS), rows)
    extra = rng.normal(0.3 * shift, 1.0, (rows, extra_numeric))
    logit = _churn_logit(tenure, charges, plan, region, extra, shift)
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    seconds = np.sort(rng.integers(0, 86_400, rows))
    times = np.datetime64(START, "us") + (day * 86_400 + seconds).astype("timedelta64[s]")
    columns: dict[str, object] = {
        "event_time": times,
        "tenure": tenure,
        "monthly_charges": charges,
        "plan": np.array(PLANS)[plan],
        "region": np.array(REGIONS)[region],
    }
    columns.update(_typed_columns(churned, seed, shift))
    columns.update({f"f{i:02d}": extra[:, i] for i in range(extra_numeric)})
    columns["churned"] = churned
    return pl.DataFrame(columns)


def _typed_columns(churned: np.ndarray, seed: int, shift: float) -> dict[str, pl.Series]:
    """Integer, nullable integer and boolean features, drawn apart so the other columns stay as they were."""
    rng = np.random.default_rng([seed, 1])
    rows = len(churned)
    age = np.clip(rng.normal(42 + 6 * shift, 12, rows), 18, 90).astype(np.int64)
    calls = rng.poisson(0.8 + 1.2 * churned + 0.5 * shift).astype(np.int64)
    autopay = rng.random(rows) < 0.65 - 0.25 * churned - 0.15 * shift
    return {
        "age": pl.Series(age, dtype=pl.Int64),
        "support_calls": pl.Series(calls, dtype=pl.Int64).set(pl.Series(rng.random(rows) < 0.05), None),
        "autopay": pl.Series(autopay, dtype=pl.Boolean),
    }


def _churn_logit(
    tenure: np.ndarray,
    charges: np.ndarray,
    plan: np.ndarray,
    region: np.ndarray,
    extra: np.ndarray,
    shift: float,
) -> np.ndarray:
    plan_effect = np.array([0.6, 0.0, -0.8])[plan] * (1 - 2 * shift)
    region_effect = np.array([0.0, 0.3, -0.3, 0.5])[region] * shift
    signal = extra[:, 0] - 0.5 * extra[:, 1] if extra.shape[1] >= 2 else np.zeros(len(tenure))
    charges_effect = 0.03 * (charges - 70) * (1 - 2 * shift)
    logit: np.ndarray = (
        -0.04 * (tenure - 24) + charges_effect + plan_effect + region_effect + 0.8 * signal * (1 - shift)
    )
    return logit


def demo_config() -> dict[str, object]:
    """The embedded model config ``make demo`` uses (a dict as it would be read from YAML)."""
    return {
        "models": {
            "churn": {
                "task": "binary",
                "target": "churned",
                "categorical": {"plan": PLANS, "region": REGIONS},
                "time_column": "event_time",
                "id_column": "request_id",
                "labels": {"time_column": "label_time"},
                "slices": ["plan"],
                "lightgbm": {"learning_rate": 0.05, "num_leaves": 31, "n_estimators": 400},
                "window": {"batches": 3},
                "holdout": {"batches": 1},
                "promotion": {
                    "metric": "roc_auc",
                    "min_improvement": 0.0,
                    "confidence": 0.95,
                    "guardrails": {"log_loss": 0.01},
                    "floors": {"roc_auc": 0.6},
                    "slice_tolerance": 0.02,
                    "min_slice_rows": 200,
                },
                "drift": {
                    "drift_share": 0.3,
                    "window": {"mode": "since_last_check", "batches": 2},
                    "incident": {"k": 1, "n": 1, "cooldown_seconds": 0},
                },
            }
        }
    }
