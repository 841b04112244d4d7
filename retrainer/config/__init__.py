"""Typed configuration: the per-model YAML file, the process settings, and the vocabularies they are checked against.

Owns :class:`ProjectConfig` and everything in it (model configs, promotion and drift policies, the
webhook), :class:`Settings` read from ``RETRAINER_*`` variables, the catalog of metrics per task and
the catalog of drift methods per column kind. Every other subpackage reads its policy from here;
this one imports none of them.
"""

from retrainer.config.project import (
    AutomationConfig,
    ClassLabel,
    DriftConfig,
    DriftWindow,
    HoldoutConfig,
    IncidentPolicy,
    LabelsConfig,
    LightGBMParams,
    ModelConfig,
    ModelName,
    ProjectConfig,
    PromotionMode,
    PromotionPolicy,
    WebhookConfig,
    WindowConfig,
    load_project,
    parse_project,
    validation_problems,
)
from retrainer.config.settings import Settings, load_settings

__all__ = [
    "AutomationConfig",
    "ClassLabel",
    "DriftConfig",
    "DriftWindow",
    "HoldoutConfig",
    "IncidentPolicy",
    "LabelsConfig",
    "LightGBMParams",
    "ModelConfig",
    "ModelName",
    "ProjectConfig",
    "PromotionMode",
    "PromotionPolicy",
    "Settings",
    "WebhookConfig",
    "WindowConfig",
    "load_project",
    "load_settings",
    "parse_project",
    "validation_problems",
]
