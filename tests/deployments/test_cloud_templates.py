"""The Prefect Cloud webhook templates make the same events as the self-hosted receiver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from retrainer.events import Event
from retrainer.inbound.messages import DataNotice, DriftAlert, data_event, drift_event
from retrainer.inbound.sender import data_notice, drift_alert

CLOUD = Path(__file__).resolve().parents[2] / "deployments" / "cloud"


def _render(template: str, message: DriftAlert | DataNotice) -> dict[str, Any]:
    # Prefect's own template environment (the sandbox and the tojson filter webhooks use).
    from prefect.server.utilities.user_templates import render_user_template_sync

    body = json.loads(message.model_dump_json(exclude_none=True))  # what `retrainer send` posts
    rendered = render_user_template_sync((CLOUD / template).read_text(encoding="utf-8"), {"body": body})
    document: dict[str, Any] = json.loads(rendered)
    return document


def _shape(event: Event) -> dict[str, Any]:
    return {"event": event.name, "resource": event.resource, "related": event.related, "payload": event.payload}


@pytest.mark.parametrize(
    "alert",
    [
        drift_alert("churn", source="nightly", drift_share=0.6, columns=["tenure", "plan"]),
        drift_alert("churn", source="external", drift_share=1.0, alert_id="run-7", report_uri="s3://r/7.html"),
        drift_alert("fraud", source="ci", drift_share=0.55, columns=[f"f{n}" for n in range(9)]),
        DriftAlert(
            model="churn",
            alert_id="a1",
            drift_share=0.5,
            drifted_columns=[{"column": "x", "score": 0.2, "method": "psi"}, "y"],
        ),
    ],
)
def test_drift_template_renders_the_receivers_event(alert: DriftAlert) -> None:
    expected = drift_event(alert)
    assert expected is not None
    assert _render("drift.json.j2", alert) == _shape(expected)


@pytest.mark.parametrize(
    "notice",
    [
        data_notice("churn", ["/landing/a.parquet", "/landing/b.csv"], source="airflow"),
        data_notice("churn", ["/landing/a.parquet"], source="external", notice_id="dag-run-3"),
    ],
)
def test_data_template_renders_the_receivers_event(notice: DataNotice) -> None:
    assert _render("data.json.j2", notice) == _shape(data_event(notice))
