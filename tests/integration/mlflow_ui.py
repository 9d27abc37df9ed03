"""The MLflow UI as a user sees it after a pipeline: headless Chromium (Debian's, driven by
Playwright) opens the experiment's runs table and the compare-runs view of the round runs, checks
the round runs and their accuracy are on screen, and saves screenshots for the CI artifacts.

Called from the pipeline integration test on the pipeline it just ran (one pipeline run less in
the suite than a test of its own)."""

from __future__ import annotations

import json

from tests.integration.browser import SCREENSHOTS, chromium_available, chromium_page


def check_mlflow_ui(tracking_url: str, experiment_id: str, parent_run_name: str, round_runs: dict[str, str]) -> bool:
    """``round_runs``: run name → run id. False (with a warning) only outside CI without chromium."""
    if not chromium_available("the MLflow UI"):
        return False
    with chromium_page() as page:
        page.goto(f"{tracking_url}/#/experiments/{experiment_id}/runs", wait_until="load")
        page.get_by_text(parent_run_name).first.wait_for(timeout=90_000)
        if page.get_by_label("Close").count():
            page.get_by_label("Close").first.click()  # the assistant side panel
        # expand the pipeline run to its child runs
        page.locator("[role=row]", has_text=parent_run_name).first.locator("button").first.click()
        for name in round_runs:
            page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(SCREENSHOTS / "mlflow-experiment-runs.png"))

        ids, experiments = json.dumps(list(round_runs.values())), json.dumps([experiment_id])
        page.goto(f"{tracking_url}/#/compare-runs?runs={ids}&experiments={experiments}", wait_until="load")
        page.get_by_text(f"Comparing {len(round_runs)} Runs").first.wait_for(timeout=90_000)
        page.get_by_text("eval/accuracy").first.wait_for(timeout=30_000)
        text = page.inner_text("body")
        assert all(name in text for name in round_runs), f"compare view lacks {list(round_runs)}"
        page.screenshot(path=str(SCREENSHOTS / "mlflow-compare-rounds.png"), full_page=True)
    assert (SCREENSHOTS / "mlflow-compare-rounds.png").stat().st_size > 10_000
    return True
