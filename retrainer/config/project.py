"""The per-model YAML file: model configs, their policies and the webhook's limits.

The YAML file (``retrainer.yaml`` in the working directory, or the path in ``RETRAINER_CONFIG``)
maps model names to :class:`ModelConfig`. Every model and sub-model forbids unknown keys, so a typo
is an error that names the key and the file instead of a silently ignored setting.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from retrainer.config.drift_methods import ColumnKind, method_problem
from retrainer.config.metrics import DEFAULT_PRIMARY, METRICS_BY_TASK, TaskKind
from retrainer.errors import ConfigError, UnknownModelError

ModelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
PromotionMode = Literal["enforce", "dry_run", "disabled"]
ClassLabel = int | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LightGBMParams(_Strict):
    """LightGBM hyper-parameters; ``n_estimators`` is the ceiling that early stopping works under."""

    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2, le=131072)
    n_estimators: int = Field(500, ge=1, le=100_000)
    min_child_samples: int = Field(20, ge=1)
    feature_fraction: float = Field(1.0, gt=0, le=1)
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    bagging_freq: int = Field(0, ge=0)
    lambda_l2: float = Field(0.0, ge=0)
    max_bin: int = Field(255, ge=2)
    early_stopping_rounds: int = Field(50, ge=1)
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    num_threads: int = Field(1, ge=0, description="0 lets LightGBM pick; 1 is fastest on busy 2-core hosts")
    seed: int = 42


class WindowConfig(_Strict):
    """Training windows: the newest ``batches`` accepted batches before the holdout, and shorter candidates.

    Each entry of ``candidates`` is a number of older batches a candidate challenger trains on, on
    top of the holdout batches' earlier rows (see :class:`HoldoutConfig`). Every candidate is judged
    on the same holdout; the one most surely better than the champion is the challenger, and the
    confidence is corrected for the choice (see ``retrainer.cycle.windows``). The default ``[0,
    batches]`` pits the newest data alone against the whole window: the first adapts within one
    batch of a change, the second wins on stable data.

    The last ``earlier_champions`` champions before the current one are candidates too, judged as
    they are on the same holdout (only those that never trained on its rows): when the data returns
    to an earlier concept, the champion of that concept is brought back instead of a model of the
    newest rows alone.
    """

    batches: int = Field(10, ge=1)
    candidates: list[int] | None = Field(
        None, description="Older batches each candidate trains on (default: 0 and batches); at most 4 candidates"
    )
    earlier_champions: int = Field(
        2, ge=0, le=3, description="Champions before the current one judged again as candidates, as they are (0: none)"
    )

    @model_validator(mode="after")
    def _candidates_fit(self) -> WindowConfig:
        chosen = self.candidates
        if chosen is None:
            return self
        if not chosen or len(chosen) > 4 or len(set(chosen)) != len(chosen):
            raise ValueError("window.candidates needs 1 to 4 distinct entries")
        if any(k < 0 or k > self.batches for k in chosen):
            raise ValueError(f"window.candidates must be between 0 and window.batches ({self.batches})")
        return self

    @property
    def candidate_batches(self) -> list[int]:
        """The candidates' numbers of older batches, widest first (the widest wins ties)."""
        return sorted(set(self.candidates if self.candidates is not None else [0, self.batches]), reverse=True)


class HoldoutConfig(_Strict):
    """Holdout: the latest rows of the newest ``batches`` batches; with too few batches, a seeded ``fraction``.

    ``newest_share`` of the holdout batches' rows, the latest by the time column (by file order
    without one), judge the candidates; the earlier rows train them, so a challenger can learn from
    the newest data the same day. 1 holds out whole batches.
    """

    batches: int = Field(1, ge=1)
    fraction: float = Field(0.25, gt=0, lt=1)
    newest_share: float = Field(
        0.5, gt=0, le=1, description="Share of the holdout batches' rows (the latest) held out; the rest trains"
    )
    seed: int = 7


class PromotionPolicy(_Strict):
    """The rules a challenger must pass to replace the champion. See ``retrainer.judge.policy``."""

    metric: str | None = Field(None, description="Primary metric; default per task")
    min_improvement: float = Field(0.0, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    guardrails: dict[str, float] = Field(default_factory=dict)
    floors: dict[str, float] = Field(default_factory=dict)
    slice_tolerance: float = Field(0.02, ge=0)
    min_slice_rows: int = Field(200, ge=1)
    min_holdout_rows: int = Field(100, ge=1)
    resamples: int = Field(2000, ge=1000, le=100_000)
    seed: int = 20240917
    large_sample_rows: int | None = Field(
        50_000,
        ge=1000,
        description="From this many holdout rows, large-sample bounds replace the bootstrap where they exist; "
        "null: always bootstrap",
    )
    mode: PromotionMode = "enforce"
    refit: bool = Field(
        True,
        description="Before promoting, refit the judged recipe on its window plus the holdout (checked; see "
        "retrainer.cycle.refit)",
    )

    @field_validator("guardrails")
    @classmethod
    def _tolerances_are_non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name, tolerance in value.items() if tolerance < 0]
        if bad:
            raise ValueError(f"guardrail tolerances must be >= 0: {', '.join(bad)}")
        return value


DriftWindowMode = Literal["latest", "since_last_check"]


class DriftWindow(_Strict):
    """Which accepted batches a drift check looks at.

    ``latest``: the newest ``batches`` batches. ``since_last_check``: every batch accepted since the
    previous check (at least one), capped at the newest ``batches``.
    """

    mode: DriftWindowMode = "latest"
    batches: int = Field(1, ge=1)


class IncidentPolicy(_Strict):
    """When drifting checks become an incident. See ``retrainer.monitor.incidents``."""

    k: int = Field(1, ge=1, description="Drifted checks needed among the last n (the latest must drift)")
    n: int = Field(1, ge=1, description="How many recent checks are counted")
    cooldown_seconds: float = Field(
        3600.0, ge=0, description="No new incident this long after a promotion or retrain start"
    )
    retrain_timeout_seconds: float = Field(
        6 * 3600.0, gt=0, description="A retrain start older than this no longer counts as in flight"
    )

    @model_validator(mode="after")
    def _k_within_n(self) -> IncidentPolicy:
        if self.k > self.n:
            raise ValueError(f"incident k ({self.k}) must not exceed n ({self.n})")
        return self


class DriftConfig(_Strict):
    """Drift monitoring of one model: Evidently's drift parameters plus retrainer's incident rules.

    Methods and thresholds are Evidently's names (defaults: Evidently's own choice per column).
    """

    method: str | None = None
    num_method: str | None = None
    cat_method: str | None = None
    per_column_method: dict[str, str] = Field(default_factory=dict)
    threshold: float | None = Field(None, gt=0)
    per_column_threshold: dict[str, float] = Field(default_factory=dict)
    drift_share: float = Field(0.5, gt=0, le=1, description="Dataset drift when this share of features drifts")
    performance_tolerance: float = Field(
        0.05, ge=0, description="Allowed drop of the primary metric on labelled windows vs the holdout figure"
    )
    performance_min_rows: int = Field(
        200, ge=1, description="Labelled rows a window needs before its performance is judged"
    )
    reference_rows: int = Field(200_000, ge=1000, description="Cap of the champion's reference sample")
    reference_seed: int = 11
    fast_above: int = Field(
        50_000, ge=1000, description="Above this many rows per side, statistics are computed in polars"
    )
    report_rows: int = Field(5_000, ge=500, description="Rows per side drawn for the HTML report on big data")
    report_columns: int = Field(8, ge=1, description="Features the HTML report draws on big data, most drifted first")
    window: DriftWindow = DriftWindow()
    incident: IncidentPolicy = IncidentPolicy()

    @field_validator("per_column_threshold")
    @classmethod
    def _positive_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [name for name, threshold in value.items() if threshold <= 0]
        if bad:
            raise ValueError(f"per-column thresholds must be > 0: {', '.join(bad)}")
        return value

    @model_validator(mode="after")
    def _methods_fit_their_kind(self) -> DriftConfig:
        named: list[tuple[str, str | None, ColumnKind]] = [
            ("num_method", self.num_method, "numerical"),
            ("cat_method", self.cat_method, "categorical"),
        ]
        problems = [
            f"{key}: {problem}" for key, method, kind in named if method and (problem := method_problem(method, kind))
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def method_problems(self, categorical: set[str], has_numerical: bool) -> list[str]:
        """Methods that cannot judge the columns they would apply to (``method`` and per column).

        Args:
            categorical: The model's categorical features; every other feature is numerical.
            has_numerical: Whether the model has (or may have) numerical features.
        """
        problems = []
        if self.method:
            covered: list[ColumnKind] = []
            if has_numerical and not self.num_method:
                covered.append("numerical")
            if categorical and not self.cat_method:
                covered.append("categorical")
            found = [problem for kind in covered if (problem := method_problem(self.method, kind))]
            if found:
                problems.append(f"method: {found[0]}")  # an unknown name fails both kinds: say it once
        for column, method in self.per_column_method.items():
            problem = method_problem(method, "categorical" if column in categorical else "numerical")
            if problem:
                problems.append(f"per_column_method.{column}: {problem}")
        return problems


class AutomationConfig(_Strict):
    """How Prefect runs the model's flows when served or deployed (see ``deployments/``).

    The monitor runs on ``monitor_cron`` (or every ``monitor_interval_seconds``) and whenever a batch
    arrives; with ``retrain_on_new_data`` a new batch starts a retrain directly instead.
    """

    monitor_cron: str | None = Field("0 * * * *", description="Cron schedule of the monitor; null: none")
    monitor_interval_seconds: float | None = Field(None, gt=0, description="Interval schedule instead of cron")
    timezone: str = "UTC"
    retrain_on_new_data: bool = False

    @model_validator(mode="after")
    def _one_schedule(self) -> AutomationConfig:
        if self.monitor_cron and self.monitor_interval_seconds:
            raise ValueError("set monitor_cron or monitor_interval_seconds, not both")
        return self


class IngestConfig(_Strict):
    """Limits the ingest enforces on every incoming file of the model, before it is parsed."""

    max_file_bytes: int = Field(
        1024**3, ge=1, description="Larger files are refused unread (checked with stat before opening)"
    )
    time_tolerance_seconds: float = Field(
        86_400.0, ge=0, description="Timestamps later than now plus this are refused as from the future"
    )


class LabelsConfig(_Strict):
    """Unlabelled inference traffic and the labels that join it later, by the model's ``id_column``.

    ``retrainer observe`` stores inference batches (features, time and id, no target); ``retrainer
    label`` takes ``(id, target)`` files and joins them to the traffic by id. A label whose id has
    not been observed yet waits, and joins when its row arrives; after ``pending_wait_seconds`` it
    is quarantined as an unknown id.
    """

    time_column: str | None = Field(
        None, description="Column of a label file telling when each label became known (default: when it arrived)"
    )
    prediction_column: str | None = Field(
        None, description="Inference column with the prediction as served (kept, never a feature)"
    )
    pending_wait_seconds: float = Field(
        30 * 86_400.0, ge=0, description="How long a label waits for its inference row before it is quarantined"
    )
    min_rows_after_incident: int = Field(
        200, ge=1, description="Labelled rows a retrain answering a traffic incident needs that arrived since it opened"
    )


class ModelConfig(_Strict):
    """Everything retrainer needs to know about one model."""

    task: TaskKind
    target: str
    features: list[str] | None = None
    categorical: dict[str, list[str]] = Field(default_factory=dict)
    classes: list[ClassLabel] | None = None
    time_column: str | None = None
    id_column: str | None = Field(None, description="Row id joining inference traffic to labels that come later")
    slices: list[str] = Field(default_factory=list)
    lightgbm: LightGBMParams = LightGBMParams()
    window: WindowConfig = WindowConfig()
    holdout: HoldoutConfig = HoldoutConfig()
    promotion: PromotionPolicy = PromotionPolicy()
    drift: DriftConfig = DriftConfig()
    automation: AutomationConfig = AutomationConfig()
    ingest: IngestConfig = IngestConfig()
    labels: LabelsConfig = LabelsConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        problems = [*self._column_problems(), *self._class_problems(), *self._metric_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def reserved_columns(self) -> set[str]:
        """Columns that are never features: the target, the time, the id and the label-side columns."""
        named = [self.target, self.time_column, self.id_column, self.labels.time_column, self.labels.prediction_column]
        return {column for column in named if column}

    def _column_problems(self) -> list[str]:
        reserved = self.reserved_columns
        problems = []
        columns = (self.time_column, self.id_column, self.labels.time_column, self.labels.prediction_column)
        special = [c for c in columns if c]
        if self.target in special or len(set(special)) != len(special):
            problems.append(
                "target, time_column, id_column, labels.time_column and labels.prediction_column must be distinct"
            )
        if self.features is not None:
            clash = reserved.intersection(self.features)
            if clash:
                problems.append(f"features must not include target/time/id/label columns {sorted(clash)}")
            unknown = set(self.categorical) - set(self.features)
            if unknown:
                problems.append(f"categorical columns not in features: {sorted(unknown)}")
        for column, levels in self.categorical.items():
            if not levels or len(set(levels)) != len(levels):
                problems.append(f"categorical {column!r} needs a non-empty list of distinct levels")
        if self.features is not None:
            missing = set(self.slices) - set(self.features)
            if missing:
                problems.append(f"slices must be features: {sorted(missing)}")
            named = set(self.drift.per_column_method) | set(self.drift.per_column_threshold)
            unknown_drift = named - set(self.features)
            if unknown_drift:
                problems.append(f"drift settings name columns that are not features: {sorted(unknown_drift)}")
        has_numerical = self.features is None or bool(set(self.features) - set(self.categorical))
        problems += [f"drift.{p}" for p in self.drift.method_problems(set(self.categorical), has_numerical)]
        return problems

    def _class_problems(self) -> list[str]:
        if self.task == "regression":
            return ["classes are only for classification tasks"] if self.classes else []
        if self.task == "multiclass" and (self.classes is None or len(self.classes) < 3):
            return ["multiclass needs 'classes' with at least 3 labels"]
        if self.classes is not None and len(set(map(str, self.classes))) != len(self.classes):
            return ["classes must be distinct"]
        if self.task == "binary" and self.classes is not None and len(self.classes) != 2:
            return ["binary needs exactly 2 classes (negative, positive)"]
        return []

    def _metric_problems(self) -> list[str]:
        allowed = METRICS_BY_TASK[self.task]
        named = {self.primary_metric, *self.promotion.guardrails, *self.promotion.floors}
        unknown = sorted(named - set(allowed))
        if unknown:
            return [f"metrics {unknown} do not apply to task {self.task!r} (allowed: {list(allowed)})"]
        return []

    @property
    def primary_metric(self) -> str:
        """The metric the promotion bound is computed on."""
        return self.promotion.metric or DEFAULT_PRIMARY[self.task]

    @property
    def class_labels(self) -> list[ClassLabel]:
        """Allowed target labels in index order (binary: negative then positive)."""
        if self.task == "regression":
            return []
        return list(self.classes) if self.classes is not None else [0, 1]


class WebhookConfig(_Strict):
    """The webhook receiver (``retrainer webhook``): where its secret lives and how much it accepts.

    The shared secret comes from ``RETRAINER_WEBHOOK_SECRET`` or, when that is unset, from the Prefect
    Secret block named ``secret_block``; it never belongs in this file.
    """

    secret_block: str | None = Field(None, description="Prefect Secret block holding the shared secret")
    replay_window_seconds: int = Field(300, ge=10, le=3600, description="Accepted signature age (and clock skew)")
    requests_per_minute: int = Field(60, ge=1, description="Per source address, refused with 429 beyond")
    burst: int = Field(20, ge=1, description="Requests a quiet source may send at once")
    landing_roots: list[str] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Absolute directories or s3://bucket/prefix URLs a data notice may name files under;"
            " empty refuses every data notice"
        ),
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Deadline to receive a request's headers, and then its body"
    )

    @field_validator("landing_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[str]) -> list[str]:
        for root in roots:
            addressable = root.startswith("/") or (root.startswith("s3://") and len(root) > len("s3://"))
            if not addressable or "\\" in root or "\x00" in root or ".." in root.split("/"):
                raise ValueError(f"{root!r}: a landing root is an absolute POSIX directory or s3:// URL without '..'")
        return roots


class ProjectConfig(_Strict):
    """The whole YAML file."""

    models: dict[ModelName, ModelConfig]
    webhook: WebhookConfig = WebhookConfig()

    def model(self, name: str) -> ModelConfig:
        """Return the config of ``name``.

        Raises:
            UnknownModelError: ``name`` is not defined.
        """
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise UnknownModelError(f"unknown model {name!r} (configured: {known})") from None


def load_project(path: Path) -> ProjectConfig:
    """Parse and validate the YAML config at ``path``.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the schema; the message names the file
            and every offending key.
    """
    import yaml

    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (set RETRAINER_CONFIG)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_project(raw, source=str(path))


def _unique_key_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses a mapping naming the same key twice (the last would win silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, Hashable) and key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                if isinstance(key, Hashable):
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def parse_project(raw: object, source: str) -> ProjectConfig:
    """Validate an already-parsed config document.

    Raises:
        ConfigError: naming ``source`` and each offending key path.
    """
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {problem}" for problem in validation_problems(exc)]
        raise ConfigError("invalid configuration\n" + "\n".join(lines)) from None


def validation_problems(exc: ValidationError) -> list[str]:
    """Each error of ``exc`` as ``key.path: message`` (``<root>`` for the document itself), without its input."""
    return [f"{_key_path(err['loc'])}: {err['msg']}" for err in exc.errors()]


def _key_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "<root>"
