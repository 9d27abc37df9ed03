"""The MLflow UI as a user sees it after a pipeline: headless Chromium (Debian's, driven by
Playwright) opens the experiment's runs table and the compare-runs view of the round runs, checks
the round runs and their accuracy are on screen, and saves screenshots for the CI artifacts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.config import load_config
from tests.conftest import tiny_overrides

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# as the device probe found: without the background-networking flags Chromium keeps trying hosts
# this closed network refuses
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(os.environ.get("ALIGNFLOW_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture()
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (make test does, as root)")
        pytest.skip("Debian's chromium is not installed (apt install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_the_experiment_and_the_compare_view_show_the_rounds_and_their_accuracy(prefect_harness, mlflow_server,
                                                                               dvc_project, browser):
    from flows.pipeline import alignment_pipeline

    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server, "tracking.experiment": "it-ui",
                                               "tracking.registered_model": "it-ui-policy"})
    result = alignment_pipeline(load_config(None, overrides).model_dump(mode="json"))
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("it-ui")
    rounds = {r.info.run_name: r for r in client.search_runs(
        [experiment.experiment_id], filter_string="attributes.run_name LIKE 'round-%'")}
    assert set(rounds) == {"round-1", "round-2"}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"{mlflow_server}/#/experiments/{experiment.experiment_id}/runs", wait_until="load")
    parent_name = client.get_run(result["parent_run_id"]).info.run_name
    page.get_by_text(parent_name).first.wait_for(timeout=90_000)
    if page.get_by_label("Close").count():
        page.get_by_label("Close").first.click()  # the assistant side panel
    page.locator("[role=row]", has_text=parent_name).first.locator("button").first.click()  # expand its child runs
    for name in ("round-1", "round-2"):
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=str(SCREENSHOTS / "mlflow-experiment-runs.png"))

    ids = [rounds["round-1"].info.run_id, rounds["round-2"].info.run_id]
    page.goto(f"{mlflow_server}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([experiment.experiment_id])}",
              wait_until="load")
    page.get_by_text("Comparing 2 Runs").first.wait_for(timeout=90_000)
    page.get_by_text("eval/accuracy").first.wait_for(timeout=30_000)
    text = page.inner_text("body")
    assert "round-1" in text and "round-2" in text
    page.screenshot(path=str(SCREENSHOTS / "mlflow-compare-rounds.png"), full_page=True)
    assert (SCREENSHOTS / "mlflow-compare-rounds.png").stat().st_size > 10_000
