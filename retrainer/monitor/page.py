"""What retrainer writes into the Evidently page: the check's verdict, opening the page's body.

Evidently's page counts only the features and rows it was given; on big windows that is a sample
of the most drifted features, so its own dataset verdict can differ from the check's. The opening
block states the check's verdict and what the report below it covers.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from retrainer.config import DriftConfig
from retrainer.monitor.evidently import EvidentlyRun
from retrainer.monitor.fast_stats import ColumnDrift

if TYPE_CHECKING:
    # Only the type: the check builds its page with this module, so importing it at run time would loop.
    from retrainer.monitor.check import DriftCheck

_BANNER_STYLE = (
    "font-family:sans-serif;font-size:15px;line-height:1.5;margin:16px;padding:12px 16px;"
    "border-left:6px solid #4b5563;background:#f3f4f6;color:#111827"
)


def opened_report(check: DriftCheck, report: EvidentlyRun, drift: DriftConfig) -> EvidentlyRun:
    """``report`` with its HTML opening on the check's verdict (:func:`verdict_lines`)."""
    return replace(report, html=with_banner(report.html, verdict_lines(check, report, drift)))


def verdict_lines(check: DriftCheck, report: EvidentlyRun, drift: DriftConfig) -> list[str]:
    """The lines shown above the Evidently report: retrainer's verdict, and what the report covers.

    Args:
        check: The check the report illustrates.
        report: The Evidently report drawn for it (its columns and row counts).
        drift: The drift settings the check used.

    Returns:
        The identity of the check, its dataset verdict, the prediction's verdict when measured,
        a sentence on sampling when the report saw less than the check, and the features drifted
        by rule whatever their score.
    """
    drifted = sum(c.drifted for c in check.columns)
    verdict = "Dataset drift detected" if check.drift_detected else "No dataset drift"
    lines = [
        f"retrainer {check.check_id}: {check.model}, champion v{check.champion_version}, "
        f"batches {', '.join(check.batch_ids)}",
        f"{verdict}: {drifted} of {len(check.columns)} features drifted "
        f"(share {check.drift_share:.2f}; dataset drift needs {drift.drift_share:.2f}).",
    ]
    if not check.labelled:
        lines.append("The window is unlabelled inference traffic: drift only, performance waits for its labels.")
    if check.prediction is not None:
        moved = "drifted" if check.prediction.drifted else "did not drift"
        lines.append(f"The champion's predictions {moved} ({_scored(check.prediction)}).")
    if check.engine == "polars":
        lines.append(
            f"Every feature was scored on all {check.reference_rows:,} reference and {check.current_rows:,} "
            f"window rows. This report draws the {len(report.columns)} most drifted of {len(check.columns)} "
            f"features on seeded samples of {report.reference_rows:,} and {report.current_rows:,} rows, "
            "so its own counts and dataset verdict cover only those."
        )
    elif (report.reference_rows, report.current_rows) != (check.reference_rows, check.current_rows):
        lines.append(
            f"Scores come from this report, drawn on seeded samples of {report.reference_rows:,} reference "
            f"and {report.current_rows:,} window rows (of {check.reference_rows:,} and {check.current_rows:,})."
        )
    ruled = [f"{c.column} ({c.note})" for c in check.columns if c.note]
    if ruled:
        lines.append("Drifted by rule, whatever the score: " + "; ".join(ruled) + ".")
    return lines


def with_banner(report_html: str, lines: list[str]) -> str:
    """``report_html`` with ``lines`` shown as an escaped text block above Evidently's own content.

    The block goes right after the ``<body>`` tag of Evidently's standalone page (at the very start
    when there is none), so it is the first thing a reader sees.
    """
    paragraphs = "".join(f"<p style='margin:4px 0'>{html.escape(line)}</p>" for line in lines)
    banner = f"<div id='retrainer-verdict' style='{_BANNER_STYLE}'>{paragraphs}</div>"
    body = re.search(r"<body[^>]*>", report_html, flags=re.IGNORECASE)
    at = body.end() if body else 0
    return report_html[:at] + banner + report_html[at:]


def _scored(column: ColumnDrift) -> str:
    score = "no score" if column.score is None else f"{column.score:.4g}"
    return f"{column.method} {score}, threshold {column.threshold:g}"
