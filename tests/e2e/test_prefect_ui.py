"""The decision record as a user sees it: the Prefect UI in headless Chromium (``make test-ui``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from retrainer.data.synth import make_batch
from tests.conftest import Project
from tests.e2e.conftest import post
from tests.e2e.test_prefect_server import _run

pytestmark = [pytest.mark.e2e, pytest.mark.ui]
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google's hosts, which this network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium package (make test-ui installs it)")
def test_latest_retrain_shows_its_decision_record_in_the_prefect_ui(project: Project, prefect_api: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    days = [project.file(f"day{d}", make_batch(4000, seed=d, day=d)) for d in range(3)]
    assert _run(project, prefect_api, "ingest", "--model", "churn", *days).returncode == 0
    assert _run(project, prefect_api, "retrain", "--model", "churn", "--reason", "first").returncode == 0
    shifted = project.file("shifted", make_batch(4000, seed=9, day=3, shift=0.8))
    assert _run(project, prefect_api, "ingest", "--model", "churn", shifted).returncode == 0
    judged = _run(project, prefect_api, "retrain", "--model", "churn", "--reason", "after the shift")
    assert judged.returncode == 0, judged.stderr

    flows = {f["name"]: f["id"] for f in post(prefect_api, "/flows/filter", {})}
    query = {"flows": {"id": {"any_": [flows["retrain"]]}}, "sort": "START_TIME_DESC"}
    latest = post(prefect_api, "/flow_runs/filter", query)[0]
    artifacts = post(prefect_api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [latest["id"]]}}})
    [record] = [a for a in artifacts if a["key"] == "decision-churn"]
    ui = prefect_api.removesuffix("/api")
    OUTPUT.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/runs/flow-run/{latest['id']}")
        expect(page.get_by_text(latest["state_name"], exact=True).first).to_be_visible(timeout=60_000)
        page.get_by_text("Artifacts", exact=True).first.click()
        expect(page.get_by_text("decision-churn").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "prefect-ui-flow-run-artifacts.png"), full_page=True)
        page.goto(f"{ui}/artifacts/artifact/{record['id']}")
        bound_by = page.get_by_role("columnheader", name="bound by", exact=True)
        table = page.get_by_role("table").filter(has=bound_by)
        expect(table).to_be_visible(timeout=30_000)
        for header in ("metric", "champion", "challenger", "improvement", "lower bound", "bound by"):
            expect(table.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
        expect(table.get_by_role("cell", name="roc_auc").first).to_be_visible()
        training_rows = page.get_by_role("columnheader", name="training rows", exact=True)
        windows = page.get_by_role("table").filter(has=training_rows)
        expect(windows).to_be_visible()
        expect(windows.get_by_role("cell", name="newest", exact=True)).to_be_visible()
        page.screenshot(path=str(OUTPUT / "prefect-ui-decision-record.png"), full_page=True)
        browser.close()
