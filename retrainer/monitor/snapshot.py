"""Reading Evidently's snapshot JSON: the one place that knows its layout, without importing Evidently.

The monitor's Evidently adapter reads its own reports through it, and the webhook reads the
snapshots outside systems send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SnapshotColumn:
    """One ``ValueDrift`` result of an Evidently snapshot (method by its display name)."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


def snapshot_columns(snapshot: dict[str, Any]) -> list[SnapshotColumn]:
    """Per-column drift results of an Evidently snapshot: the score from the metric, the verdict from its test.

    Raises:
        ValueError: the document is not an Evidently snapshot with column drift results.
    """
    try:
        failed = {
            test["metric_config"]["metric_id"]
            for test in snapshot.get("tests", [])
            if test.get("id") == "drift" and test.get("status") == "FAIL"
        }
        found = []
        for metric in snapshot["metrics"]:
            settings = metric["config"]
            if str(settings.get("type", "")).endswith(":ValueDrift"):
                found.append(
                    SnapshotColumn(
                        column=str(settings["column"]),
                        method=str(settings["method"]),
                        score=float(metric["value"]),
                        threshold=float(settings["threshold"]),
                        drifted=metric["id"] in failed,
                    )
                )
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
        raise ValueError(f"not an Evidently snapshot: {exc!r}"[:300]) from None
    return found


def dataset_share(snapshot: dict[str, Any]) -> tuple[float, float]:
    """The drifted share of a ``DataDriftPreset`` snapshot and the ``drift_share`` it was judged against.

    Raises:
        ValueError: the document is not a data drift snapshot (no ``DriftedColumnsCount`` result).
    """
    try:
        [count] = [m for m in snapshot["metrics"] if str(m["config"]["type"]).endswith(":DriftedColumnsCount")][:1]
        return float(count["value"]["share"]), float(count["config"]["drift_share"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"not an Evidently data drift snapshot (need DriftedColumnsCount): {exc!r}"[:300]) from None
