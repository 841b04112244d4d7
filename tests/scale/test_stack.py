"""The scaled layout works as a whole: real engines, real credentials, two Prefect replicas, no mocks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.scale.stack import ARTIFACT_BUCKET, DATA_BUCKET, Stack, clean_environ, group_members, kill_tree, spawn

pytestmark = pytest.mark.scale


def _poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- PostgreSQL -----------------------------------------------------------------------------------------


def test_postgres_refuses_a_wrong_password_and_takes_the_right_one(stack: Stack) -> None:
    import psycopg
    import sqlalchemy

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(stack.postgres_url("retrainer", driver="", password="wrong"), connect_timeout=5)  # noqa: S106

    with psycopg.connect(stack.postgres_url("retrainer", driver=""), connect_timeout=5) as conn:
        owners = conn.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
            (["prefect", "mlflow", "retrainer"],),
        ).fetchall()
    assert sorted(owners) == [("mlflow", "retrainer"), ("prefect", "retrainer"), ("retrainer", "retrainer")]

    # The URL handed to retrainer as RETRAINER_METADATA_URL works with SQLAlchemy + psycopg 3.
    engine = sqlalchemy.create_engine(stack.base_env()["RETRAINER_METADATA_URL"])
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database(), current_user")).one() == (
                "retrainer",
                "retrainer",
            )
    finally:
        engine.dispose()


# -- S3 ---------------------------------------------------------------------------------------------------


def test_s3_objects_and_polars_parquet_round_trip_with_credentials_enforced(stack: Stack) -> None:
    import botocore.exceptions
    import polars as pl

    s3 = stack.s3_client()
    s3.put_object(Bucket=DATA_BUCKET, Key="scale-test/hello.txt", Body=b"hello")
    assert s3.get_object(Bucket=DATA_BUCKET, Key="scale-test/hello.txt")["Body"].read() == b"hello"

    frame = pl.DataFrame({"id": [1, 2, 3], "x": [0.5, 1.5, 2.5], "label": ["a", "b", "a"]})
    url = f"s3://{DATA_BUCKET}/scale-test/frame.parquet"
    frame.write_parquet(url, storage_options=stack.storage_options())
    assert pl.read_parquet(url, storage_options=stack.storage_options()).equals(frame)
    assert s3.head_object(Bucket=DATA_BUCKET, Key="scale-test/frame.parquet")["ContentLength"] > 0

    with pytest.raises(botocore.exceptions.ClientError) as refused:
        stack.s3_client(secret="wrong-secret").get_object(Bucket=DATA_BUCKET, Key="scale-test/hello.txt")  # noqa: S106
    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}

    wrong = {**stack.storage_options(), "aws_secret_access_key": "wrong-secret"}
    with pytest.raises(Exception, match=r"(?i)403|forbidden|signature|denied"):
        pl.read_parquet(url, storage_options=wrong)


# -- Prefect ----------------------------------------------------------------------------------------------


def test_both_prefect_replicas_are_healthy(stack: Stack) -> None:
    import httpx

    assert len(stack.prefect_api_urls) == 2
    assert len(set(stack.prefect_api_urls)) == 2
    for api in stack.prefect_api_urls:
        assert httpx.get(f"{api}/health", timeout=5).json() is True


def test_an_event_emitted_through_one_replica_is_read_through_the_other(stack: Stack) -> None:
    api_a, api_b = stack.prefect_api_urls
    marker = uuid.uuid4().hex

    async def emit() -> None:
        from prefect.events import Event
        from prefect.events.clients import PrefectEventsClient

        async with PrefectEventsClient(api_url=api_a) as events:
            await events.emit(
                Event(
                    event="retrainer.scale.ping",
                    resource={"prefect.resource.id": f"retrainer.scale.{marker}"},
                    payload={"marker": marker},
                )
            )

    async def read() -> list[Any]:
        from prefect.client.orchestration import PrefectClient
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

        event_filter = EventFilter(
            event=EventNameFilter(name=["retrainer.scale.ping"]),
            resource=EventResourceFilter(id=[f"retrainer.scale.{marker}"]),
        )
        async with PrefectClient(api=api_b) as client:
            page = await client.read_events(filter=event_filter, limit=10)  # the server caps limit at 50
        return list(page.events)

    asyncio.run(emit())
    found = _poll(lambda: asyncio.run(read()), 60, "the event through the other replica")
    assert [event.payload["marker"] for event in found] == [marker]


def test_a_global_concurrency_slot_taken_on_one_replica_blocks_the_other(stack: Stack) -> None:
    import httpx

    api_a, api_b = stack.prefect_api_urls
    name = f"scale-single-flight-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        from prefect.client.orchestration import PrefectClient
        from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

        async with PrefectClient(api=api_a) as a, PrefectClient(api=api_b) as b:
            await a.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            assert (await b.read_global_concurrency_limit_by_name(name)).limit == 1

            taken = await a.increment_concurrency_slots_with_lease([name], 1, "concurrency", 60)
            lease_id = taken.json()["lease_id"]
            with pytest.raises(httpx.HTTPStatusError) as blocked:
                await b.increment_concurrency_slots_with_lease([name], 1, "concurrency", 60)
            assert blocked.value.response.status_code == 423  # Locked: no slot free

            await a.release_concurrency_slots_with_lease(uuid.UUID(lease_id))
            again = await b.increment_concurrency_slots_with_lease([name], 1, "concurrency", 60)
            await b.release_concurrency_slots_with_lease(uuid.UUID(again.json()["lease_id"]))

    asyncio.run(scenario())


# -- MLflow -----------------------------------------------------------------------------------------------

_DOWNLOAD = """
import sys
from mlflow import MlflowClient
path = MlflowClient(tracking_uri=sys.argv[1]).download_artifacts(sys.argv[2], "notes/hello.txt", ".")
print(open(path).read())
"""


def _download_elsewhere(stack: Stack, run_id: str, cwd: Path) -> str:
    """Download the artifact in a fresh process, cwd and environment without any S3 credential."""
    env = {
        key: value
        for key, value in stack.client_env().items()
        if not key.startswith("AWS_") and key != "MLFLOW_S3_ENDPOINT_URL"
    }
    cwd.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", _DOWNLOAD, stack.mlflow_uri, run_id],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip()


def test_mlflow_artifacts_land_in_s3_and_survive_an_outage(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=stack.mlflow_uri)
    experiment_id = client.create_experiment(f"scale-{uuid.uuid4().hex[:8]}")
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:/")
    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "hello from the scaled layout", "notes/hello.txt")
    client.set_terminated(run.info.run_id)

    listed = stack.s3_client().list_objects_v2(Bucket=ARTIFACT_BUCKET, Prefix=f"{experiment_id}/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert f"{experiment_id}/{run.info.run_id}/artifacts/notes/hello.txt" in keys
    assert _download_elsewhere(stack, run.info.run_id, tmp_path / "first") == "hello from the scaled layout"

    stack.stop_mlflow()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    began = time.monotonic()
    with pytest.raises(MlflowException, match=r"(?i)connection|refused"):
        client.get_experiment(experiment_id)
    assert time.monotonic() - began < 15

    stack.start_mlflow()
    assert client.get_experiment(experiment_id).experiment_id == experiment_id
    assert _download_elsewhere(stack, run.info.run_id, tmp_path / "second") == "hello from the scaled layout"


# -- workers ----------------------------------------------------------------------------------------------


def _online_workers(api: str, pool: str) -> set[str]:
    async def read() -> set[str]:
        from prefect.client.orchestration import PrefectClient

        async with PrefectClient(api=api) as client:
            workers = await client.read_workers_for_work_pool(pool)
        return {worker.name for worker in workers if worker.status == "ONLINE"}

    return asyncio.run(read())


def test_two_workers_on_two_replicas_come_online_and_one_dies_whole(stack: Stack, tmp_path: Path) -> None:
    api_a, api_b = stack.prefect_api_urls
    pool = f"scale-pool-{uuid.uuid4().hex[:8]}"

    async def create_pool() -> None:
        from prefect.client.orchestration import PrefectClient
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        async with PrefectClient(api=api_a) as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))

    asyncio.run(create_pool())
    first = stack.start_worker("scale-w1", pool, tmp_path / "w1", api_a)
    second = stack.start_worker("scale-w2", pool, tmp_path / "w2", api_b)
    try:
        for api in (api_a, api_b):
            _poll(lambda api=api: _online_workers(api, pool) == {"scale-w1", "scale-w2"}, 60, "both workers online")
        # No shared local state: each worker made its own PREFECT_HOME in its own working directory.
        assert (first.workdir / ".prefect").is_dir()
        assert (second.workdir / ".prefect").is_dir()
        assert first.workdir != second.workdir

        groups = stack.kill_worker(first)
        assert first.pid in groups
        assert first.proc.popen.returncode == -9
        assert all(group_members(pgid) == [] for pgid in groups)
        assert second.proc.alive()
    finally:
        stack.stop_worker(second)
    assert second.proc.popen.returncode is not None
    assert group_members(second.pid) == []


def test_client_env_points_every_client_at_the_stack(stack: Stack) -> None:
    env = stack.client_env(stack.prefect_api_urls[1])
    assert env["PREFECT_API_URL"] == stack.prefect_api_urls[1]
    assert env["MLFLOW_TRACKING_URI"] == stack.mlflow_uri
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"] == stack.s3_endpoint
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == stack.s3_region
    assert env["RETRAINER_METADATA_URL"] == stack.postgres_url("retrainer")
    assert env["RETRAINER_DATA_URL"] == f"s3://{DATA_BUCKET}/retrainer"
    probe = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('PREFECT_')}))"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(result.stdout) == {
        "PREFECT_API_URL": stack.prefect_api_urls[1],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


# -- the harness itself -----------------------------------------------------------------------------------


def test_kill_tree_takes_descendants_in_other_sessions(tmp_path: Path) -> None:
    # A parent whose child starts a session of its own, as Prefect's process worker does for each flow run.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = spawn("tree", [sys.executable, "-c", script], env=clean_environ(), cwd=tmp_path, logs=tmp_path)
    child = int(_poll(lambda: proc.log.read_text().strip(), 30, "the child's pid"))
    assert group_members(child) == [child]

    groups = kill_tree(proc)

    assert sorted(groups) == sorted({proc.pid, child})
    assert group_members(proc.pid) == [] and group_members(child) == []
