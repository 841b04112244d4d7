"""Refitting the judged recipe on the window plus the holdout, and the check it must pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrainer.cycle.plan import load_frames, plan_split
from retrainer.cycle.refit import check_refit, refit_recipe, refit_wanted
from retrainer.cycle.windows import ChosenChallenger, WindowChoice, WindowScore
from retrainer.judge.policy import Judgement
from retrainer.model.training import train
from tests.unit.cycle.test_windows import ROWS, churn_config, stored_days


def test_a_refit_must_fit_the_holdout_at_least_as_well_as_the_judged_model_predicted_it() -> None:
    y = np.array([0, 1, 1, 0, 1, 0])
    judged = np.array([0.4, 0.6, 0.4, 0.3, 0.7, 0.6])  # 4 of 6 right
    better = np.array([0.2, 0.8, 0.7, 0.3, 0.9, 0.4])  # 6 of 6
    worse = np.array([0.6, 0.4, 0.4, 0.3, 0.7, 0.6])  # 3 of 6

    passed = check_refit("binary", "accuracy", y, judged, better, "3", 600)
    failed = check_refit("binary", "accuracy", y, judged, worse, "3", 600)
    broken = check_refit("binary", "accuracy", y, judged, np.full(6, np.nan), "3", 600)

    assert passed.passed and passed.agreement == 4 / 6 and "v3" in passed.note and "never saw" in passed.note
    assert not failed.passed and "the judged v3 is promoted" in failed.note
    assert not broken.passed
    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert check_refit("regression", "rmse", values, values + 0.5, values + 0.1, "1", 4).passed


def _judgement(verdict: str) -> Judgement:
    return Judgement(verdict, "roc_auc", False, 100, [], [], [], [])  # type: ignore[arg-type]


def test_only_an_enforced_promotion_with_refit_on_is_refit() -> None:
    config = churn_config()
    assert refit_wanted(config, _judgement("promote"))
    assert not refit_wanted(config, _judgement("reject")) and not refit_wanted(config, None)
    assert not refit_wanted(churn_config(promotion={"mode": "dry_run"}), _judgement("promote"))
    assert not refit_wanted(churn_config(promotion={"refit": False}), _judgement("promote"))


def test_the_refit_trains_on_the_window_and_the_holdout_for_the_judged_rounds(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 2})
    store = stored_days(tmp_path, config, 3)
    frames = load_frames(store, plan_split(store.manifest(), config), config)
    window = frames.windows[0]
    trained = train(window.fit, window.valid, frames.spec, config.lightgbm)
    choice = WindowChoice(0, [WindowScore(window.name, window.rows, 0.8, None, None, True)], 0.95, 0.95)
    chosen = ChosenChallenger(window, trained, choice)

    refit = refit_recipe(config, frames, chosen, "1")
    again = refit_recipe(config, frames, chosen, "1")

    assert refit.rows.height == 3 * ROWS
    assert refit.trained.best_iteration == trained.best_iteration
    assert np.array_equal(refit.trained.predict(frames.holdout), again.trained.predict(frames.holdout))
    assert refit.check.passed, refit.check.note
