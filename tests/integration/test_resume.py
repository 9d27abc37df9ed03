"""SIGKILL the pipeline inside round 2's training, re-run it: round 1 and every finished task are not
recomputed, training resumes from its last resume state, and the dead attempt's MLflow runs are
closed and linked to the new one. (One test for both: each pipeline run here costs minutes.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides

pytestmark = pytest.mark.integration


def _alignflow(args, cwd, env, log: Path) -> tuple[int, str]:
    """Run in its own session and log to a file: a SIGKILLed run leaves its ephemeral Prefect
    server orphaned, holding any pipe open; we reap the whole group afterwards."""
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "alignflow.cli", "run", *args], cwd=cwd, env=env,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=900)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return code, log.read_text()[-4000:]


def test_a_pipeline_killed_in_round_two_training_resumes_there(dvc_project, mlflow_server):
    """SIGKILL after step 3 of round 2's training (a resume state every 2 steps), then re-run."""
    from mlflow import MlflowClient

    args = [a for o in tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                                      "tracking.experiment": "it-resume-mid",
                                                      "tracking.registered_model": "it-resume-mid-policy",
                                                      "resume_every_steps": "2",
                                                      "preference.batch_size": "2", "preference.epochs": "3"})
            for a in ("-s", o)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "ALIGNFLOW_KILL_AT_TRAIN_STEP": "train-r2:3"}
    code, output = _alignflow(args, dvc_project, env, dvc_project.parent / "killed.log")
    assert code == -signal.SIGKILL, output

    workspace = next((dvc_project / "workspace").iterdir())
    checkpoints = next((dvc_project / "state" / "checkpoints").iterdir())
    assert (workspace / "round-1" / "round.json").exists() and not (workspace / "round-2" / "round.json").exists()
    pairs = workspace / "round-1" / "pairs.jsonl"
    pairs_mtime = pairs.stat().st_mtime_ns
    assert (checkpoints / "round-2.resume-state" / "train-state.pt").exists()
    assert not (checkpoints / "round-2").exists(), "a checkpoint directory exists for an unfinished training"
    assert not list(workspace.rglob(".*.tmp-*")) and not list(checkpoints.rglob(".*.tmp-*"))
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("it-resume-mid")
    dead = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    dead_parent = next(r for r in dead.values() if r.data.tags.get("alignflow.kind") == "pipeline")
    assert dead_parent.info.status == "RUNNING"  # SIGKILL runs no handler: only the re-run can close it
    assert any(r.info.run_name == "train:r2" and r.info.status == "RUNNING" for r in dead.values())

    env.pop("ALIGNFLOW_KILL_AT_TRAIN_STEP")
    code, output = _alignflow(args, dvc_project, env, dvc_project.parent / "resumed.log")
    assert code == 0, output

    steps = [json.loads(line)["step"] for line in (workspace / "timings.jsonl").read_text().splitlines()]
    for step in ("sft", "evaluate:baseline", "sample:r1", "score:r1", "pairs:r1", "train:r1", "evaluate:r1",
                 "sample:r2", "score:r2", "pairs:r2", "train:r2", "evaluate:r2"):
        assert steps.count(step) == 1, f"{step} ran {steps.count(step)} times: {steps}"
    assert pairs.stat().st_mtime_ns == pairs_mtime
    assert (checkpoints / "round-2").exists() and not (checkpoints / "round-2.resume-state" / "train-state.pt").exists()

    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    for run_id, old in dead.items():
        if old.info.status == "RUNNING":
            assert runs[run_id].info.status == "FAILED", f"{old.info.run_name} was left RUNNING"
    new_parent = next(r for r in runs.values() if r.data.tags.get("alignflow.kind") == "pipeline"
                      and r.info.run_id != dead_parent.info.run_id)
    assert new_parent.info.status == "FINISHED"
    assert new_parent.data.tags["alignflow.resumed_from"] == dead_parent.info.run_id
    assert runs[dead_parent.info.run_id].data.tags["alignflow.resumed_by"] == new_parent.info.run_id
    train = next(r for r in runs.values() if r.info.run_name == "train:r2" and r.info.status == "FINISHED")
    assert train.data.tags["resumed_from_step"] == "2"
