"""The window a check covers: which accepted batches, their rows, and the champion's predictions on them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from retrainer.config import DriftWindow
from retrainer.data.contract import Schema
from retrainer.data.store import BatchRecord, BatchStore, Manifest
from retrainer.errors import DataError, NoDataError, Violation
from retrainer.model.registry import Registry, VersionInfo
from retrainer.monitor.incidents import IncidentBook
from retrainer.monitor.reference import served_predictions


@dataclass(frozen=True)
class Window:
    """The batches a check covers, oldest first: labelled batches, or unlabelled inference traffic.

    ``kind`` is ``labelled`` or ``inference``; an inference window has no target, so the check
    measures drift (features and predictions) but not performance.
    """

    batches: list[BatchRecord]
    kind: str = "labelled"

    @property
    def labelled(self) -> bool:
        """Whether the window is labelled data (not inference traffic)."""
        return self.kind == "labelled"

    @property
    def batch_ids(self) -> list[str]:
        """Ids of the batches."""
        return [b.batch_id for b in self.batches]

    @property
    def label_lag_seconds(self) -> float | None:
        """The longest median label lag of the window's batches of late labels (None when it has none)."""
        lags = [b.lineage.get("label_lag_seconds", {}).get("median") for b in self.batches]
        known = [float(lag) for lag in lags if isinstance(lag, int | float)]
        return max(known) if known else None

    @property
    def label(self) -> str:
        """How error messages name the window."""
        what = "window" if self.labelled else "inference window"
        return f"{what} {','.join(self.batch_ids)}"


@dataclass(frozen=True)
class WindowRows:
    """A window's rows and the champion's raw predictions on them, row for row."""

    rows: pl.DataFrame
    predictions: np.ndarray


def select_window(
    manifest: Manifest, window: DriftWindow, last_checked: str | None, batch_id: str | None = None
) -> Window | None:
    """Pick the batches to check; ``None`` when ``since_last_check`` finds nothing new.

    Args:
        manifest: The model's accepted batches.
        window: The configured window (mode and number of batches).
        last_checked: The newest batch of the previous check, if any.
        batch_id: Check this accepted batch alone instead.

    Raises:
        NoDataError: no accepted batch yet, or ``batch_id`` is not an accepted batch.
    """
    batches = manifest.batches
    if not batches:
        raise NoDataError(manifest.model, "no accepted batch to check yet")
    if batch_id is not None:
        chosen = [b for b in batches if b.batch_id == batch_id]
        if not chosen:
            raise NoDataError(manifest.model, f"batch {batch_id!r} is not an accepted batch")
        return Window(chosen)
    if window.mode == "since_last_check" and last_checked is not None:
        ids = [b.batch_id for b in batches]
        newer = batches[ids.index(last_checked) + 1 :] if last_checked in ids else batches
        return Window(newer[-window.batches :]) if newer else None
    return Window(batches[-window.batches :])


def next_window(
    store: BatchStore, book: IncidentBook, window: DriftWindow, batch_id: str | None = None
) -> Window | None:
    """:func:`select_window` over the store's manifest, after the last batch the model's incident book checked.

    Raises:
        NoDataError: as :func:`select_window`.
    """
    return select_window(store.manifest(), window, book.read().last_checked_batch, batch_id)


def traffic_window(traffic: BatchStore, window: DriftWindow, batch_id: str | None = None) -> Window:
    """The inference batch ``batch_id``, or the newest ``window.batches`` inference batches.

    Raises:
        NoDataError: no inference batch observed yet, or ``batch_id`` is not one.
    """
    chosen = select_window(traffic.manifest(), window.model_copy(update={"mode": "latest"}), None, batch_id)
    if chosen is None:
        raise NoDataError(traffic.model, "no inference batch observed yet")
    return Window(chosen.batches, kind="inference")


def read_window(store: BatchStore, window: Window, schema: Schema) -> pl.DataFrame:
    """The window's rows, oldest batch first: every feature, and the target where any batch stores it.

    A batch without the target reads as nulls there; a window none of whose batches stores the
    target has no target column (its performance is not measured). A feature no batch stores is
    left out, so the check can name it.
    """
    stored = set().union(*(b.columns for b in window.batches))
    return store.read(window.batches, [c for c in [*schema.features, schema.target] if c in stored])


def predict_window(
    store: BatchStore, registry: Registry, champion: VersionInfo, window: Window, schema: Schema
) -> WindowRows:
    """Read the window once (:func:`read_window`) and predict it with the champion, as served.

    Raises:
        DataError: the window has no rows or lacks feature columns (:func:`require_features`).
        RegistryError: the champion cannot be loaded.
    """
    rows = read_window(store, window, schema)
    require_features(rows, schema, window.label)
    return WindowRows(rows, served_predictions(registry, champion.model, champion.version, rows, schema.features))


def require_features(rows: pl.DataFrame, schema: Schema, source: str) -> None:
    """Refuse a window that cannot be checked: absent feature columns (all named), or no row.

    Args:
        rows: The window's rows.
        schema: The model's schema.
        source: How the error names the window (:attr:`Window.label`).

    Raises:
        DataError: a ``missing_column`` violation per feature column absent from ``rows``; else
            ``empty_window`` when it has no row.
    """
    missing = [c for c in schema.features if c not in rows.columns]
    if missing:
        violations = [Violation("missing_column", "feature column absent from the window", c) for c in missing]
        raise DataError(source, violations)
    if rows.height == 0:
        raise DataError(source, [Violation("empty_window", "the window has no rows to check")])
