"""Prefect server on PostgreSQL (Debian's server, started by the test in a temp dir): the
repo's prefect.yaml deployment `pipeline-local` is deployed with its schedule to a process work
pool, the scheduler creates its runs, and a worker executes the next scheduled run — a tiny
pipeline — to completion; then the Prefect UI shows that run, its graph and its task runs. Then the
deployment `nightly-round` (flow continue_rounds, on the same pool) runs twice through the worker, and
production advances once per run: the lineage the pipeline started continues."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignflow.components.config import load_config
from tests.conftest import REPO, tiny_overrides
from tests.integration.prefect_ui import check_prefect_ui

pytestmark = pytest.mark.integration


def _prefect(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run([str(Path(sys.executable).parent / "prefect"), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_scheduled_deployment_runs_through_a_process_worker_on_postgres(tmp_path):
    from alignflow.components.platform.services import start_prefect, stop_process
    from tests.support.services import start_postgres

    pg = start_postgres()
    server = None
    try:
        pg.create_database("prefect")
        server, process = start_prefect(tmp_path, timeout=180, extra_env={
            "PREFECT_API_DATABASE_CONNECTION_URL": pg.url("prefect", "postgresql+asyncpg"),
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5"})
        env = {**os.environ, "PREFECT_API_URL": f"{server.url}/api", "PREFECT_HOME": str(tmp_path / "client-home"),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "ALIGNFLOW_HOME": str(REPO)}
        _prefect(["work-pool", "create", "alignflow-local", "--type", "process"], env)
        config = load_config(None, tiny_overrides(tmp_path, **{"rounds.n_rounds": "1", "versioning.enabled": "false",
                                                                "tracking.experiment": "it-scheduled",
                                                                "data.arithmetic.n_train_prompts": "32"}))
        _prefect(["--no-prompt", "deploy", "--name", "pipeline-local", "--prefect-file", "prefect.yaml",
                  "--params", json.dumps({"config": config.model_dump(mode="json")})], env)

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterName,
            FlowRunFilter,
            FlowRunFilterId,
        )
        from prefect.client.schemas.schedules import IntervalSchedule
        from prefect.settings import PREFECT_API_URL, temporary_settings
        from prefect.states import Scheduled

        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("alignment_pipeline/pipeline-local")
            [schedule] = [s.schedule for s in deployment.schedules]
            assert isinstance(schedule, IntervalSchedule) and schedule.interval.total_seconds() == 21600
            runs = []
            deadline = time.monotonic() + 120
            while not runs and time.monotonic() < deadline:  # the scheduler fills in the upcoming runs
                runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["pipeline-local"])))
                time.sleep(2)
            assert runs, "the scheduler created no runs for the deployment's schedule"
            # an auto-scheduled run always has its slot; one without would sort last
            upcoming = min(runs, key=lambda r: r.expected_start_time or dt.datetime.max.replace(tzinfo=dt.timezone.utc))
            assert upcoming.state is not None and upcoming.state.is_scheduled() and upcoming.auto_scheduled
            # bring the next scheduled slot forward to now, so the worker picks it up in this test
            client.set_flow_run_state(upcoming.id, Scheduled(), force=True)
            _prefect(["worker", "start", "--pool", "alignflow-local", "--run-once"], env, timeout=600)
            final = client.read_flow_run(upcoming.id)
            task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[final.id])))
        assert final.state is not None
        assert final.state.is_completed(), f"{final.state.type}: {final.state.message}"
        # the worker's subprocess ran the real pipeline: its round finished and left its manifest
        assert list((tmp_path / "workspace").rglob("round-1/round.json"))
        # and a user opening the run in the Prefect UI sees it, its graph and its task runs
        assert any(run.name.startswith("round-") for run in task_runs), [run.name for run in task_runs]
        check_prefect_ui(server.url, str(final.id), final.name, [run.name for run in task_runs])
        _nightly_rounds_continue_the_lineage(env, config, tmp_path)
    finally:
        if server is not None:
            stop_process(server.pid)
        pg.stop()


def _nightly_rounds_continue_the_lineage(env: dict[str, str], config, tmp_path: Path) -> None:
    """Issue 19: `nightly-round` (continue_rounds) deployed to the process pool runs twice through the
    worker; each run trains the lineage's next round from production and production advances once."""
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from alignflow.components.platform.tracking import resolve_tracking_uri

    nightly = config.model_copy(update={"model": config.model.model_copy(
        update={"source": "models:/alignflow-policy@production"})})
    _prefect(["--no-prompt", "deploy", "--name", "nightly-round", "--prefect-file", "prefect.yaml", "--pool",
              "alignflow-local", "--params", json.dumps({"config": nightly.model_dump(mode="json")})], env)
    registry = MlflowClient(resolve_tracking_uri(None, config.state_dir))
    assert str(registry.get_registered_model("alignflow-policy").aliases["production"]) == "1"
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("continue_rounds/nightly-round")
        assert deployment.entrypoint == "flows/continuing.py:continue_rounds"
        for night, production in ((1, "2"), (2, "3")):
            run = client.create_flow_run_from_deployment(deployment.id)
            _prefect(["worker", "start", "--pool", "alignflow-local", "--run-once"], env, timeout=600)
            final = client.read_flow_run(run.id)
            assert final.state is not None and final.state.is_completed(), (
                f"night {night}: {final.state and final.state.type}: {final.state and final.state.message}")
            model = registry.get_registered_model("alignflow-policy")
            assert str(model.aliases["production"]) == production, (night, model.aliases)
            version = registry.get_model_version("alignflow-policy", production)
            assert version.tags["lineage.round"] == str(1 + night)  # the pipeline's one round, then 2, 3
            assert version.tags["lineage.parent_version"] == f"models:/alignflow-policy/{int(production) - 1}"
