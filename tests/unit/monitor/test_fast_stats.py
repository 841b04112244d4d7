"""The polars/numpy drift statistics against scipy, and against one real Evidently run."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon as scipy_jensenshannon
from scipy.stats import wasserstein_distance

from retrainer.config import DriftConfig
from retrainer.config.drift_methods import METHODS_BY_KIND, P_VALUE_METHODS
from retrainer.errors import ConfigError
from retrainer.monitor.evidently import EvidentlyRun, run_evidently
from retrainer.monitor.fast_stats import (
    ColumnDrift,
    ColumnKinds,
    configured_method,
    configured_threshold,
    dataset_verdict,
    fast_drift,
    fast_path_applies,
    jensen_shannon,
    normed_wasserstein,
)


def _expected_wasserstein(reference: np.ndarray, current: np.ndarray) -> float:
    return float(wasserstein_distance(reference, current) / max(np.std(reference), 0.001))


# --- normed Wasserstein ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "shift", "scale"),
    [(1000, 1537, 0.3, 1.0), (1537, 1000, 0.0, 1.4), (2000, 2000, 0.1, 1.0), (1, 7, 0.0, 1.0), (333, 999, 2.0, 3.0)],
)
def test_normed_wasserstein_equals_scipy(n_ref: int, n_cur: int, shift: float, scale: float) -> None:
    rng = np.random.default_rng(n_ref * 7 + n_cur)
    reference = rng.normal(5, 2, n_ref)
    current = rng.normal(5 + 2 * shift, 2 * scale, n_cur)
    ours = normed_wasserstein(np.sort(reference), np.sort(current))
    assert ours == pytest.approx(_expected_wasserstein(reference, current), rel=1e-9, abs=1e-12)


def test_normed_wasserstein_floors_the_reference_std() -> None:
    reference = np.full(50, 3.0)
    current = np.sort(np.r_[np.full(25, 3.0), np.full(25, 4.0)])
    assert normed_wasserstein(reference, current) == pytest.approx(0.5 / 0.001)
    assert normed_wasserstein(reference, reference) == 0.0


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
_sample = st.lists(_finite, min_size=1, max_size=200)


@settings(max_examples=300, deadline=None)
@given(reference=_sample, current=_sample)
def test_normed_wasserstein_property(reference: list[float], current: list[float]) -> None:
    ref, cur = np.sort(np.asarray(reference)), np.sort(np.asarray(current))
    expected = _expected_wasserstein(ref, cur)
    ours = normed_wasserstein(ref, cur)
    # Rounding of the sums is relative to the values' magnitude, not to the (possibly tiny) distance.
    magnitude = max(np.abs(ref).max(), np.abs(cur).max(), 1.0) / max(float(np.std(ref)), 0.001)
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-12 * magnitude)
    assert ours >= 0


# --- Jensen-Shannon ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "q"),
    [
        ([10, 20, 30], [30, 20, 10]),
        ([0, 5, 3], [4, 0, 1]),
        ([7, 0, 0, 1], [7, 0, 0, 1]),
        ([1, 0], [0, 1]),
        ([0, 0, 9, 1], [1, 0, 0, 0]),
        ([1000, 1, 0, 0], [900, 50, 49, 1]),
    ],
)
def test_jensen_shannon_equals_scipy(p: list[int], q: list[int]) -> None:
    reference, current = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    assert jensen_shannon(reference, current) == pytest.approx(
        float(scipy_jensenshannon(reference, current)), rel=1e-9, abs=1e-12
    )


def test_jensen_shannon_of_disjoint_supports_is_sqrt_ln2() -> None:
    assert jensen_shannon(np.array([3.0, 0.0]), np.array([0.0, 8.0])) == pytest.approx(np.sqrt(np.log(2)))


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=30).filter(
        lambda pairs: sum(a for a, _ in pairs) > 0 and sum(b for _, b in pairs) > 0
    )
)
def test_jensen_shannon_property(counts: list[tuple[int, int]]) -> None:
    reference = np.asarray([a for a, _ in counts], dtype=float)
    current = np.asarray([b for _, b in counts], dtype=float)
    expected = float(scipy_jensenshannon(reference, current))
    assert jensen_shannon(reference, current) == pytest.approx(expected, rel=1e-7, abs=1e-7)


# --- configuration -----------------------------------------------------------------------------

KINDS = ColumnKinds(["a", "b"], ["c"])


def test_configured_method_prefers_column_then_kind_then_global() -> None:
    config = DriftConfig(method="psi", num_method="wasserstein", per_column_method={"a": "ks"})
    assert configured_method(config, "a", "numerical") == "ks"
    assert configured_method(config, "b", "numerical") == "wasserstein"
    assert configured_method(config, "c", "categorical") == "psi"
    assert configured_method(DriftConfig(), "a", "numerical") is None


def test_configured_threshold_prefers_column_then_global_then_default() -> None:
    config = DriftConfig(threshold=0.2, per_column_threshold={"a": 0.05})
    assert configured_threshold(config, "a") == 0.05
    assert configured_threshold(config, "b") == 0.2
    assert configured_threshold(DriftConfig(), "b") == 0.1


def test_fast_path_needs_more_than_1000_reference_rows() -> None:
    assert fast_path_applies(DriftConfig(), KINDS, 1001)
    assert not fast_path_applies(DriftConfig(), KINDS, 1000)
    assert not fast_path_applies(DriftConfig(), KINDS, 10)


@pytest.mark.parametrize(
    "config",
    [
        DriftConfig(per_column_method={"a": "ks"}),
        DriftConfig(num_method="psi"),
        DriftConfig(cat_method="chisquare"),
        DriftConfig(method="psi"),
        DriftConfig(num_method="wasserstein", per_column_method={"b": "kl_div"}),
    ],
)
def test_fast_path_refuses_methods_it_does_not_reproduce(config: DriftConfig) -> None:
    assert not fast_path_applies(config, KINDS, 50_000)


@pytest.mark.parametrize(
    "config", [DriftConfig(per_column_method={"c": "wasserstein"}), DriftConfig(method="wasserstein")]
)
def test_fast_path_refuses_wasserstein_on_categorical_columns(config: DriftConfig) -> None:
    # fast_drift always scores categorical columns with Jensen-Shannon (and Evidently refuses
    # wasserstein on them), so the fast path does not reproduce this configuration. A model's
    # config refuses it first (tests/unit/config/test_config.py); a bare DriftConfig cannot know the kinds.
    assert configured_method(config, "c", "categorical") == "wasserstein"
    assert not fast_path_applies(config, KINDS, 50_000)


@pytest.mark.parametrize(
    "config",
    [
        DriftConfig(num_method="wasserstein", cat_method="jensenshannon"),
        DriftConfig(per_column_method={"a": "jensenshannon"}),
        DriftConfig(threshold=0.3),
    ],
)
def test_fast_path_accepts_the_distances(config: DriftConfig) -> None:
    assert fast_path_applies(config, KINDS, 50_000)


def test_fast_drift_counts_a_categorical_column_whatever_its_name() -> None:
    # Value counts are collected under a helper column name; a feature of that name must not clash.
    for name in ("plan", "n"):
        reference = pl.DataFrame({name: ["a", "b"] * 600})
        current = pl.DataFrame({name: ["a", "a", "b"] * 400})
        (column,) = fast_drift(reference, current, ColumnKinds([], [name]), DriftConfig())
        assert column.column == name
        assert column.score == pytest.approx(float(scipy_jensenshannon([600, 600], [800, 400])), abs=1e-12)


def test_dataset_verdict_is_the_share_of_drifted_columns() -> None:
    def column(name: str, drifted: bool) -> ColumnDrift:
        return ColumnDrift(name, "numerical", "wasserstein", 0.5 if drifted else 0.0, 0.1, drifted)

    columns = [column("a", True), column("b", False), column("c", True), column("d", False)]
    assert dataset_verdict(columns, 0.5) == (0.5, True)
    assert dataset_verdict(columns, 0.51) == (0.5, False)
    assert dataset_verdict(columns[:1], 1.0) == (1.0, True)
    assert dataset_verdict([], 0.1) == (0.0, False)


# --- agreement with Evidently ------------------------------------------------------------------

NUMERICAL = ["shift_a", "shift_b", "calm_a", "calm_b", "wide", "int3", "x", "holes"]
CATEGORICAL = ["colour", "city"]
AGREEMENT_CONFIG = DriftConfig(per_column_method={"x": "jensenshannon"})


def _side(seed: int, drifted: bool, rows: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    s = 1.0 if drifted else 0.0
    holes = rng.normal(0, 1, rows) + 0.5 * s
    spots = rng.choice(rows, 300, replace=False)
    holes[spots[:150]], holes[spots[150:220]], holes[spots[220:]] = np.nan, np.inf, -np.inf
    holes_column = pl.Series("holes", holes).scatter(spots[:20].tolist(), None)  # nulls too
    cities = ["a", "b", "c", "new"] if drifted else ["a", "b", "c"]
    return pl.DataFrame(
        {
            "shift_a": rng.normal(10, 2, rows) + 0.6 * s,  # 0.3 std
            "shift_b": rng.normal(-3, 0.5, rows) + 0.15 * s,  # 0.3 std
            "calm_a": rng.normal(0, 1, rows),
            "calm_b": rng.exponential(3, rows),
            "wide": rng.normal(0, 1.6 if drifted else 1.0, rows),
            "int3": rng.choice([0, 1, 2], rows, p=[0.2, 0.3, 0.5] if drifted else [0.4, 0.3, 0.3]),
            "x": rng.gamma(2.0, 2.0, rows) + 0.8 * s,
            "holes": holes_column,
            "colour": rng.choice(["red", "green", "blue"], rows, p=[0.2, 0.3, 0.5] if drifted else [0.5, 0.3, 0.2]),
            "city": rng.choice(cities, rows, p=[0.3, 0.3, 0.3, 0.1] if drifted else None),
        }
    )


@pytest.fixture(scope="module")
def agreement() -> tuple[list[ColumnDrift], EvidentlyRun]:
    reference, current = _side(1, False, 5000), _side(2, True, 5231)
    assert reference["int3"].dtype == pl.Int64
    kinds = ColumnKinds(NUMERICAL, CATEGORICAL)
    with warnings.catch_warnings():
        # Evidently's own statistics of the column with infinities warn; the drift scores skip them.
        warnings.simplefilter("ignore", RuntimeWarning)
        run = run_evidently(reference, current, kinds, AGREEMENT_CONFIG)
    return fast_drift(reference, current, kinds, AGREEMENT_CONFIG), run


def test_fast_drift_scores_equal_evidently(agreement: tuple[list[ColumnDrift], EvidentlyRun]) -> None:
    fast, run = agreement
    assert [c.column for c in fast] == [c.column for c in run.columns] == NUMERICAL + CATEGORICAL
    for ours, theirs in zip(fast, run.columns, strict=True):
        assert ours.score is not None and theirs.score is not None
        assert ours.score == pytest.approx(theirs.score, abs=1e-6), ours.column
        assert ours.method == theirs.method, ours.column
        assert ours.threshold == theirs.threshold == 0.1, ours.column
        assert ours.drifted == theirs.drifted, ours.column
        assert ours.kind == theirs.kind, ours.column


def test_fast_drift_picks_evidently_methods(agreement: tuple[list[ColumnDrift], EvidentlyRun]) -> None:
    fast, _ = agreement
    methods = {c.column: c.method for c in fast}
    assert methods == {
        **dict.fromkeys(["shift_a", "shift_b", "calm_a", "calm_b", "wide", "holes"], "wasserstein"),
        **dict.fromkeys(["int3", "x", "colour", "city"], "jensenshannon"),
    }
    drifted = {c.column for c in fast if c.drifted}
    # The data was built so that both sides of every threshold occur.
    assert drifted == {"shift_a", "shift_b", "wide", "int3", "x", "holes", "colour", "city"}


def test_dataset_verdict_equals_evidentlys_share(agreement: tuple[list[ColumnDrift], EvidentlyRun]) -> None:
    fast, run = agreement
    counted = [
        metric["value"]
        for metric in json.loads(run.snapshot_json)["metrics"]
        if str(metric["config"].get("type", "")).endswith(":DriftedColumnsCount")
    ]
    assert len(counted) == 1
    share, detected = dataset_verdict(fast, AGREEMENT_CONFIG.drift_share)
    assert share == pytest.approx(counted[0]["share"])
    assert sum(c.drifted for c in fast) == counted[0]["count"]
    assert detected is (counted[0]["share"] >= AGREEMENT_CONFIG.drift_share)


# --- the catalog of Evidently's methods --------------------------------------------------------


@dataclass(frozen=True)
class _Registered:
    kinds: frozenset[str]
    drifts_below_threshold: bool


def _evidently_methods() -> dict[str, _Registered]:
    """Each numerical/categorical method Evidently registers: its column kinds and its direction.

    The direction is probed with a threshold of 0 on two slightly different samples: a p-value
    test finds no drift below 0, a distance finds its positive distance at or above it.
    """
    import pandas as pd
    from evidently.legacy.calculations import stattests
    from evidently.legacy.calculations.stattests.registry import StatTest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(11)
    samples = {
        ColumnType.Numerical: (pd.Series(rng.normal(0, 1, 400)), pd.Series(rng.normal(0.1, 1, 400))),
        ColumnType.Categorical: (
            pd.Series(rng.choice(["a", "b"], 400, p=[0.5, 0.5])),
            pd.Series(rng.choice(["a", "b"], 400, p=[0.56, 0.44])),
        ),
    }
    names = {ColumnType.Numerical: "numerical", ColumnType.Categorical: "categorical"}
    found = {}
    registered = [getattr(stattests, name) for name in dir(stattests)]
    for test in (t for t in registered if isinstance(t, StatTest)):
        kinds = [k for k in test.allowed_feature_types if k in samples]
        if kinds:
            reference, current = samples[kinds[0]]
            below = not test(reference, current, kinds[0], 0.0).drifted
            found[test.name] = _Registered(frozenset(names[k] for k in kinds), below)
    return found


@pytest.fixture(scope="module")
def evidently_methods() -> dict[str, _Registered]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _evidently_methods()


def test_catalog_kinds_are_evidentlys(evidently_methods: dict[str, _Registered]) -> None:
    assert {"ks", "wasserstein", "jensenshannon", "chisquare"} <= set(evidently_methods)
    for kind, names in METHODS_BY_KIND.items():
        assert names == {name for name, method in evidently_methods.items() if kind in method.kinds}, kind


def test_p_value_methods_are_exactly_evidentlys_drift_below_threshold_methods(
    evidently_methods: dict[str, _Registered],
) -> None:
    assert {name for name, method in evidently_methods.items() if method.drifts_below_threshold} == P_VALUE_METHODS


def _verdict(method: str, score: float | None, threshold: float) -> ColumnDrift:
    return ColumnDrift(method, "numerical", method, score, threshold, True)


def test_severity_reads_p_values_and_distances_in_their_own_direction() -> None:
    assert _verdict("wasserstein", 0.3, 0.1).severity == pytest.approx(3.0)
    assert _verdict("ks", 0.005, 0.05).severity == pytest.approx(10.0)
    assert _verdict("chisquare", 0.0, 0.05).severity == float("inf")
    assert _verdict("all_null", None, 0.1).severity == float("inf")
    calm = [_verdict("ks", 0.5, 0.05), _verdict("psi", 0.01, 0.1)]
    assert all(c.severity < 1 for c in calm)


def test_evidently_refusing_a_method_is_a_config_error() -> None:
    # Reached only when a DriftConfig is built without its model (which refuses this first).
    frame = pl.DataFrame({"c": ["a", "b"] * 50})
    with pytest.raises(ConfigError, match=r"drift settings: .*wasserstein"):
        run_evidently(frame, frame, ColumnKinds([], ["c"]), DriftConfig(per_column_method={"c": "wasserstein"}))
