"""The same deployments for process, Docker and Kubernetes pools: no path of the deploying machine, no secret."""

from __future__ import annotations

import importlib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow

from deployments.prefect_yaml import POOL_TYPES, render
from retrainer.config import load_project

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT / "retrainer.example.yaml")


def _deployments(pool_type: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load(render(PROJECT, "3", pool_type))["deployments"])


@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_committed_container_examples_are_rendered_from_the_definitions(pool_type: str) -> None:
    committed = (ROOT / "deployments" / "examples" / f"prefect.{pool_type}.yaml").read_text(encoding="utf-8")
    assert committed == render(PROJECT, version("prefect"), pool_type)


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_every_entrypoint_is_a_flow_of_the_installed_package_and_no_step_names_a_path(pool_type: str) -> None:
    document = yaml.safe_load(render(PROJECT, "3", pool_type))
    assert document["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]
    for deployment in document["deployments"]:
        module, name = deployment["entrypoint"].split(":")
        assert not module.endswith(".py") and "/" not in module
        assert isinstance(getattr(importlib.import_module(module), name), Flow)
    assert "$PWD" not in render(PROJECT, "3", pool_type)


@pytest.mark.parametrize("pool_type", ["docker", "kubernetes"])
def test_container_deployments_carry_image_env_and_more_resources_for_a_retrain(pool_type: str) -> None:
    by_flow = {d["entrypoint"].split(":")[1]: d["work_pool"]["job_variables"] for d in _deployments(pool_type)}
    for variables in by_flow.values():
        assert variables["image"] == "retrainer:0.1.0"
        assert variables["env"]["RETRAINER_CONFIG"] == "/app/retrainer.yaml"
    memory = "mem_limit" if pool_type == "docker" else "memory_request"
    size = {flow: float(v[memory].rstrip("giG")) for flow, v in by_flow.items()}
    assert size["retrain"] > size["monitor"] > size["ingest"]


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_no_secret_is_rendered(pool_type: str) -> None:
    text = render(PROJECT, "3", pool_type)
    for secret in (
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "RETRAINER_METADATA_URL:",
        "prefect.blocks",
        "password",
    ):
        assert secret not in text


def test_the_process_pool_sets_no_job_variables() -> None:
    assert all("job_variables" not in d["work_pool"] for d in _deployments("process"))
