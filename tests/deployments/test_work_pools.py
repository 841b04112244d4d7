"""The same deployments for process, Docker and Kubernetes pools: no path of the deploying machine, no secret."""

from __future__ import annotations

import copy
import importlib
import re
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

from deployments import work_pools
from deployments.prefect_yaml import POOL_TYPES, PoolType, entrypoint, render
from deployments.work_pools import ContainerPoolType
from retrainer.config import load_project

ROOT = Path(__file__).resolve().parents[2]
PROJECT = load_project(ROOT / "retrainer.example.yaml")
CONTAINER_POOLS = work_pools.CONTAINER_POOL_TYPES
SECRET_SETTINGS = {"RETRAINER_METADATA_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
ONE_REFERENCE = re.compile(r"^\{\{ prefect\.(blocks\.secret|variables)\.[a-z0-9_-]+ \}\}$")


def _deployments(pool_type: PoolType) -> list[dict[str, Any]]:
    return list(yaml.safe_load(render(PROJECT, "3", pool_type))["deployments"])


def _by_flow(pool_type: PoolType) -> dict[str, dict[str, Any]]:
    return {d["entrypoint"].rsplit(":", 1)[1]: d["work_pool"]["job_variables"] for d in _deployments(pool_type)}


@pytest.mark.parametrize("pool_type", CONTAINER_POOLS)
def test_committed_container_examples_are_rendered_from_the_definitions(pool_type: ContainerPoolType) -> None:
    committed = (ROOT / "deployments" / "examples" / f"prefect.{pool_type}.yaml").read_text(encoding="utf-8")
    assert committed == render(PROJECT, version("prefect"), pool_type)
    template = work_pools.example_path(pool_type).read_text(encoding="utf-8")
    assert template == work_pools.render(pool_type)


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_every_entrypoint_is_a_flow_of_the_installed_package_and_no_step_names_a_path(pool_type: PoolType) -> None:
    text = render(PROJECT, "3", pool_type)
    document = yaml.safe_load(text)
    # No `{{ $VAR }}`: `prefect deploy` would write the deploying machine's value into the deployment.
    assert document["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]
    assert "$PWD" not in text and "{{ $" not in text
    for deployment in document["deployments"]:
        module, name = deployment["entrypoint"].split(":")
        assert not module.endswith(".py") and "/" not in module and module == f"flows.{name}"
        flow = getattr(importlib.import_module(module), name)
        assert isinstance(flow, Flow) and flow.name == name
        # Prefect's own loader takes it as a module path (no script file to find) and gets the same flow.
        assert load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False) is flow


def test_the_flow_name_after_the_colon_is_what_prefect_deploy_name_matches() -> None:
    # `prefect deploy --name retrain/default` keeps configs whose entrypoint's text after ":" is the flow name.
    assert entrypoint("retrain").split(":")[-1] == "retrain"


@pytest.mark.parametrize("pool_type", CONTAINER_POOLS)
def test_container_deployments_carry_image_config_path_and_more_memory_for_a_retrain(
    pool_type: ContainerPoolType,
) -> None:
    by_flow = _by_flow(pool_type)
    for variables in by_flow.values():
        assert variables["image"] == "retrainer:0.1.0"
        assert variables["env"]["RETRAINER_CONFIG"] == "/app/retrainer.yaml"
    memory = "mem_limit" if pool_type == "docker" else "memory_request"
    size = {flow: float(v[memory].rstrip("giG")) for flow, v in by_flow.items()}
    assert size["retrain"] > size["monitor"] > size["ingest"] == size["observe"] == size["label"]


@pytest.mark.parametrize("pool_type", CONTAINER_POOLS)
def test_every_job_variable_is_one_the_pool_types_default_template_takes(pool_type: ContainerPoolType) -> None:
    schema = work_pools.default_base_job_template(pool_type)["variables"]
    for flow_name, variables in _by_flow(pool_type).items():
        assert set(variables) <= set(schema["properties"]), flow_name
        jsonschema.validate(variables, {**schema, "required": []})


def test_a_retrain_pod_asks_for_more_cpu_and_memory_than_an_ingest_and_gets_what_it_asks() -> None:
    by_flow = _by_flow("kubernetes")
    retrain, ingest = by_flow["retrain"], by_flow["ingest"]
    assert (retrain["cpu_request"], retrain["memory_request"]) == ("2", "8Gi")
    assert (ingest["cpu_request"], ingest["memory_request"]) == ("500m", "2Gi")
    for variables in by_flow.values():
        assert variables["cpu_limit"] == variables["cpu_request"]
        assert variables["memory_limit"] == variables["memory_request"]


@pytest.mark.parametrize("pool_type", POOL_TYPES)
def test_no_secret_and_no_store_setting_is_rendered_into_a_deployment(pool_type: PoolType) -> None:
    for deployment in _deployments(pool_type):
        job = yaml.safe_dump(deployment["work_pool"])
        assert "prefect.blocks" not in job and "prefect.variables" not in job
        assert not set(deployment["work_pool"].get("job_variables", {}).get("env", {})) & set(work_pools.POOL_ENV)


@pytest.mark.parametrize("pool_type", CONTAINER_POOLS)
def test_the_pool_template_adds_the_store_settings_and_credentials_from_secret_blocks(
    pool_type: ContainerPoolType,
) -> None:
    template = work_pools.base_job_template(pool_type)
    env = template["variables"]["properties"]["env"]["default"]
    assert set(env) == {
        "RETRAINER_METADATA_URL",
        "RETRAINER_DATA_URL",
        "MLFLOW_TRACKING_URI",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    }
    assert all(ONE_REFERENCE.match(value) for value in env.values()), env  # references only, never a value
    assert all(env[name].startswith("{{ prefect.blocks.secret.") for name in SECRET_SETTINGS)
    assert work_pools.references()["secret"] == {"retrainer-metadata-url", "retrainer-s3-key-id", "retrainer-s3-secret"}


@pytest.mark.parametrize("pool_type", CONTAINER_POOLS)
def test_the_pool_template_is_prefects_default_but_for_the_env_default(pool_type: ContainerPoolType) -> None:
    ours = work_pools.base_job_template(pool_type)
    default = work_pools.default_base_job_template(pool_type)
    stripped = copy.deepcopy(ours)
    del stripped["variables"]["properties"]["env"]["default"]
    assert stripped == default
    # The worker fills the job's environment from the `env` variable: the defaults reach every run.
    assert ours["job_configuration"]["env"] == "{{ env }}"


def test_the_process_pool_sets_no_job_variables() -> None:
    assert all("job_variables" not in d["work_pool"] for d in _deployments("process"))


def test_the_crashed_runs_automation_waits_three_heartbeats_for_retrainer_runs_only() -> None:
    from prefect.events.schemas.automations import EventTrigger, Posture

    from deployments.crashed_runs import trigger_spec

    spec = {k: v for k, v in trigger_spec(30).items() if k != "type"}
    trigger = EventTrigger(**{**spec, "within": timedelta(seconds=spec["within"])})
    assert trigger.posture is Posture.Proactive
    assert trigger.within == timedelta(seconds=90)
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.Completed" in trigger.expect and "prefect.flow-run.heartbeat" in trigger.expect
    assert spec["match_related"] == {"prefect.resource.id": "prefect.tag.retrainer"}  # never other teams' runs
