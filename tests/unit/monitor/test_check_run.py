"""A check of a stored window against a registered champion, and its MLflow monitoring run (no Prefect)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from retrainer.judge.metrics import point_metric
from retrainer.monitor.check import CheckResult, DriftCheck, check_champion, check_metrics
from retrainer.monitor.fast_stats import ColumnDrift
from retrainer.monitor.performance import Performance
from retrainer.monitor.record import log_check
from retrainer.monitor.reference import champion_reference
from retrainer.monitor.window import Window, read_window
from tests.unit.monitor.conftest import HOLDOUT_AUC, ROWS, Champion

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _drift_check(prediction: ColumnDrift | None, performance: Performance | None) -> DriftCheck:
    columns = [
        ColumnDrift("tenure", "numerical", "wasserstein", 0.42, 0.1, True),
        ColumnDrift("age", "numerical", "wasserstein", 0.03, 0.1, False),
        ColumnDrift("region", "categorical", "all_null", None, 0.1, True, "no valid value in the window"),
    ]
    return DriftCheck(
        model="churn",
        check_id="check-1",
        checked_at=NOW,
        champion_version="1",
        batch_ids=["b1"],
        reference_rows=100,
        current_rows=50,
        engine="evidently",
        columns=columns,
        drift_share=2 / 3,
        drift_detected=True,
        prediction=prediction,
        performance=performance,
    )


def test_check_metrics_score_every_scored_column_the_prediction_and_the_window_metric() -> None:
    prediction = ColumnDrift("champion_prediction", "numerical", "wasserstein", 0.2, 0.1, True)
    performance = Performance("roc_auc", 0.61, 0.8, -0.19, 0.05, True, 50, 200)
    assert check_metrics(_drift_check(prediction, performance)) == {
        "drift_share": pytest.approx(2 / 3),
        "drifted_columns": 2.0,
        "drift_score.tenure": 0.42,
        "drift_score.age": 0.03,
        "prediction_drift_score": 0.2,
        "window_roc_auc": 0.61,
    }


def test_check_metrics_leave_out_what_was_not_measured() -> None:
    unscored = ColumnDrift("champion_prediction", "numerical", "all_null", None, 0.1, True, "no valid value")
    for prediction in (None, unscored):
        assert set(check_metrics(_drift_check(prediction, None))) == {
            "drift_share",
            "drifted_columns",
            "drift_score.tenure",
            "drift_score.age",
        }


@pytest.fixture
def checked(champion: Champion) -> CheckResult:
    """The champion's shifted newer batch checked against the reference rebuilt for it."""
    reference = champion_reference(champion.store, champion.registry, champion.config, champion.version)
    window = Window([champion.newer])
    return check_champion(champion.store, champion.registry, champion.config, champion.version, reference, window, NOW)


def test_a_stored_window_is_checked_against_the_champion(champion: Champion, checked: CheckResult) -> None:
    check = checked.check
    assert (check.model, check.champion_version, check.checked_at) == ("churn", champion.version.version, NOW)
    assert check.batch_ids == [champion.newer.batch_id]
    assert (check.reference_rows, check.current_rows) == (3000, ROWS)
    assert sorted(c.column for c in check.columns) == sorted(champion.schema.features)
    assert check.drift_detected is True  # the batch is shifted by 0.8
    assert check.prediction is not None and check.prediction.score is not None
    # Labelled performance: the served champion's AUC on the window, against the holdout figure of its tags.
    rows = read_window(champion.store, Window([champion.newer]), champion.schema)
    auc = point_metric("binary", "roc_auc", rows["churned"].to_numpy(), champion.trained.predict(rows))
    performance = check.performance
    assert performance is not None
    assert performance.window == pytest.approx(auc, abs=1e-12)
    assert performance.holdout == HOLDOUT_AUC
    assert performance.change == pytest.approx(auc - HOLDOUT_AUC)
    assert performance.degraded is True and performance.rows == ROWS


def test_a_check_is_recorded_as_a_monitoring_run(champion: Champion, checked: CheckResult) -> None:
    check, registry = checked.check, champion.registry
    report_uri = log_check(registry, checked)

    (run,) = registry.client.search_runs([registry.experiment_id("churn", "monitoring")])
    assert run.info.run_name == check.check_id and run.info.status == "FINISHED"
    assert run.data.params == {"engine": check.engine, "reference_rows": "3000", "current_rows": str(ROWS)}
    assert {k: v for k, v in run.data.tags.items() if k.startswith("retrainer.")} == {
        "retrainer.champion_version": check.champion_version,
        "retrainer.batch_ids": champion.newer.batch_id,
        "retrainer.check_id": check.check_id,
        "retrainer.window_kind": "labelled",
    }
    assert run.data.metrics == pytest.approx(check_metrics(check))
    assert {"drift_share", "prediction_drift_score", "window_roc_auc"} <= set(run.data.metrics)

    artifacts = {a.path for a in registry.client.list_artifacts(run.info.run_id, "drift")}
    assert artifacts == {"drift/report.html", "drift/report.json", "drift/summary.json"}
    assert report_uri.endswith("/drift/report.html")
    assert Path(unquote(urlparse(report_uri).path)).read_text(encoding="utf-8") == checked.report.html
    summary = registry.download(run.info.run_id, "drift/summary.json", Path(champion.store.blobs.url).parent / "dl")
    assert json.loads(summary.read_text(encoding="utf-8")) == json.loads(json.dumps(check.summary()))
