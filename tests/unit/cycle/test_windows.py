"""Candidate training windows: the cut of the newest batch, the windows' rows, and the corrected choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from retrainer.config import ModelConfig, PromotionPolicy, parse_project
from retrainer.cycle.plan import DataSplit, holdout_batches_seen, load_frames, plan_split
from retrainer.cycle.windows import EarlierChampion, choose_window, corrected_policy
from retrainer.data.ingest import ingest_file
from retrainer.data.store import BatchRecord, BatchStore, split_latest
from retrainer.data.synth import demo_config, make_batch
from retrainer.errors import ConfigError
from retrainer.model.registry import VersionInfo
from retrainer.storage import Storage

ROWS = 400


def churn_config(**sections: Any) -> ModelConfig:
    """The demo churn model with ``sections`` replaced."""
    raw: dict[str, Any] = demo_config()
    raw["models"]["churn"].update(sections)
    return parse_project(raw, "test").model("churn")


def stored_days(tmp_path: Path, config: ModelConfig, days: int) -> BatchStore:
    """A churn store holding ``days`` daily batches, the rows of each written in shuffled time order."""
    store = BatchStore(Storage.local(tmp_path / "data"), "churn")
    for day in range(days):
        path = tmp_path / f"day{day}.parquet"
        make_batch(ROWS, seed=day, day=day).sample(fraction=1.0, shuffle=True, seed=day).write_parquet(path)
        assert ingest_file(store, config, path).error is None
    return store


# --------------------------------------------------------------------------- the windows' rows


def test_the_holdout_is_the_latest_rows_of_the_newest_batch_and_no_window_holds_one(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 3}, holdout={"newest_share": 0.4})
    store = stored_days(tmp_path, config, 5)

    split = plan_split(store.manifest(), config)
    frames = load_frames(store, split, config)

    newest = store.read(split.holdout, ["event_time"])["event_time"].sort()
    cut = newest[ROWS - round(ROWS * 0.4)]
    assert frames.holdout.height == round(ROWS * 0.4)
    assert frames.holdout["event_time"].min() >= cut
    assert [w.name for w in frames.windows] == ["newest+3", "newest"]
    held = set(frames.holdout["event_time"].to_list())
    for window in frames.windows:
        rows = pl.concat([window.fit, window.valid])
        assert held.isdisjoint(rows["event_time"].to_list()), window.name
    newest_only = frames.windows[1]
    assert newest_only.rows == ROWS - frames.holdout.height
    assert frames.windows[0].rows == 3 * ROWS + newest_only.rows


def test_whole_batches_held_out_leave_no_newest_only_window(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 2}, holdout={"newest_share": 1.0})
    store = stored_days(tmp_path, config, 4)

    frames = load_frames(store, plan_split(store.manifest(), config), config)

    assert [w.name for w in frames.windows] == ["newest+2"]
    assert frames.holdout.height == ROWS and frames.windows[0].rows == 2 * ROWS


def test_candidates_are_capped_by_the_batches_there_are(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 5, "candidates": [0, 2, 5]})
    store = stored_days(tmp_path, config, 3)

    frames = load_frames(store, plan_split(store.manifest(), config), config)

    assert [w.name for w in frames.windows] == ["newest+2", "newest"]


def test_a_newest_batch_too_small_to_halve_is_held_out_whole(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 2}, promotion={"metric": "roc_auc", "min_holdout_rows": ROWS // 2 + 1})
    store = stored_days(tmp_path, config, 3)

    split = plan_split(store.manifest(), config)
    frames = load_frames(store, split, config)

    assert split.newest_share == 1.0 and split.lineage()["holdout_batches_earlier_rows_train"] is False
    assert frames.holdout.height == ROWS and [w.name for w in frames.windows] == ["newest+2"]


@pytest.mark.parametrize("candidates", [[], [0, 0], [1, 2, 3, 4, 5], [-1], [4]])
def test_impossible_candidates_are_config_errors(candidates: list[int]) -> None:
    with pytest.raises(ConfigError, match=r"window\.candidates"):
        churn_config(window={"batches": 3, "candidates": candidates})


# --------------------------------------------------------------------------- the choice


def _predictions(y: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """Positive-class probabilities that are right on about ``accuracy`` of the rows."""
    right = rng.random(y.size) < accuracy
    predicted = np.where(right, y, 1 - y)
    return np.where(predicted == 1, 0.8, 0.2)


def test_the_confidence_is_corrected_for_the_number_of_candidates() -> None:
    policy = PromotionPolicy(confidence=0.95)
    assert corrected_policy(policy, 1) is policy
    assert corrected_policy(policy, 2).confidence == pytest.approx(0.975)
    assert corrected_policy(policy, 4).confidence == pytest.approx(0.9875)


def test_the_candidate_surely_better_than_the_champion_is_chosen() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 2000)
    champion = _predictions(y, 0.60, rng)
    wide, newest = _predictions(y, 0.61, rng), _predictions(y, 0.90, rng)
    policy = PromotionPolicy(metric="accuracy")

    candidates = [("newest+3", 9000, wide), ("newest", 1500, newest)]
    choice = choose_window("binary", "accuracy", y, candidates, champion, policy)

    assert choice.chosen == 1 and choice.scores[1].promotes and not choice.scores[0].promotes
    assert choice.confidence == pytest.approx(0.975)
    assert "chosen among 2 candidates" in choice.note and "97.50%" in choice.note


def test_without_a_champion_the_best_candidate_is_chosen_and_ties_go_to_the_wider_window() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 1000)
    same = _predictions(y, 0.8, rng)
    policy = PromotionPolicy(metric="accuracy")

    tie = choose_window("binary", "accuracy", y, [("newest+3", 9000, same), ("newest", 1500, same)], None, policy)
    better = choose_window(
        "binary", "accuracy", y, [("newest+3", 9000, same), ("newest", 1500, _predictions(y, 0.9, rng))], None, policy
    )

    assert tie.chosen == 0 and better.chosen == 1


def test_choosing_among_candidates_no_better_than_the_champion_promotes_at_most_the_policys_error_rate() -> None:
    rng = np.random.default_rng(11)
    policy = PromotionPolicy(metric="accuracy", confidence=0.9, large_sample_rows=1000)
    trials, promoted = 400, 0
    for _ in range(trials):
        y = rng.integers(0, 2, 1000)
        champion = _predictions(y, 0.75, rng)
        candidates = [(f"w{i}", 1000, _predictions(y, 0.75, rng)) for i in range(3)]
        choice = choose_window("binary", "accuracy", y, candidates, champion, policy)
        promoted += choice.scores[choice.chosen].promotes
    # At most 10 % by the corrected bound (plus sampling noise over 400 trials); uncorrected it is about 25 %.
    assert promoted / trials <= 0.13, promoted / trials


def _earlier(version: str, predictions: np.ndarray) -> EarlierChampion:
    return EarlierChampion(VersionInfo("churn", version, None, {}), predictions, {})


def test_an_earlier_champion_surely_better_is_chosen_and_counted_in_the_correction() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 2000)
    champion = _predictions(y, 0.60, rng)
    windows = [("newest+3", 9000, _predictions(y, 0.62, rng)), ("newest", 1500, _predictions(y, 0.70, rng))]
    earlier = [_earlier("4", _predictions(y, 0.61, rng)), _earlier("2", _predictions(y, 0.90, rng))]
    policy = PromotionPolicy(metric="accuracy", confidence=0.9)

    choice = choose_window("binary", "accuracy", y, windows, champion, policy, earlier)

    assert [s.name for s in choice.scores] == ["newest+3", "newest", "earlier champion v4", "earlier champion v2"]
    assert choice.chosen == 3 and choice.reinstates == "2" and choice.scores[3].rows is None
    assert choice.best_new == 1  # the newly trained window ranked first, for the record
    assert choice.confidence == pytest.approx(1 - 0.1 / 4)
    assert "earlier champion v2, judged as it is" in choice.note and "among 4 candidates" in choice.note


def test_a_new_window_wins_a_tie_with_an_earlier_champion_and_reinstates_nothing() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 2000)
    same = _predictions(y, 0.9, rng)
    policy = PromotionPolicy(metric="accuracy")

    choice = choose_window(
        "binary", "accuracy", y, [("newest", 1500, same)], _predictions(y, 0.6, rng), policy, [_earlier("2", same)]
    )

    assert choice.chosen == 0 and choice.reinstates is None and choice.scores[0].promotes


def test_an_earlier_champion_that_would_not_promote_is_never_the_challenger() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 2000)
    champion = _predictions(y, 0.80, rng)
    policy = PromotionPolicy(metric="accuracy")
    # Neither promotes; the earlier champion's bound is the better one, the new window is still chosen.
    windows = [("newest", 1500, _predictions(y, 0.60, rng))]
    earlier = [_earlier("2", _predictions(y, 0.78, rng))]

    choice = choose_window("binary", "accuracy", y, windows, champion, policy, earlier)

    assert not any(s.promotes for s in choice.scores)
    assert choice.scores[1].lower_bound > choice.scores[0].lower_bound  # type: ignore[operator]
    assert choice.chosen == 0 and choice.reinstates is None


def test_earlier_champions_are_at_most_three_and_zero_turns_them_off() -> None:
    assert churn_config().window.earlier_champions == 2
    assert churn_config(window={"batches": 3, "earlier_champions": 0}).window.earlier_champions == 0
    with pytest.raises(ConfigError, match="earlier_champions"):
        churn_config(window={"batches": 3, "earlier_champions": 4})


# --------------------------------------------------------------------------- the champion's side


def _split_of(holdout: list[str], share: float, row_split: bool = False) -> DataSplit:
    records = [BatchRecord(b, b, ROWS, [], None, None, "x", "2026-01-01T00:00:00+00:00") for b in holdout]
    return DataSplit([], records, row_split, ["tenure"], share)


def _tags(training: str, holdout: str, share: float) -> dict[str, str]:
    return {
        "retrainer.training_batches": training,
        "retrainer.holdout_batches": holdout,
        "retrainer.holdout_share": str(share),
    }


def test_a_champion_that_trained_on_holdout_rows_is_named() -> None:
    # Retrained on the same data: the champion trained on the earlier rows, this holdout is the latest.
    assert holdout_batches_seen(_tags("a,b", "c", 0.5), _split_of(["c"], 0.5)) == []
    assert holdout_batches_seen(_tags("a,b", "c", 0.5), _split_of(["d"], 0.5)) == []
    # Trained on the whole batch; a larger share; the holdout batches cut together differently; a row split.
    assert holdout_batches_seen(_tags("a,b,c", "d", 0.5), _split_of(["c"], 0.5)) == ["c"]
    assert holdout_batches_seen(_tags("a,b", "c", 0.5), _split_of(["c"], 0.8)) == ["c"]
    assert holdout_batches_seen(_tags("a", "b,c", 0.5), _split_of(["c", "d"], 0.5)) == ["c"]
    assert holdout_batches_seen(_tags("a", "c", 0.5), _split_of(["a", "c"], 1.0, row_split=True)) == ["a", "c"]
    # Whole holdout batches never trained it; a run without lineage tags says nothing.
    assert holdout_batches_seen(_tags("a", "c", 1.0), _split_of(["c", "d"], 0.5)) == []
    assert holdout_batches_seen({}, _split_of(["c"], 0.5)) == []


def test_rows_of_one_time_fall_on_one_side_of_the_cut() -> None:
    day = pl.Series("event_time", ["2026-01-02", "2026-01-01", "2026-01-02", None, "2026-01-03"]).str.to_date()
    frame = pl.DataFrame({"event_time": day, "row": range(5)})

    earlier, latest = split_latest(frame, 0.5, "event_time")
    assert earlier["row"].to_list() == [3, 1] and latest["row"].to_list() == [0, 2, 4]
    one_day = frame.with_columns(pl.lit(day[0]).alias("event_time"))
    assert split_latest(one_day, 0.5, "event_time")[0].is_empty()
    assert split_latest(frame, 0.4, None)[1]["row"].to_list() == [3, 4]


def test_a_newest_window_too_small_to_train_is_left_out(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 2}, holdout={"newest_share": 0.99}, promotion={"min_holdout_rows": 1})
    store = stored_days(tmp_path, config, 3)

    frames = load_frames(store, plan_split(store.manifest(), config), config)

    assert [w.name for w in frames.windows] == ["newest+2"]


def test_a_row_split_records_every_batch_it_trained_on(tmp_path: Path) -> None:
    config = churn_config(window={"batches": 2})
    store = stored_days(tmp_path, config, 1)

    split = plan_split(store.manifest(), config)
    (window,) = load_frames(store, split, config).windows

    assert window.pooled and window.name == "all batches (row split)"
    assert split.lineage(window.older)["training_batches"] == [store.manifest().batches[0].batch_id]
