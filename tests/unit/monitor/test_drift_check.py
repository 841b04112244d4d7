"""One drift check end to end (monitoring.check_window) with real Evidently, and the window selection."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from retrainer.config import DriftConfig, DriftWindow, ModelConfig
from retrainer.data.contract import Schema, schema_for
from retrainer.data.store import BatchRecord, Manifest
from retrainer.errors import DataError, NoDataError, RegistryError
from retrainer.model.history import History, HistoryEntry
from retrainer.model.registry import VersionInfo
from retrainer.monitor.check import CheckResult, check_window, replaced_champions
from retrainer.monitor.incidents import Action, Assessment
from retrainer.monitor.page import with_banner
from retrainer.monitor.performance import holdout_figure, performance_baseline
from retrainer.monitor.record import check_markdown
from retrainer.monitor.reference import PREDICTION, prediction_column
from retrainer.monitor.window import Window, select_window
from retrainer.storage import Metadata, sqlite_url

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

NUMERIC = ["num_0", "num_1", "num_2", "num_3"]
PLANS = ["basic", "plus", "pro", "premium"]  # the data never draws "premium"
FEATURES = [*NUMERIC, "plan"]
NOW = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
SEEDS = [1, 2, 3, 4, 5]


def _config(drift: DriftConfig | None = None, features: list[str] = FEATURES) -> ModelConfig:
    categorical = {"plan": PLANS} if "plan" in features else {}
    return ModelConfig(
        task="binary", target="y", features=features, categorical=categorical, drift=drift or DriftConfig()
    )


def _schema(config: ModelConfig) -> Schema:
    return schema_for(config, [], None)


def _truth(frame: pl.DataFrame) -> np.ndarray:
    logit = 1.5 * frame["num_0"].to_numpy() - 0.6 * (frame["num_1"].to_numpy() - 5)
    result: np.ndarray = 1 / (1 + np.exp(-logit))
    return result


def _rows(seed: int, rows: int, shift: float = 0.0) -> pl.DataFrame:
    """Features and label; ``shift`` moves the means of num_0..num_2 by that many std."""
    rng = np.random.default_rng(seed)
    frame = pl.DataFrame(
        {
            "num_0": rng.normal(0 + shift, 1, rows),
            "num_1": rng.normal(5 + 2 * shift, 2, rows),
            "num_2": rng.exponential(1, rows) + shift,
            "num_3": rng.normal(-1, 0.5, rows),
            "plan": rng.choice(PLANS[:3], rows, p=[0.5, 0.3, 0.2]),
        }
    )
    labels = (rng.random(rows) < _truth(frame)).astype(np.int64)
    return frame.with_columns(pl.Series("y", labels))


def _reference(seed: int = 100, rows: int = 3000) -> pl.DataFrame:
    frame = _rows(seed, rows)
    return frame.with_columns(prediction_column("binary", [0, 1], _truth(frame)))


def _batch(batch_id: str, rows: int = 0) -> BatchRecord:
    return BatchRecord(batch_id, f"sha-{batch_id}", rows, [*FEATURES, "y"], None, None, f"{batch_id}.parquet", "t")


def _check(
    current: pl.DataFrame,
    predictions: np.ndarray | None = None,
    config: ModelConfig | None = None,
    reference: pl.DataFrame | None = None,
    holdout: float | None = 0.8,
) -> CheckResult:
    config = config or _config()
    return check_window(
        "churn",
        config,
        _schema(config),
        "4",
        reference if reference is not None else _reference(),
        Window([_batch("b1", current.height)]),
        current,
        predictions if predictions is not None else _truth(current),
        holdout,
        NOW,
    )


# --- false alarms and detection (5 seeds each; labelled windows also carry the performance) ----


@pytest.fixture(scope="module")
def calm_checks() -> list[CheckResult]:
    """Unshifted windows, scored by a champion that is as good as the truth allows."""
    return [_check(_rows(seed, 2000)) for seed in SEEDS]


@pytest.fixture(scope="module")
def shifted_checks() -> list[CheckResult]:
    """Windows with num_0..num_2 shifted by one std, scored by a champion that guesses at random."""
    results = []
    for seed in SEEDS:
        current = _rows(seed, 2000, shift=1.0)
        results.append(_check(current, np.random.default_rng(seed + 50).random(current.height)))
    return results


def test_unshifted_windows_never_alarm(calm_checks: list[CheckResult]) -> None:
    for result in calm_checks:
        check = result.check
        assert check.engine == "evidently"
        assert check.drift_detected is False, check.summary()
        assert check.drift_share == 0.0, check.summary()
        assert not check.alarming
        assert [c.column for c in check.columns] == FEATURES
        assert {c.column: c.method for c in check.columns} == {
            **dict.fromkeys(NUMERIC, "wasserstein"),
            "plan": "jensenshannon",
        }
        assert check.prediction is not None and check.prediction.drifted is False


def test_shifted_windows_always_drift(shifted_checks: list[CheckResult]) -> None:
    for result in shifted_checks:
        check = result.check
        assert check.drift_detected is True, check.summary()
        assert {c.column for c in check.columns if c.drifted} == {"num_0", "num_1", "num_2"}
        assert check.drift_share == pytest.approx(3 / 5)
        assert check.alarming
        top = check.top_drifted()
        assert {c.column for c in top} == {"num_0", "num_1", "num_2"}
        assert [c.score for c in top] == sorted((c.score or 0.0 for c in top), reverse=True)


def test_check_records_its_identity_and_rows(calm_checks: list[CheckResult]) -> None:
    check = calm_checks[0].check
    assert check.model == "churn" and check.champion_version == "4"
    assert check.checked_at == NOW
    assert check.check_id == "check-20250601T083000000000Z"
    assert check.batch_ids == ["b1"]
    assert (check.reference_rows, check.current_rows) == (3000, 2000)
    record = check.record()
    assert (record.check_id, record.at, record.alarming, record.batch_ids) == (check.check_id, NOW, False, ["b1"])
    assert "<html" in calm_checks[0].report.html.lower()


def test_random_predictions_degrade_performance(shifted_checks: list[CheckResult]) -> None:
    for result in shifted_checks:
        performance = result.check.performance
        assert performance is not None
        assert performance.metric == "roc_auc"
        assert performance.holdout == 0.8 and performance.tolerance == 0.05
        assert performance.window == pytest.approx(0.5, abs=0.05)
        assert performance.change == pytest.approx(performance.window - 0.8)
        assert performance.degraded is True
        assert performance.rows == 2000


def test_too_few_labelled_rows_are_reported_but_never_judged() -> None:
    current = _rows(21, 150)
    guesses = np.random.default_rng(71).random(current.height)
    few = _check(current, guesses).check.performance
    assert few is not None and few.rows == 150 and few.min_rows == 200
    assert few.change is not None and few.change < -few.tolerance  # as bad as random, yet
    assert few.degraded is False
    enough = _check(current, guesses, _config(DriftConfig(performance_min_rows=150))).check.performance
    assert enough is not None and enough.degraded is True
    stable = Assessment(Action.STABLE, None, "no drift and no degraded performance")
    record = check_markdown(_check(current, guesses).check, stable, "file:///r.html")
    assert "| roc_auc | 150 |" in record and "| not judged: fewer than 200 labelled rows |" in record
    unjudged = _check(current, guesses, holdout=None).check
    assert "| not judged: no holdout figure |" in check_markdown(unjudged, stable, "file:///r.html")


def test_good_predictions_are_not_degraded(calm_checks: list[CheckResult]) -> None:
    for result in calm_checks:
        performance = result.check.performance
        assert performance is not None
        assert performance.window > 0.8
        assert performance.change is not None and performance.change > 0
        assert performance.degraded is False


def test_summary_is_json_with_every_column(shifted_checks: list[CheckResult]) -> None:
    check = shifted_checks[0].check
    summary = check.summary(incident="churn:v4:check-x", action="Incident")
    decoded = json.loads(json.dumps(summary))
    assert decoded["drift_detected"] is True
    assert decoded["drift_share"] == pytest.approx(0.6)
    assert decoded["incident"] == "churn:v4:check-x"
    assert decoded["action"] == "Incident"
    assert set(decoded["columns"]) == set(FEATURES)
    for column in check.columns:
        entry = decoded["columns"][column.column]
        assert {"score", "method", "threshold", "drifted"} <= set(entry)
        assert entry["score"] == pytest.approx(column.score)
        assert entry["method"] == column.method
        assert entry["threshold"] == column.threshold == 0.1
        assert entry["drifted"] is column.drifted
    assert decoded["performance"]["degraded"] is True
    assert decoded["prediction"]["method"] == "wasserstein"
    assert decoded["rows"] == {"reference": 3000, "current": 2000}


# --- bad input ---------------------------------------------------------------------------------


def test_window_without_a_feature_column_names_it() -> None:
    current = _rows(1, 100).drop("num_2", "plan")
    with pytest.raises(DataError) as raised:
        _check(current)
    message = str(raised.value)
    assert "missing_column" in message
    assert "'num_2'" in message and "'plan'" in message
    assert "window b1" in message
    assert {(v.rule, v.column) for v in raised.value.violations} == {
        ("missing_column", "num_2"),
        ("missing_column", "plan"),
    }


def test_empty_window_is_refused() -> None:
    current = _rows(1, 10).head(0)
    with pytest.raises(DataError) as raised:
        _check(current, np.empty(0))
    assert "empty_window" in str(raised.value)
    assert "window b1" in str(raised.value)
    assert [v.rule for v in raised.value.violations] == ["empty_window"]


@pytest.fixture(scope="module")
def broken_window() -> CheckResult:
    """Unlabelled: an all-null column, an all-NaN column, one row of an unseen plan and one of a configured one."""
    row = pl.int_range(pl.len())
    current = (
        _rows(7, 2000)
        .with_columns(
            pl.lit(None).alias("num_3"),  # dtype Null, as read from a file of empty cells
            pl.lit(float("nan")).alias("num_2"),
            pl.when(row == 0)
            .then(pl.lit("platinum"))
            .when(row == 1)
            .then(pl.lit("premium"))
            .otherwise(pl.col("plan"))
            .alias("plan"),
        )
        .drop("y")
    )
    return _check(current)


def test_all_null_column_drifts_by_rule(broken_window: CheckResult) -> None:
    columns = {c.column: c for c in broken_window.check.columns}
    for name in ("num_2", "num_3"):
        assert columns[name].drifted is True
        assert columns[name].method == "all_null"
        assert columns[name].score is None
        assert columns[name].note == "no valid value in the window"
    assert columns["num_0"].drifted is False and columns["num_0"].method == "wasserstein"
    assert columns["num_1"].drifted is False


def test_unseen_category_drifts_whatever_its_score(broken_window: CheckResult) -> None:
    plan = next(c for c in broken_window.check.columns if c.column == "plan")
    assert plan.drifted is True
    assert plan.note == "unseen categories: platinum"  # "premium" is a configured level
    assert plan.method == "jensenshannon"
    assert plan.score is not None and plan.score < plan.threshold


def test_broken_window_still_completes_with_a_share(broken_window: CheckResult) -> None:
    check = broken_window.check
    assert check.drift_share == pytest.approx(3 / 5)
    assert check.drift_detected is True
    assert check.performance is None  # no target in the window
    assert check.prediction is not None and check.prediction.score is not None
    assert json.loads(json.dumps(check.summary()))["columns"]["num_3"]["method"] == "all_null"
    assert {c.column for c in check.top_drifted()[:2]} == {"num_2", "num_3"}  # rule verdicts rank first


def _banner(report_html: str) -> list[str]:
    """The lines retrainer shows above the Evidently report, unescaped."""
    found = re.search(r"<body[^>]*>\s*<div id='retrainer-verdict'[^>]*>(.*?)</div>", report_html, flags=re.DOTALL)
    assert found, "the verdict must open the page's body"
    return [html.unescape(line) for line in re.findall(r"<p[^>]*>(.*?)</p>", found.group(1))]


def test_report_opens_with_the_checks_verdict_and_its_rules(broken_window: CheckResult) -> None:
    check, lines = broken_window.check, _banner(broken_window.report.html)
    assert lines[0] == f"retrainer {check.check_id}: churn, champion v4, batches b1"
    assert lines[1] == "Dataset drift detected: 3 of 5 features drifted (share 0.60; dataset drift needs 0.50)."
    assert lines[2].startswith("The champion's predictions ")
    assert lines[-1] == (
        "Drifted by rule, whatever the score: num_2 (no valid value in the window); "
        "num_3 (no valid value in the window); plan (unseen categories: platinum)."
    )
    assert not any("samples" in line for line in lines)  # Evidently saw every row


def test_calm_report_says_no_drift(calm_checks: list[CheckResult]) -> None:
    lines = _banner(calm_checks[0].report.html)
    assert lines[1] == "No dataset drift: 0 of 5 features drifted (share 0.00; dataset drift needs 0.50)."
    assert len(lines) == 3


def test_banner_is_escaped_and_placed_after_the_body_tag() -> None:
    page = with_banner("<html><head></head><BODY class='x'><div id='root'></div></BODY></html>", ["a < b & <i>"])
    assert page.startswith("<html><head></head><BODY class='x'><div id='retrainer-verdict' ")
    assert "<p style='margin:4px 0'>a &lt; b &amp; &lt;i&gt;</p></div><div id='root'></div></BODY></html>" in page
    assert with_banner("bare", ["x"]).endswith("</div>bare")


# --- fast path ---------------------------------------------------------------------------------


def _engines(drift: dict[str, object], features: list[str] = FEATURES) -> tuple[CheckResult, CheckResult]:
    """The same 3000-row data checked by the polars engine and by the evidently engine."""
    fast = _config(DriftConfig.model_validate({"fast_above": 1000, "report_rows": 500, **drift}), features)
    slow = _config(DriftConfig.model_validate({"fast_above": 100_000, **drift}), features)
    reference = _reference(200, 3000).select([*features, "y", PREDICTION])
    current = _rows(201, 3000, shift=0.15)
    predictions = np.clip(_truth(current) + 0.08, 0, 1)
    current = current.select([*features, "y"])
    return (
        _check(current, predictions, fast, reference),
        _check(current, predictions, slow, reference),
    )


@pytest.fixture(scope="module")
def engines() -> tuple[CheckResult, CheckResult]:
    return _engines({})


def test_big_windows_take_the_polars_engine(engines: tuple[CheckResult, CheckResult]) -> None:
    fast, slow = engines
    assert fast.check.engine == "polars"
    assert slow.check.engine == "evidently"
    assert "<html" in fast.report.html.lower()
    # The polars engine scores the full frames; the report only sees a sample.
    assert (fast.check.reference_rows, fast.check.current_rows) == (3000, 3000)
    assert _banner(fast.report.html)[3] == (
        "Every feature was scored on all 3,000 reference and 3,000 window rows. This report draws the "
        "5 most drifted of 5 features on seeded samples of 500 and 500 rows, so its own counts and "
        "dataset verdict cover only those."
    )
    assert len(_banner(slow.report.html)) == 3  # verdict lines only: the report saw everything


def test_sampled_report_uses_the_methods_of_the_full_frame_verdicts(engines: tuple[CheckResult, CheckResult]) -> None:
    # 500 sampled rows: left to itself, Evidently would pick K-S for every numeric column.
    fast, _ = engines
    verdicts = {c.column: c for c in fast.check.columns}
    assert fast.report.columns and fast.check.prediction is not None and fast.report.prediction is not None
    for shown in fast.report.columns:
        assert (shown.method, shown.threshold) == (verdicts[shown.column].method, verdicts[shown.column].threshold)
    assert fast.report.prediction.method == fast.check.prediction.method == "wasserstein"


def test_sampled_evidently_engine_says_the_report_is_the_scorer() -> None:
    config = _config(DriftConfig(num_method="ks", fast_above=1000))
    result = _check(_rows(12, 2500), config=config, reference=_reference(200, 3000))
    assert result.check.engine == "evidently"
    assert _banner(result.report.html)[3] == (
        "Scores come from this report, drawn on seeded samples of 1,000 reference and 1,000 window rows "
        "(of 3,000 and 2,500)."
    )


def test_polars_engine_verdicts_equal_evidentlys(engines: tuple[CheckResult, CheckResult]) -> None:
    fast, slow = engines
    assert [c.column for c in fast.check.columns] == [c.column for c in slow.check.columns] == FEATURES
    for ours, theirs in zip(fast.check.columns, slow.check.columns, strict=True):
        assert ours.method == theirs.method, ours.column
        assert ours.score == pytest.approx(theirs.score, abs=1e-6), ours.column
        assert ours.threshold == theirs.threshold, ours.column
        assert ours.drifted == theirs.drifted, ours.column
    drifted = [c.drifted for c in slow.check.columns]
    assert any(drifted) and not all(drifted), "the data should drift in some columns only"
    assert (fast.check.drift_share, fast.check.drift_detected) == (slow.check.drift_share, slow.check.drift_detected)
    assert fast.check.prediction is not None and slow.check.prediction is not None
    assert fast.check.prediction.method == slow.check.prediction.method == "wasserstein"
    assert fast.check.prediction.score == pytest.approx(slow.check.prediction.score, abs=1e-6)
    assert fast.check.prediction.drifted == slow.check.prediction.drifted
    assert fast.check.performance == slow.check.performance
    json.dumps(fast.check.summary())


def test_polars_engine_judges_the_prediction_like_evidently_under_a_global_threshold() -> None:
    # The prediction column is not a feature: both engines should judge it with the same settings.
    fast, slow = _engines({"threshold": 0.5}, features=["num_0"])
    assert fast.check.engine == "polars" and slow.check.engine == "evidently"
    assert [c.threshold for c in fast.check.columns] == [c.threshold for c in slow.check.columns] == [0.5]
    assert fast.check.prediction is not None and slow.check.prediction is not None
    assert fast.check.prediction.threshold == slow.check.prediction.threshold
    assert fast.check.prediction.drifted == slow.check.prediction.drifted


# --- window selection --------------------------------------------------------------------------


def _manifest(count: int) -> Manifest:
    return Manifest("churn", FEATURES, [_batch(f"b{i}") for i in range(1, count + 1)])


def test_latest_window_takes_the_newest_batches() -> None:
    latest = DriftWindow(mode="latest", batches=2)
    window = select_window(_manifest(5), latest, last_checked="b5")
    assert window is not None and window.batch_ids == ["b4", "b5"]
    one = select_window(_manifest(5), DriftWindow(), last_checked=None)
    assert one is not None and one.batch_ids == ["b5"]
    few = select_window(_manifest(1), DriftWindow(batches=3), last_checked=None)
    assert few is not None and few.batch_ids == ["b1"]
    assert few.label == "window b1"


def test_since_last_check_takes_only_newer_batches() -> None:
    since = DriftWindow(mode="since_last_check", batches=3)
    manifest = _manifest(6)
    window = select_window(manifest, since, last_checked="b4")
    assert window is not None and window.batch_ids == ["b5", "b6"]
    capped = select_window(manifest, since, last_checked="b1")
    assert capped is not None and capped.batch_ids == ["b4", "b5", "b6"]
    assert select_window(manifest, since, last_checked="b6") is None
    first = select_window(manifest, since, last_checked=None)
    assert first is not None and first.batch_ids == ["b4", "b5", "b6"]
    forgotten = select_window(manifest, since, last_checked="gone")
    assert forgotten is not None and forgotten.batch_ids == ["b4", "b5", "b6"]


def test_named_batch_is_checked_alone() -> None:
    since = DriftWindow(mode="since_last_check", batches=3)
    window = select_window(_manifest(6), since, last_checked="b6", batch_id="b2")
    assert window is not None and window.batch_ids == ["b2"]


def test_unknown_batch_is_a_no_data_error_naming_it() -> None:
    with pytest.raises(NoDataError) as raised:
        select_window(_manifest(3), DriftWindow(), last_checked=None, batch_id="b99")
    assert "'b99'" in str(raised.value)
    assert "churn" in str(raised.value)


def test_empty_manifest_is_a_no_data_error() -> None:
    with pytest.raises(NoDataError) as raised:
        select_window(Manifest("churn"), DriftWindow(), last_checked=None)
    assert "no accepted batch" in str(raised.value)
    assert raised.value.violations[0].rule == "no_data"


# --- holdout figure ----------------------------------------------------------------------------


def test_holdout_figure_reads_the_challenger_value_of_the_metric() -> None:
    tags = {"retrainer.metrics": json.dumps({"roc_auc": {"challenger": 0.8125, "champion": 0.79}, "f1": {}})}
    assert holdout_figure(tags, "roc_auc") == 0.8125
    assert holdout_figure(tags, "f1") is None
    assert holdout_figure(tags, "log_loss") is None
    assert holdout_figure({}, "roc_auc") is None
    assert holdout_figure({"retrainer.metrics": ""}, "roc_auc") is None
    assert holdout_figure({"retrainer.metrics": json.dumps({"rmse": {"challenger": "1.5"}})}, "rmse") == 1.5


def test_top_drifted_ranks_p_value_methods_by_smallest_p() -> None:
    config = _config(DriftConfig(num_method="ks"))
    current = _rows(9, 2000).with_columns(pl.col("num_0") + 0.15, pl.col("num_3") + 0.25)  # 0.15 and 0.5 std
    check = _check(current, config=config).check
    columns = {c.column: c for c in check.columns}
    assert columns["num_0"].method == columns["num_3"].method == "ks"
    assert columns["num_0"].score is not None and columns["num_3"].score is not None
    assert 0 < columns["num_3"].score < columns["num_0"].score < columns["num_0"].threshold
    assert [c.column for c in check.top_drifted()][:2] == ["num_3", "num_0"]


def test_the_performance_baseline_is_the_best_figure_of_the_champion_and_those_it_replaced() -> None:
    assert performance_baseline([0.80, 0.93, None, 0.90], "accuracy") == 0.93
    assert performance_baseline([2.4, 1.9, 2.1], "rmse") == 1.9
    assert performance_baseline([None, float("nan")], "accuracy") is None
    assert performance_baseline([], "rmse") is None


def test_earlier_champions_follow_promotions_and_pass_over_withdrawn_and_deleted_versions(tmp_path: Path) -> None:
    history = History(Metadata(sqlite_url(tmp_path / "metadata.db")), "churn")
    changes = [("1", None, "Promoted"), ("2", "1", "Promoted"), ("3", "2", "Promoted"), ("2", "3", "RolledBack")]
    for version, replaced, outcome in [*changes, ("4", "2", "Promoted"), ("5", "4", "Promoted")]:
        history.append(HistoryEntry("2026-01-01", "churn", "judged", outcome, version, replaced))

    class Versions:
        deleted: ClassVar[set[str]] = {"1"}

        def version(self, model: str, version: str) -> VersionInfo:
            if version in self.deleted:
                raise RegistryError(f"{model} version {version}: RESOURCE_DOES_NOT_EXIST")
            return VersionInfo(model, version, None, {})

    def earlier(version: str, count: int) -> list[str]:
        found = replaced_champions(Versions(), history, VersionInfo("churn", version, None, {}), count)  # type: ignore[arg-type]
        return [v.version for v in found]

    # 5 replaced 4, 4 replaced 2, 2 was promoted over 1 (deleted); 3 was rolled back from, never a bar.
    assert earlier("5", 5) == ["4", "2"]
    assert earlier("5", 1) == ["4"]
    assert earlier("2", 5) == []
    Versions.deleted = set()
    assert earlier("2", 5) == ["1"]
