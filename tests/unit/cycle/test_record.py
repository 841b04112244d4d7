"""The decision record rendered for the Prefect UI."""

from __future__ import annotations

import numpy as np

from retrainer.config import PromotionPolicy
from retrainer.cycle.plan import Trigger
from retrainer.cycle.record import decision_markdown
from retrainer.judge.policy import HoldoutScores, judge


def test_decision_record_shows_rules_champion_vs_challenger_slices_and_lineage() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    champion = rng.random(400)
    challenger = np.clip(champion + 0.3 * y, 0, 1)
    scores = HoldoutScores(y, challenger, champion, {"plan": np.array(["basic", "pro"] * 200)})
    judgement = judge("binary", "roc_auc", scores, PromotionPolicy(min_slice_rows=50))
    markdown = decision_markdown("churn v2: Promoted", judgement, {"training_batches": ["b1"]}, {"run": "runs:/1"})
    lines = markdown.splitlines()
    assert lines[:3] == ["# Retrain decision", "", "**churn v2: Promoted**"]
    assert "| metric | champion | challenger | improvement | lower bound | bound by |" in lines
    primary = next(line for line in lines if line.startswith("| **roc_auc**"))
    assert primary.count("|") == 7 and "+0." in primary.split("|")[-3] and primary.endswith("| bootstrap |")
    assert any(line.startswith("| pass | `slice:plan=basic` |") for line in lines)
    assert "| training_batches | `['b1']` |" in lines
    assert "- [run](runs:/1)" in lines


def test_first_model_record_has_no_champion_columns_filled() -> None:
    y = np.array([0, 1] * 100)
    judgement = judge("binary", "roc_auc", HoldoutScores(y, np.where(y == 1, 0.9, 0.1)), PromotionPolicy())
    markdown = decision_markdown("churn v1: Promoted", judgement, {}, {})
    roc_row = next(line for line in markdown.splitlines() if line.startswith("| **roc_auc**"))
    assert roc_row == "| **roc_auc** | — | 1.0000 | — | — | — |"
    assert "Slices" not in markdown and "Links" not in markdown


def test_decision_record_names_the_triggering_event_and_its_drift_evidence() -> None:
    payload = {
        "incident_key": "churn:v1:check-1",
        "drift_share": 0.75,
        "report_uri": "file:///m/report.html",
        "batch_ids": ["b9"],
        "top_columns": [{"column": "tenure", "method": "wasserstein", "score": 0.42}],
    }
    trigger = Trigger("drift", "evt-1", "churn:v1:check-1", "retrainer.drift.detected", payload, "run-1", "me@host")
    lines = decision_markdown("churn v2: Rejected", None, {}, {}, trigger).splitlines()
    assert "| event | `retrainer.drift.detected` |" in lines and "| event id | `evt-1` |" in lines
    assert "| incident | `churn:v1:check-1` |" in lines
    assert "- drift share 75% of features" in lines and "- [Evidently report](file:///m/report.html)" in lines
    assert "| tenure | wasserstein | 0.4200 |" in lines
    manual = decision_markdown("churn v2: Rejected", None, {}, {}, Trigger("manual")).splitlines()
    assert "| event | — |" in manual and not any("Drift evidence" in line for line in manual)
