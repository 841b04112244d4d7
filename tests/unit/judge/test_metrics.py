"""Weighted (bootstrap) metric forms agree with scikit-learn's point values, and resampling is sound."""

from __future__ import annotations

import numpy as np
import pytest

from retrainer.config.metrics import METRICS_BY_TASK, TaskKind
from retrainer.judge.bootstrap import paired_bounds, resample_counts
from retrainer.judge.metrics import point_metric, point_metrics, prepared_metric, weighted_metric

ROWS = 240
CLASSES = 4


def _binary(rng: np.random.Generator, *, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 2, ROWS)
    pred = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1.5, ROWS))))
    if tied:
        # One decimal: many tied scores, and some rows exactly on the 0.5 threshold.
        pred = np.round(pred, 1)
    return y, pred


def _multiclass(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, CLASSES, ROWS)
    logits = rng.normal(0, 1.0, (ROWS, CLASSES))
    logits[np.arange(ROWS), y] += 1.0
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return y, exp / exp.sum(axis=1, keepdims=True)


def _regression(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.normal(50, 10, ROWS)
    return y, y + rng.normal(0, 4, ROWS)


def _dataset(task: TaskKind, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if task == "binary":
        return _binary(rng, tied=False)
    if task == "multiclass":
        return _multiclass(rng)
    return _regression(rng)


CASES = [(task, name) for task, names in METRICS_BY_TASK.items() for name in names]


def _case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize(("task", "name"), CASES, ids=[_case_id(c) for c in CASES])
def test_weighted_with_ones_equals_sklearn(task: TaskKind, name: str) -> None:
    y, pred = _dataset(task, seed=11)
    expected = point_metric(task, name, y, pred)
    got = weighted_metric(task, name)(y, pred, np.ones((1, len(y))))
    assert got.shape == (1,)
    assert np.isfinite(expected)
    assert got[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("task", "name"), CASES, ids=[_case_id(c) for c in CASES])
def test_weighted_with_counts_equals_sklearn_on_repeated_rows(task: TaskKind, name: str) -> None:
    y, pred = _dataset(task, seed=12)
    rng = np.random.default_rng(13)
    counts = rng.integers(0, 4, (3, len(y))).astype(np.float64)  # zeros drop rows, 2-3 repeat them
    got = weighted_metric(task, name)(y, pred, counts)
    assert got.shape == (3,)
    for row, value in zip(counts, got, strict=True):
        repeat = row.astype(np.int64)
        expected = point_metric(task, name, np.repeat(y, repeat), np.repeat(pred, repeat, axis=0))
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", METRICS_BY_TASK["binary"])
def test_binary_metrics_with_tied_scores_match_sklearn(name: str) -> None:
    y, pred = _binary(np.random.default_rng(21), tied=True)
    assert len(np.unique(pred)) <= 11  # heavily tied
    assert (pred == 0.5).any()  # threshold edge is exercised
    ones = weighted_metric("binary", name)(y, pred, np.ones((1, len(y))))
    assert ones[0] == pytest.approx(point_metric("binary", name, y, pred), rel=1e-9, abs=1e-12)
    counts = np.random.default_rng(22).integers(0, 5, (4, len(y))).astype(np.float64)
    got = weighted_metric("binary", name)(y, pred, counts)
    for row, value in zip(counts, got, strict=True):
        repeat = row.astype(np.int64)
        expected = point_metric("binary", name, np.repeat(y, repeat), np.repeat(pred, repeat))
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("task", "name"), CASES, ids=[_case_id(c) for c in CASES])
def test_prepared_metric_equals_the_weighted_form_chunk_after_chunk(task: TaskKind, name: str) -> None:
    y, pred = _dataset(task, seed=14)
    if task == "binary":
        y, pred = _binary(np.random.default_rng(15), tied=True)
    prepared = prepared_metric(task, name, y, pred)
    for counts in resample_counts(len(y), 40, seed=16):
        np.testing.assert_allclose(prepared(counts), weighted_metric(task, name)(y, pred, counts), rtol=1e-12)


def test_paired_bounds_are_the_same_on_every_run() -> None:
    # 8,000 rows x 2,000 resamples is four chunks, scored on several threads: the answer must not
    # depend on which finishes first.
    rng = np.random.default_rng(17)
    y = rng.integers(0, 2, 8_000)
    challenger = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.5, len(y)))))
    champion = np.clip(challenger + rng.normal(0, 0.1, len(y)), 0, 1)
    metrics = ["roc_auc", "log_loss"]
    runs = [
        paired_bounds("binary", metrics, y, champion, challenger, confidence=0.9, resamples=2_000, seed=3)
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0]["roc_auc"].defined == 2_000


def test_roc_auc_counts_ties_as_half() -> None:
    y = np.array([0, 1, 0, 1])
    pred = np.array([0.3, 0.3, 0.2, 0.8])
    # Pairs (neg, pos): (0.3, 0.3) tie -> 0.5, (0.3, 0.8) -> 1, (0.2, 0.3) -> 1, (0.2, 0.8) -> 1.
    assert point_metric("binary", "roc_auc", y, pred) == pytest.approx(3.5 / 4)
    weights = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 1.0, 0.0, 1.0]])
    got = weighted_metric("binary", "roc_auc")(y, pred, weights)
    # Second row: negatives {0.3 x2}, positives {0.3, 0.8}: (2 * 0.5 + 2 * 1) / 4 = 0.75.
    np.testing.assert_allclose(got, [0.875, 0.75], rtol=1e-12)


def test_roc_auc_on_one_class_is_nan() -> None:
    pred = np.random.default_rng(31).random(50)
    for label in (0, 1):
        y = np.full(50, label)
        assert np.isnan(point_metric("binary", "roc_auc", y, pred))
        assert np.isnan(weighted_metric("binary", "roc_auc")(y, pred, np.ones((1, 50)))[0])
    # Weights that drop every positive leave one class in the resample: NaN there, finite elsewhere.
    y = np.r_[np.zeros(25, dtype=np.int64), np.ones(25, dtype=np.int64)]
    weights = np.vstack([np.r_[np.ones(25), np.zeros(25)], np.ones(50)])
    got = weighted_metric("binary", "roc_auc")(y, pred, weights)
    assert np.isnan(got[0])
    assert np.isfinite(got[1])
    assert np.isnan(point_metrics("binary", np.zeros(50, dtype=np.int64), pred)["roc_auc"])


def test_point_metrics_cover_every_metric_of_the_task() -> None:
    for task, names in METRICS_BY_TASK.items():
        y, pred = _dataset(task, seed=41)
        values = point_metrics(task, y, pred)
        assert tuple(values) == names
        assert all(np.isfinite(v) for v in values.values())


def test_orientation_sensitive_values_are_plausible() -> None:
    y, pred = _regression(np.random.default_rng(51))
    ones = np.ones((1, ROWS))
    rmse = weighted_metric("regression", "rmse")(y, pred, ones)[0]
    assert rmse == pytest.approx(float(np.sqrt(np.mean((y - pred) ** 2))), rel=1e-12)
    assert 3.0 < rmse < 5.0  # noise sd is 4


def test_resample_counts_rows_sum_to_n() -> None:
    chunks = list(resample_counts(57, 300, seed=5))
    counts = np.vstack(chunks)
    assert counts.shape == (300, 57)
    assert counts.dtype == np.float64
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(300, 57.0))
    assert (counts >= 0).all()
    assert np.array_equal(counts, np.round(counts))
    # Each row is drawn once per resample on average (per-row sd over 300 resamples is about 0.058).
    assert counts.mean() == pytest.approx(1.0)
    per_row = counts.mean(axis=0)
    assert per_row.min() > 0.75
    assert per_row.max() < 1.25


def test_resample_counts_spans_chunks_and_keeps_row_sums() -> None:
    rows = 5_000  # 4,000,000 cells per chunk -> 800 resamples per chunk
    chunks = list(resample_counts(rows, 1_000, seed=6))
    assert [c.shape for c in chunks] == [(800, rows), (200, rows)]
    for chunk in chunks:
        np.testing.assert_array_equal(chunk.sum(axis=1), np.full(len(chunk), float(rows)))


def test_resample_counts_is_deterministic_for_a_seed() -> None:
    first = np.vstack(list(resample_counts(40, 200, seed=123)))
    second = np.vstack(list(resample_counts(40, 200, seed=123)))
    np.testing.assert_array_equal(first, second)


def test_resample_counts_differs_across_seeds() -> None:
    first = np.vstack(list(resample_counts(40, 200, seed=123)))
    other = np.vstack(list(resample_counts(40, 200, seed=124)))
    assert not np.array_equal(first, other)
    # Not merely a permutation of resamples: most resamples differ row by row.
    assert (first != other).any(axis=1).mean() > 0.95


def test_weighted_r2_on_constant_target_is_nan_like_point_metric() -> None:
    y = np.full(10, 0.1)
    pred = y + 0.01
    assert np.isnan(point_metric("regression", "r2", y, pred))
    assert np.isnan(weighted_metric("regression", "r2")(y, pred, np.ones((1, 10)))[0])


def test_macro_f1_averages_only_classes_that_occur() -> None:
    # Four probability columns, but class 3 is neither a label nor ever predicted: sklearn averages
    # over the labels present in y or the predictions, and so must the weighted form.
    rng = np.random.default_rng(61)
    y, pred = _multiclass(rng)
    y = np.minimum(y, 2)
    pred[:, 3] = 0.0
    pred = pred / pred.sum(axis=1, keepdims=True)
    assert 3 not in y and 3 not in pred.argmax(axis=1)
    expected = point_metric("multiclass", "macro_f1", y, pred)
    got = weighted_metric("multiclass", "macro_f1")(y, pred, np.ones((1, len(y))))[0]
    assert got == pytest.approx(expected, rel=1e-9)
    # A resample that drops every row of class 2 (label and prediction) averages over classes 0 and 1 only.
    keep = (y != 2) & (pred.argmax(axis=1) != 2)
    dropped = weighted_metric("multiclass", "macro_f1")(y, pred, keep[None, :].astype(np.float64))[0]
    assert dropped == pytest.approx(point_metric("multiclass", "macro_f1", y[keep], pred[keep]), rel=1e-9)
