"""The decision benchmark's stream generators: seeded, one schema, and each change really changes what it says."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from bench.streams import (
    FEATURES,
    SCENARIOS,
    SEGMENTS,
    TARGET,
    TIME,
    Scenario,
    change_points,
    frame_arrays,
    make_batch,
    scenario,
    score_a,
    score_b,
    value_a,
    value_b,
)

ROWS = 2000
SEED = 3


def _agreement(frame: pl.DataFrame, concept: str) -> float:
    """Share of rows whose label is what the noiseless concept says."""
    numeric, segment = frame_arrays(frame)
    score = score_a(numeric, segment) if concept == "A" else score_b(numeric, segment)
    return float(np.mean((score > 0) == (frame[TARGET].to_numpy() == 1)))


def _rmse(frame: pl.DataFrame, concept: str) -> float:
    numeric, segment = frame_arrays(frame)
    mean = value_a(numeric, segment) if concept == "A" else value_b(numeric, segment)
    return float(np.sqrt(np.mean((frame[TARGET].to_numpy() - mean) ** 2)))


def _mean(frame: pl.DataFrame, column: str) -> float:
    return float(frame[column].to_numpy().mean())


def _batch(spec: Scenario, batch: int) -> pl.DataFrame:
    return make_batch(spec, batch, ROWS, SEED)


def test_change_points_of_the_default_stream() -> None:
    assert change_points(14) == (8, 12)
    change, back = change_points(8)
    assert 3 < change < back < 8
    with pytest.raises(ValueError, match="at least"):
        change_points(5)


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario("sudden", 14)


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_batch_other_seed_other_batch(name: str) -> None:
    spec = scenario(name, 14)
    assert make_batch(spec, 9, ROWS, SEED).equals(make_batch(spec, 9, ROWS, SEED))
    assert not make_batch(spec, 9, ROWS, SEED).equals(make_batch(spec, 9, ROWS, SEED + 1))
    assert not make_batch(spec, 9, ROWS, SEED).equals(make_batch(spec, 10, ROWS, SEED))


@pytest.mark.parametrize("name", SCENARIOS)
def test_schema_rows_and_day(name: str) -> None:
    spec = scenario(name, 14)
    frame = _batch(spec, 5)
    assert frame.columns == [TIME, *FEATURES[:-1], FEATURES[-1], TARGET]
    assert frame.height == ROWS
    assert frame.schema[TIME] == pl.Datetime("us")
    assert all(frame.schema[c] == pl.Float64 for c in FEATURES[:-1])
    assert set(frame["segment"].unique()) <= set(SEGMENTS)
    assert frame.null_count().sum_horizontal().item() == 0
    days = frame[TIME].dt.date().unique()
    assert days.len() == 1
    assert not frame[TIME].is_sorted()
    if spec.task == "binary":
        assert frame.schema[TARGET] == pl.Int64
        assert set(frame[TARGET].unique()) == {0, 1}
    else:
        assert frame.schema[TARGET] == pl.Float64


def test_batches_follow_each_other_day_by_day() -> None:
    spec = scenario("abrupt", 14)
    first, second = _batch(spec, 0), _batch(spec, 1)
    assert second[TIME].to_numpy().min() > first[TIME].to_numpy().max()


def test_abrupt_switches_from_concept_a_to_b_and_stays() -> None:
    spec = scenario("abrupt", 14)
    change = spec.changes[0]
    before, after, late = _batch(spec, change - 1), _batch(spec, change), _batch(spec, 13)
    assert _agreement(before, "A") > 0.85
    assert _agreement(after, "A") < 0.5
    assert _agreement(after, "B") > 0.85
    assert _agreement(late, "B") > 0.85


def test_gradual_mixes_b_in_over_two_batches() -> None:
    spec = scenario("gradual", 14)
    change = spec.changes[0]
    shares = [_agreement(_batch(spec, b), "B") for b in (change - 1, change, change + 1, change + 2)]
    assert shares == sorted(shares)
    assert shares[0] < 0.5 < shares[2]
    assert shares[3] > 0.85
    assert shares[2] - shares[1] > 0.1
    assert shares[1] - shares[0] > 0.1


def test_recurring_changes_labels_only_and_returns() -> None:
    spec = scenario("recurring", 14)
    change, back = spec.changes
    before, during, after = _batch(spec, change - 1), _batch(spec, change), _batch(spec, back)
    assert _agreement(during, "B") > 0.85
    assert _agreement(after, "A") > 0.85
    for column in FEATURES[:-1]:
        assert abs(_mean(before, column) - _mean(during, column)) < 0.1


def test_covariate_moves_features_but_not_the_concept() -> None:
    spec = scenario("covariate", 14)
    change = spec.changes[0]
    before, after = _batch(spec, change - 1), _batch(spec, change)
    assert _mean(after, "x0") - _mean(before, "x0") > 1.0
    assert float(after["x1"].to_numpy().std()) / float(before["x1"].to_numpy().std()) > 1.3
    assert _agreement(before, "A") > 0.85
    assert _agreement(after, "A") > 0.85


def test_stationary_noise_flips_about_a_tenth_of_labels() -> None:
    spec = scenario("stationary_noise", 14)
    assert spec.changes == ()
    clean = _agreement(_batch(scenario("abrupt", 14), 2), "A")
    noisy = [_agreement(_batch(spec, b), "A") for b in (2, 8, 13)]
    for value in noisy:
        assert 0.05 < clean - value < 0.15
    assert max(noisy) - min(noisy) < 0.04


def test_regression_changes_and_returns() -> None:
    spec = scenario("regression", 14)
    change, back = spec.changes
    assert spec.metric == "rmse"
    assert _rmse(_batch(spec, change - 1), "A") < 0.6
    assert _rmse(_batch(spec, change), "A") > 3.0
    assert _rmse(_batch(spec, change), "B") < 0.6
    assert _rmse(_batch(spec, back), "A") < 0.6
