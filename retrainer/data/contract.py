"""The data contract: what a labelled batch must look like before it may be stored.

:func:`read_table` parses raw bytes with polars; :func:`check_batch` casts the frame to the model's
types and collects *every* violated rule, so one rejected file tells the user everything wrong with
it at once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from retrainer.config import ModelConfig
from retrainer.errors import DataError, Violation

SUPPORTED_SUFFIXES = (".parquet", ".csv")
# Floats below this magnitude hold whole numbers exactly, so their integer spelling is unambiguous.
_EXACT_INTEGERS = 2**53
_EXAMPLES = 3
EXAMPLE_CHARS = 80
"""Longest raw value quoted in a violation; a longer one is cut and marked with its full length."""
_DETAIL_CHARS = 300


def bounded(text: str, limit: int = _DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked with its full length when cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


@dataclass(frozen=True)
class Schema:
    """The columns a model reads from a batch."""

    features: list[str]
    categorical: dict[str, list[str]]
    target: str
    time_column: str | None

    @property
    def numeric(self) -> list[str]:
        """Features that are cast to Float64."""
        return [f for f in self.features if f not in self.categorical]

    def present_in(self, columns: list[str]) -> Schema:
        """This schema restricted to the feature and time columns that ``columns`` holds."""
        features = [f for f in self.features if f in columns]
        categorical = {c: levels for c, levels in self.categorical.items() if c in columns}
        time_column = self.time_column if self.time_column in columns else None
        return Schema(features, categorical, self.target, time_column)

    @property
    def required(self) -> list[str]:
        """Every column a batch must carry."""
        extra = [self.time_column] if self.time_column else []
        return [*self.features, self.target, *extra]

    @property
    def observed(self) -> list[str]:
        """Every column an unlabelled inference batch must carry, besides the model's id column."""
        return [c for c in self.required if c != self.target]


def schema_for(config: ModelConfig, columns: list[str], pinned: list[str] | None) -> Schema:
    """Return the model's schema; undeclared features default to the pinned list, else all columns.

    Args:
        config: The model's config.
        columns: Columns of the batch at hand (used only when no feature list is known yet).
        pinned: Feature list recorded by the first accepted batch, if any.
    """
    reserved = config.reserved_columns
    features = config.features or pinned or [c for c in columns if c not in reserved]
    return Schema(features, dict(config.categorical), config.target, config.time_column)


def read_table(data: bytes, source: str, text_columns: tuple[str, ...] = ()) -> pl.DataFrame:
    """Parse a Parquet or CSV (UTF-8) file's bytes.

    ``text_columns`` of a CSV are read as written, never inferred (an id ``007`` stays ``007``).

    Raises:
        DataError: unsupported extension, undecodable text, or a file polars cannot parse.
    """
    suffix = Path(source).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(source, [Violation("unsupported_format", f"expected one of {SUPPORTED_SUFFIXES}")])
    if suffix == ".csv":
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            detail = f"not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
            raise DataError(source, [Violation("encoding", detail)]) from None
    try:
        if suffix == ".csv":
            overrides = dict.fromkeys(text_columns, pl.String)
            return pl.read_csv(io.BytesIO(data), infer_schema_length=10_000, schema_overrides=overrides)
        return pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(source, [Violation("unreadable", bounded(first_line))]) from None


def check_batch(
    frame: pl.DataFrame, schema: Schema, config: ModelConfig, source: str, observed: list[Violation] | None = None
) -> pl.DataFrame:
    """Cast ``frame`` to the model's types and check every contract rule.

    Missing columns are reported together with whatever is wrong in the columns that are present.

    Args:
        frame: The parsed file.
        schema: The model's schema.
        config: The model's config.
        source: The file, as errors name it.
        observed: For an unlabelled inference batch (:func:`check_inference`), the violations of
            its id and target rules: the target is then not required, and these are reported with
            every other rule.

    Returns:
        The typed frame: numeric features Float64, categorical features String, time column
        Datetime, target Float64 (regression) or the class-label type. Other columns are kept as is.

    Raises:
        DataError: listing every violated rule with its file, column and numbers.
    """
    required = schema.required if observed is None else schema.observed
    violations = [
        *(observed or []),
        *(
            Violation("missing_column", "required column is absent", column)
            for column in required
            if column not in frame.columns
        ),
    ]
    if frame.height == 0:
        # Without rows every column rule holds vacuously (or, like all_null, fails vacuously).
        raise DataError(source, [*violations, Violation("empty", "the batch has no rows")])
    nested = _nested_columns(frame, schema)
    violations += [
        Violation("nested_type", f"{frame.schema[c]} values cannot be read as {_kind_of(c, schema)}", c) for c in nested
    ]
    temporal = _temporal_numbers(frame, schema)
    violations += [
        Violation("not_numeric_type", f"{frame.schema[c]} values are times, not numbers: declare the column", c)
        for c in temporal
    ]
    frame = frame.drop([*nested, *temporal])
    present = schema.present_in(frame.columns)
    typed = frame.with_columns(_casts(frame, present, config))
    for check in _COLUMN_CHECKS:
        violations.extend(check(frame, typed, present, config))
    if violations:
        raise DataError(source, violations)
    return typed


def check_inference(frame: pl.DataFrame, schema: Schema, config: ModelConfig, source: str) -> pl.DataFrame:
    """Cast an unlabelled inference batch and check the contract without the target, plus its id rules.

    The model's ``id_column`` must be present, never null and unique within the batch; it is typed
    as text, spelled as :func:`level_text` spells levels (so ``42``, ``42.0`` and ``"42"`` are one
    id). The target column must be absent: labelled rows go through ingest, and an inference batch
    carrying labels would mix the two kinds of data (rule ``target_in_inference``).

    Raises:
        DataError: every violated rule, as :func:`check_batch`.
    """
    id_column = config.id_column
    if id_column is None:
        raise DataError(source, [Violation("no_id_column", "the model has no id_column: set one to observe traffic")])
    violations = _id_rules(frame, id_column)
    if schema.target in frame.columns:
        detail = "an inference batch must not carry the target: ingest labelled rows with `retrainer ingest`"
        violations.append(Violation("target_in_inference", detail, schema.target))
    if id_column in schema.features:
        detail = "the id column is one of the model's pinned features (batches ingested before id_column was set)"
        violations.append(Violation("id_is_feature", detail, id_column))
    typed = check_batch(frame, schema, config, source, observed=violations)
    # From the file as read: a cast of the typed frame would spell the ids otherwise.
    return typed.with_columns(frame.select(id_text(id_column, frame.schema[id_column]))[id_column])


def check_labels(frame: pl.DataFrame, config: ModelConfig, source: str) -> pl.DataFrame:
    """Type a label file (id as text, target as the model's labels, label time) and check every rule at once.

    Raises:
        DataError: no id column configured; the id or target absent; null or repeated ids; labels
            missing or outside the classes; an unreadable label time.
    """
    column, target = config.id_column, config.target
    if column is None:
        raise DataError(source, [Violation("no_id_column", "the model has no id_column: set one to join labels")])
    violations = _id_rules(frame, column)
    if target not in frame.columns:
        violations.append(Violation("missing_column", "required label column is absent", target))
    if violations or frame.height == 0:
        raise DataError(source, violations or [Violation("empty", "the file has no rows")])
    typed = frame.with_columns(id_text(column, frame.schema[column]), _target_cast(config))
    violations += _target_rules(frame, typed, Schema([], {}, target, None), config)
    time_column = config.labels.time_column
    if time_column is not None and time_column in frame.columns:
        typed = typed.with_columns(_as_datetime(frame, time_column))
        unreadable = typed[time_column].is_null() & frame[time_column].is_not_null()
        violations += flag_rows(frame, time_column, unreadable, "not_castable", "value(s) are not a timestamp")
    if violations:
        raise DataError(source, violations)
    kept = [column, target, *([time_column] if time_column and time_column in typed.columns else [])]
    return typed.select(kept)


def id_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """An id column as text, spelled alike whatever dtype carried it (see :func:`level_text`)."""
    return level_text(column, dtype).alias(column)


def _id_rules(frame: pl.DataFrame, column: str) -> list[Violation]:
    """The id column's rules: present, scalar, never null, unique in the file."""
    if column not in frame.columns:
        return [Violation("missing_column", "required id column is absent", column)]
    if _not_scalar(frame.schema[column]) or frame.schema[column].is_temporal():
        return [Violation("nested_type", f"{frame.schema[column]} values cannot be ids", column)]
    ids = frame.select(id_text(column, frame.schema[column]))[column]
    violations = []
    if ids.null_count():
        violations.append(Violation("id_missing", f"{ids.null_count()} row(s) have no id", column))
    repeated = ids.is_duplicated() & ids.is_not_null()
    violations += flag_rows(
        frame.with_columns(ids), column, repeated, "duplicate_id", "row(s) repeat an id of this file"
    )
    return violations


def _nested_columns(frame: pl.DataFrame, schema: Schema) -> list[str]:
    """Required columns holding lists, arrays, structs or objects, which no cast can make scalar."""
    return [c for c in schema.required if c in frame.columns and _not_scalar(frame.schema[c])]


def _temporal_numbers(frame: pl.DataFrame, schema: Schema) -> list[str]:
    """Numeric features holding dates, times or durations, whose numbers depend on the file's time unit."""
    return [c for c in schema.numeric if c in frame.columns and frame.schema[c].is_temporal()]


def level_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A categorical column as the text of its levels, spelled the same whatever dtype carried it.

    Booleans read ``true``/``false``; a whole float reads as the integer it is (``1.0`` → ``1``, as
    an integer column with gaps arrives from pandas); NaN is missing. The serving code stored with
    each model spells values the same way (``retrainer.model.registry.serving``).
    """
    values = pl.col(column)
    if not dtype.is_float():
        return values.cast(pl.String)
    whole = values.is_finite() & (values == values.floor()) & (values.abs() < _EXACT_INTEGERS)
    text = pl.when(whole).then(values.cast(pl.Int64).cast(pl.String)).otherwise(values.cast(pl.String))
    return pl.when(values.is_nan()).then(None).otherwise(text).alias(column)


def _not_scalar(dtype: pl.DataType) -> bool:
    return dtype.is_nested() or dtype == pl.Object


def _kind_of(column: str, schema: Schema) -> str:
    if column == schema.time_column:
        return "a timestamp"
    if column == schema.target:
        return "a label"
    return "a category" if column in schema.categorical else "a number"


def _casts(frame: pl.DataFrame, schema: Schema, config: ModelConfig) -> list[pl.Expr]:
    casts = [pl.col(c).cast(pl.Float64, strict=False) for c in schema.numeric]
    casts += [level_text(c, frame.schema[c]) for c in schema.categorical]
    if schema.time_column:
        casts.append(_as_datetime(frame, schema.time_column))
    if schema.target in frame.columns:
        casts.append(_target_cast(config))
    return casts


def _as_datetime(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A time column as naive UTC (the clock every tolerance and lag is measured on).

    Text is read as ISO 8601 with or without an offset (``Z``, ``+05:00``), the two kinds mixed in
    one column if need be; a time-zone-aware timestamp is converted; anything else is unreadable.
    """
    dtype = frame.schema[column]
    if dtype == pl.String:
        text = pl.col(column)
        naive = text.str.to_datetime(strict=False, time_unit="us")
        # polars infers one format per column from its first value: a second pass reads the offsets.
        offset = text.str.to_datetime(format="%+", strict=False, time_unit="us", time_zone="UTC")
        return pl.coalesce(naive, offset.dt.replace_time_zone(None)).alias(column)
    if dtype.is_temporal():
        return pl.col(column).cast(pl.Datetime("us"))
    return pl.lit(None, dtype=pl.Datetime("us")).alias(column)


def _target_cast(config: ModelConfig) -> pl.Expr:
    target = pl.col(config.target)
    if config.task == "regression":
        return target.cast(pl.Float64, strict=False)
    if all(isinstance(label, int) for label in config.class_labels):
        number = target.cast(pl.Float64, strict=False)
        whole = number.is_finite() & (number == number.floor())
        return pl.when(whole).then(number.cast(pl.Int64, strict=False)).otherwise(None).alias(config.target)
    return target.cast(pl.String)


def _newly_null(frame: pl.DataFrame, typed: pl.DataFrame, column: str) -> pl.Series:
    return typed[column].is_null() & frame[column].is_not_null()


def flag_rows(frame: pl.DataFrame, column: str, bad: pl.Series, rule: str, what: str) -> list[Violation]:
    """One violation for the rows in ``bad``, with their count and a few raw examples."""
    if not bad.any():
        return []
    shown = frame[column].filter(bad).cast(pl.String).unique(maintain_order=True).head(_EXAMPLES).to_list()
    examples = ", ".join(repr(bounded(value, EXAMPLE_CHARS) if value is not None else None) for value in shown)
    return [Violation(rule, f"{bad.sum()} {what}, e.g. {examples}", column)]


def _castability(frame: pl.DataFrame, typed: pl.DataFrame, schema: Schema, _: ModelConfig) -> list[Violation]:
    wanted = dict.fromkeys(schema.numeric, "a number")
    if schema.time_column:
        wanted[schema.time_column] = "a timestamp"
    return [
        violation
        for column, kind in wanted.items()
        for violation in flag_rows(
            frame, column, _newly_null(frame, typed, column), "not_castable", f"value(s) are not {kind}"
        )
    ]


def _all_null_features(_: pl.DataFrame, typed: pl.DataFrame, schema: Schema, __: ModelConfig) -> list[Violation]:
    return [
        Violation("all_null", f"every one of {typed.height} values is null", column)
        for column in schema.features
        if typed[column].null_count() == typed.height
    ]


def _target_rules(frame: pl.DataFrame, typed: pl.DataFrame, schema: Schema, config: ModelConfig) -> list[Violation]:
    column = schema.target
    if column not in frame.columns:
        return []
    raw_nulls = frame[column].is_null()
    violations = []
    if raw_nulls.any():
        violations.append(Violation("target_missing", f"{raw_nulls.sum()} row(s) have no label", column))
    uncastable = _newly_null(frame, typed, column)
    if config.task == "regression":
        not_finite = uncastable | (typed[column].is_not_null() & ~typed[column].is_finite())
        return violations + flag_rows(frame, column, not_finite, "target_not_finite", "label(s) are not finite numbers")
    labels = typed[column].cast(pl.String)
    unknown = uncastable | (labels.is_not_null() & ~labels.is_in(sorted({str(c) for c in config.class_labels})))
    return violations + flag_rows(
        frame, column, unknown, "unknown_class", f"label(s) outside classes {config.class_labels}"
    )


def _time_rules(_: pl.DataFrame, typed: pl.DataFrame, schema: Schema, config: ModelConfig) -> list[Violation]:
    column = schema.time_column
    if column is None:
        return []
    times = _naive_utc(typed[column])
    if times.null_count() == typed.height:
        return [Violation("all_null", f"every one of {typed.height} timestamps is null or unreadable", column)]
    tolerance = timedelta(seconds=config.ingest.time_tolerance_seconds)
    limit = datetime.now(UTC).replace(tzinfo=None) + tolerance
    future = times.is_not_null() & (times > limit)
    what = f"timestamp(s) later than now + ingest.time_tolerance_seconds ({limit.isoformat(timespec='seconds')})"
    return flag_rows(typed, column, future, "future_timestamp", what)


def _naive_utc(times: pl.Series) -> pl.Series:
    """``times`` as naive UTC, the clock the tolerance is measured on."""
    if isinstance(times.dtype, pl.Datetime) and times.dtype.time_zone is not None:
        return times.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return times


_CheckFn = Callable[[pl.DataFrame, pl.DataFrame, Schema, ModelConfig], list[Violation]]
_COLUMN_CHECKS: tuple[_CheckFn, ...] = (_castability, _all_null_features, _time_rules, _target_rules)
