"""Configuration validation: every mistake is a ConfigError naming the file and the key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from retrainer.config import ModelConfig, ProjectConfig, PromotionPolicy, load_project, parse_project
from retrainer.data.synth import PLANS, REGIONS, demo_config
from retrainer.errors import ConfigError, UnknownModelError

SOURCE = "conf/retrainer.yaml"


def _demo() -> dict[str, Any]:
    return copy.deepcopy(demo_config())


def _churn(raw: dict[str, Any]) -> dict[str, Any]:
    model: dict[str, Any] = raw["models"]["churn"]
    return model


def _error(change: Callable[[dict[str, Any]], None]) -> str:
    """Apply ``change`` to the churn model of the demo config and return the ConfigError text."""
    raw = _demo()
    change(_churn(raw))
    with pytest.raises(ConfigError) as info:
        parse_project(raw, source=SOURCE)
    return str(info.value)


def _write(path: Path, document: object) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_unknown_key_names_file_and_full_key_path(tmp_path: Path) -> None:
    raw = _demo()
    _churn(raw)["promotion"]["metirc"] = "roc_auc"
    path = _write(tmp_path / "retrainer.yaml", raw)
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value) == (
        f"invalid configuration\n{path}: models.churn.promotion.metirc: Extra inputs are not permitted"
    )


def test_unknown_top_level_key_is_an_error() -> None:
    raw = _demo()
    raw["model"] = {}
    with pytest.raises(ConfigError, match=r"conf/retrainer\.yaml: model: Extra inputs are not permitted"):
        parse_project(raw, source=SOURCE)


def test_wrong_type_names_the_key() -> None:
    message = _error(lambda m: m["lightgbm"].update(num_leaves="many"))
    assert f"{SOURCE}: models.churn.lightgbm.num_leaves: Input should be a valid integer" in message


def test_every_offending_key_is_listed() -> None:
    def change(model: dict[str, Any]) -> None:
        model["lightgbm"]["num_leaves"] = "many"
        model["lightgbm"]["learning_rate"] = 2.0
        model["promotion"]["metirc"] = "roc_auc"

    lines = _error(change).splitlines()
    assert lines[0] == "invalid configuration"
    keys = sorted(line.split(": ")[1] for line in lines[1:])
    assert keys == [
        "models.churn.lightgbm.learning_rate",
        "models.churn.lightgbm.num_leaves",
        "models.churn.promotion.metirc",
    ]
    assert all(line.startswith(f"{SOURCE}: ") for line in lines[1:])


def test_metric_not_applicable_to_task() -> None:
    message = _error(lambda m: m["promotion"].update(metric="rmse"))
    assert f"{SOURCE}: models.churn: " in message
    assert "metrics ['rmse'] do not apply to task 'binary'" in message
    assert "'roc_auc'" in message  # the allowed metrics are listed


def test_guardrail_and_floor_metrics_are_checked_against_the_task() -> None:
    def change(model: dict[str, Any]) -> None:
        model["promotion"]["guardrails"] = {"mae": 0.1}
        model["promotion"]["floors"] = {"macro_f1": 0.5}

    assert "metrics ['macro_f1', 'mae'] do not apply to task 'binary'" in _error(change)


def test_negative_guardrail_tolerance_is_rejected() -> None:
    message = _error(lambda m: m["promotion"].update(guardrails={"log_loss": -0.1}))
    assert "models.churn.promotion.guardrails" in message
    assert "guardrail tolerances must be >= 0: log_loss" in message


def test_multiclass_without_classes() -> None:
    def change(model: dict[str, Any]) -> None:
        model["task"] = "multiclass"
        model["promotion"] = {"metric": "macro_f1"}

    message = _error(change)
    assert "models.churn: Value error, multiclass needs 'classes' with at least 3 labels" in message
    assert "do not apply" not in message


def test_multiclass_with_classes_is_valid() -> None:
    raw = _demo()
    _churn(raw).update(task="multiclass", classes=["low", "mid", "high"], promotion={})
    model = parse_project(raw, source=SOURCE).model("churn")
    assert model.primary_metric == "macro_f1"
    assert model.class_labels == ["low", "mid", "high"]


def test_categorical_column_not_in_features() -> None:
    message = _error(lambda m: m.update(features=["tenure", "monthly_charges", "plan"]))
    assert f"{SOURCE}: models.churn: " in message
    assert "categorical columns not in features: ['region']" in message


def test_unknown_drift_method_is_named_with_the_known_ones() -> None:
    message = _error(lambda m: m["drift"].update(num_method="wasserstien"))
    assert f"{SOURCE}: models.churn.drift: Value error, num_method: unknown drift method 'wasserstien'" in message
    assert "jensenshannon" in message and "wasserstein" in message


def test_drift_method_must_fit_the_kind_it_judges() -> None:
    message = _error(lambda m: m["drift"].update(cat_method="wasserstein"))
    assert (
        "models.churn.drift: Value error, cat_method: drift method 'wasserstein' does not apply to categorical"
        in message
    )


def test_global_drift_method_must_fit_every_kind_it_covers() -> None:
    message = _error(lambda m: m["drift"].update(method="ks"))
    assert (
        f"{SOURCE}: models.churn: Value error, drift.method: drift method 'ks' does not apply to categorical" in message
    )
    covered = _demo()
    _churn(covered)["drift"].update(method="ks", cat_method="chisquare")
    assert parse_project(covered, source=SOURCE).model("churn").drift.method == "ks"


def test_per_column_drift_method_must_fit_its_column() -> None:
    def change(model: dict[str, Any]) -> None:
        model["drift"]["per_column_method"] = {"plan": "wasserstein", "tenure": "psi", "region": "nope"}

    message = _error(change)
    assert "drift.per_column_method.plan: drift method 'wasserstein' does not apply to categorical columns" in message
    assert "drift.per_column_method.region: unknown drift method 'nope'" in message
    assert "tenure" not in message


def test_invalid_model_name_is_named() -> None:
    raw = _demo()
    raw["models"]["Churn Model"] = raw["models"].pop("churn")
    with pytest.raises(ConfigError, match=r"models\.Churn Model\.\[key\]: String should match pattern"):
        parse_project(raw, source=SOURCE)


def test_load_project_on_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "retrainer.yaml"
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value) == f"{path}: config file not found (set RETRAINER_CONFIG)"


def test_load_project_on_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  churn: {task: binary\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert str(info.value).startswith(f"{path}: not valid YAML: ")


def test_load_project_on_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_project(path)
    assert f"{path}: <root>: " in str(info.value)


def test_demo_config_round_trips(tmp_path: Path) -> None:
    path = _write(tmp_path / "retrainer.yaml", demo_config())
    project = load_project(path)
    assert isinstance(project, ProjectConfig)
    assert list(project.models) == ["churn"]
    churn = project.model("churn")
    assert isinstance(churn, ModelConfig)
    assert churn.task == "binary"
    assert churn.target == "churned"
    assert churn.categorical == {"plan": PLANS, "region": REGIONS}
    assert churn.slices == ["plan"]
    assert churn.lightgbm.n_estimators == 400
    assert churn.lightgbm.min_child_samples == 20  # default kept
    assert churn.window.batches == 3
    assert churn.primary_metric == "roc_auc"
    assert churn.class_labels == [0, 1]
    assert churn.promotion == PromotionPolicy(
        metric="roc_auc",
        min_improvement=0.0,
        confidence=0.95,
        guardrails={"log_loss": 0.01},
        floors={"roc_auc": 0.6},
        slice_tolerance=0.02,
        min_slice_rows=200,
    )
    # Dumping and re-loading the validated config gives the same config.
    again = load_project(_write(tmp_path / "again.yaml", project.model_dump(mode="json")))
    assert again == project
    assert parse_project(demo_config(), source="<demo>") == project


def test_model_on_unknown_name_lists_configured_names() -> None:
    raw = _demo()
    raw["models"]["alpha"] = copy.deepcopy(_churn(raw))
    project = parse_project(raw, source=SOURCE)
    with pytest.raises(UnknownModelError) as info:
        project.model("churm")
    assert str(info.value) == "unknown model 'churm' (configured: alpha, churn)"
    assert isinstance(info.value, ConfigError)


def test_model_on_empty_project_says_none() -> None:
    project = parse_project({"models": {}}, source=SOURCE)
    with pytest.raises(UnknownModelError, match=r"\(configured: none\)$"):
        project.model("churn")


def test_load_project_on_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path)):
        load_project(tmp_path)
