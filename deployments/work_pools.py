"""Base job templates for Docker and Kubernetes work pools: Prefect's default plus the stores' settings.

``prefect deploy`` resolves every ``{{ prefect.blocks.* }}`` and ``{{ prefect.variables.* }}``
reference in a deployment's job variables when it deploys and stores the values in the deployment
(a secret would show in the UI and the API), and it stores a missing variable as an empty string.
A work pool's base job template is resolved by the worker for each flow run instead, and the worker
merges the template's ``env`` default under each deployment's ``env``. So what differs between
environments, credentials above all, lives in the pool's template (:data:`POOL_ENV`) and the
deployments (``deployments/prefect_yaml.py``) carry only the image, the config path and resources.

Render a template and create the pool with it::

    python -m deployments.work_pools kubernetes --output kubernetes-base-job-template.json
    prefect work-pool create retrainer --type kubernetes --base-job-template kubernetes-base-job-template.json

The Secret blocks and variables the template names must exist before the first run.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

ContainerPoolType = Literal["docker", "kubernetes"]
CONTAINER_POOL_TYPES: tuple[ContainerPoolType, ...] = ("docker", "kubernetes")
# The worker packages' default templates as the installed Prefect ships them (what the server and
# `prefect work-pool get-default-base-job-template` fall back to without the collection registry).
_BUNDLED_WORKERS = "server/api/collections_data/views/aggregate-worker-metadata.json"
_WORKER_PACKAGES = {"docker": "prefect-docker", "kubernetes": "prefect-kubernetes"}
POOL_ENV = {
    "RETRAINER_METADATA_URL": "{{ prefect.blocks.secret.retrainer-metadata-url }}",
    "RETRAINER_DATA_URL": "{{ prefect.variables.retrainer_data_url }}",
    "MLFLOW_TRACKING_URI": "{{ prefect.variables.retrainer_mlflow_uri }}",
    "AWS_ENDPOINT_URL": "{{ prefect.variables.retrainer_s3_endpoint }}",
    "AWS_ACCESS_KEY_ID": "{{ prefect.blocks.secret.retrainer-s3-key-id }}",
    "AWS_SECRET_ACCESS_KEY": "{{ prefect.blocks.secret.retrainer-s3-secret }}",
}
_REFERENCE = re.compile(r"\{\{\s*prefect\.(blocks\.secret|variables)\.([A-Za-z0-9_-]+)\s*\}\}")


def example_path(pool_type: ContainerPoolType) -> Path:
    """Where the committed template for ``pool_type`` lives (``deployments/examples/``)."""
    return Path(__file__).parent / "examples" / f"{pool_type}-base-job-template.json"


def references() -> dict[str, set[str]]:
    """The names :data:`POOL_ENV` reads: ``{"secret": {block names}, "variable": {variable names}}``."""
    found: dict[str, set[str]] = {"secret": set(), "variable": set()}
    for value in POOL_ENV.values():
        for kind, name in _REFERENCE.findall(value):
            found["secret" if kind == "blocks.secret" else "variable"].add(name)
    return found


def default_base_job_template(pool_type: ContainerPoolType) -> dict[str, Any]:
    """The default base job template of ``pool_type`` that the installed Prefect ships.

    Raises:
        LookupError: this Prefect version ships no template for ``pool_type``.
    """
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("Prefect is not installed")
    views = Path(spec.submodule_search_locations[0]) / _BUNDLED_WORKERS
    workers = json.loads(views.read_text(encoding="utf-8")).get(_WORKER_PACKAGES[pool_type], {})
    for worker in workers.values():
        if worker.get("type") == pool_type:
            return dict(worker["default_base_job_configuration"])
    raise LookupError(f"the installed Prefect ships no {pool_type} base job template")


def base_job_template(pool_type: ContainerPoolType) -> dict[str, Any]:
    """The default template of ``pool_type`` with :data:`POOL_ENV` as the default of its ``env`` variable."""
    template = copy.deepcopy(default_base_job_template(pool_type))
    template["variables"]["properties"]["env"]["default"] = dict(POOL_ENV)
    return template


def render(pool_type: ContainerPoolType) -> str:
    """The template of ``pool_type`` as JSON text, as committed in ``deployments/examples/``."""
    return json.dumps(base_job_template(pool_type), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the template of the pool type given on the command line (to standard output by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.work_pools", description="Write a work pool's base job template for retrainer."
    )
    parser.add_argument("pool_type", choices=CONTAINER_POOL_TYPES)
    parser.add_argument("--output", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    text = render(args.pool_type)
    if args.output is None:
        print(text, end="")
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
