"""The Prefect UI as a user sees it after a flow run: headless Chromium opens the flow run's page,
checks its state and task-run count, that the run graph drew a node for its completed task runs,
and that the Task Runs tab lists them; saves screenshots for the CI artifacts.

The V2 UI (what the server's front page opens by default): V1's flow-run page lists no task runs
for a flow that passes a subflow's result to a task — it rejects the run's `flow_run` task inputs
("Invalid TaskInputResponse", PrefectHQ/prefect#18680) — and every pipeline does that with its
round subflows. The graph, which V1 also draws, keeps those edges."""

from __future__ import annotations

import io
import re

from tests.integration.browser import SCREENSHOTS, chromium_available, chromium_page

# the run graph's fill for a Completed node (Prefect's state colour as drawn on the canvas)
COMPLETED_NODE_RGB = (33, 157, 75)


def completed_node_pixels(png: bytes) -> int:
    """Pixels of the Completed node colour above the graph's bottom state bar (the lowest 12% of
    the canvas, which is drawn in the flow run's own state colour)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    graph = image.crop((0, 0, image.width, int(image.height * 0.88)))
    return sum(1 for pixel in graph.get_flattened_data()
               if isinstance(pixel, tuple)  # always, in an RGB image
               and all(abs(c - t) <= 10 for c, t in zip(pixel, COMPLETED_NODE_RGB, strict=True)))


def check_prefect_ui(server_url: str, flow_run_id: str, flow_run_name: str, task_run_names: list[str]) -> bool:
    """False (with a warning) only outside CI without chromium. The server must have been started
    with PREFECT_UI_API_URL pointing at itself (``components.services.start_prefect`` does)."""
    if not chromium_available("the Prefect UI"):
        return False
    with chromium_page() as page:
        try:
            _check_flow_run_page(page, server_url, flow_run_id, flow_run_name, task_run_names)
        except Exception as error:  # what the browser showed is the diagnosis: keep it with the failure
            page.screenshot(path=str(SCREENSHOTS / "prefect-ui-failure.png"))
            raise AssertionError(f"Prefect UI check failed ({error}); the page said:\n"
                                 f"{page.inner_text('body')[:2000]}") from error
    return True


def _check_flow_run_page(page, server_url: str, flow_run_id: str, flow_run_name: str,
                         task_run_names: list[str]) -> None:
    page.goto(f"{server_url}/v2/runs/flow-run/{flow_run_id}", wait_until="load")
    page.get_by_text(flow_run_name).first.wait_for(timeout=90_000)
    # the header counts the run's own task runs (a subflow's tasks are the subflow's)
    header = page.get_by_text(re.compile(r"^\d+ Task runs?$")).first
    header.wait_for(timeout=60_000)
    counted = int(header.inner_text().split()[0])
    assert 0 < counted <= len(task_run_names), f"header counts {counted} task runs, the API {len(task_run_names)}"
    assert page.get_by_text("Completed").count(), "the flow run page does not show its Completed state"
    canvas = page.locator("canvas").first
    canvas.wait_for(timeout=60_000)
    nodes = 0
    for _ in range(30):  # the graph draws after its data arrives
        nodes = completed_node_pixels(canvas.screenshot())
        if nodes >= 100:
            break
        page.wait_for_timeout(1000)
    page.screenshot(path=str(SCREENSHOTS / "prefect-flow-run-graph.png"))
    assert nodes >= 100, f"the run graph drew no Completed task nodes ({nodes} node-coloured pixels)"

    page.get_by_role("tab", name="Task Runs").click()
    shown: list[str] = []
    for _ in range(60):  # the tab pages its list: any of the run's task runs will do
        listed = page.inner_text("body")
        shown = [name for name in task_run_names if name in listed]
        if shown:
            break
        page.wait_for_timeout(1000)
    assert shown, f"the Task Runs tab lists none of {task_run_names[:5]}"
    page.screenshot(path=str(SCREENSHOTS / "prefect-flow-run-task-runs.png"))
