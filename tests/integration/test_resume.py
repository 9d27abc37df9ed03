"""SIGKILL the pipeline inside round 2's training, re-run it: round 1 and every finished task are not
recomputed, training resumes from its last resume state, and the dead attempt's MLflow runs are
closed and linked to the new one. Then edit a loss's source (in a copy of the code) and run again:
the trainings and what follows them re-run, data, SFT and round 1's sampling come from the cache.
(One test for all three: each pipeline run here costs minutes.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import produced, tiny_overrides

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
    pairs = produced(workspace, "round-1/pairs-*/pairs.jsonl")
    pairs_mtime = pairs.stat().st_mtime_ns
    resume_state = produced(checkpoints, "round-2/train-*.resume-state/train-state.pt")
    assert not _finished_checkpoints(checkpoints / "round-2"), "a checkpoint exists for an unfinished training"
    assert not list(workspace.rglob(".*.tmp-*")) and not list(checkpoints.rglob(".*.tmp-*"))
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("it-resume-mid")
    assert experiment is not None
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
    assert len(_finished_checkpoints(checkpoints / "round-2")) == 1 and not resume_state.exists()

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

    # an edited loss (a copy of the code whose objectives module changed by one comment): the trainings
    # and everything downstream of them run again, the rest is reused from the cache
    copy = _copy_of_the_code(dvc_project.parent / "code")
    loss = copy / "alignflow" / "components" / "objectives" / "preference.py"
    loss.write_text(loss.read_text() + "\n# edited: a new version of the loss module\n")
    env["PYTHONPATH"] = str(copy)
    code, output = _alignflow(args, dvc_project, env, dvc_project.parent / "edited.log")
    assert code == 0, output
    steps = [json.loads(line)["step"] for line in (workspace / "timings.jsonl").read_text().splitlines()]
    for step in ("prepare-data", "sft", "evaluate:baseline", "sample:r1", "score:r1", "pairs:r1"):
        assert steps.count(step) == 1, f"{step} does not depend on the loss but ran again: {steps}"
    for step in ("train:r1", "evaluate:r1", "sample:r2", "train:r2", "evaluate:r2"):
        assert steps.count(step) == 2, f"{step} depends on the loss but was not re-run: {steps}"
    assert len(_finished_checkpoints(checkpoints / "round-1")) == 2  # the old round-1 checkpoint is intact
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}
    parents = [r for r in runs.values() if r.data.tags.get("alignflow.kind") == "pipeline"]
    assert len({r.data.tags["code_version"] for r in parents}) == 2  # the run says which code it ran
    trains = {r.data.tags["code_version"] for r in runs.values() if r.info.run_name == "train:r1"}
    samples = {r.data.tags["code_version"] for r in runs.values() if r.info.run_name == "sample:r1"}
    assert len(trains) == 2 and len(samples) == 1


def _finished_checkpoints(folder: Path) -> list[Path]:
    return [p for p in folder.glob("train-*") if p.is_dir() and not p.name.endswith((".resume-state", ".launch"))]


def _copy_of_the_code(target: Path) -> Path:
    """The installed package's folders as one self-contained tree (target/alignflow/{components,tasks,flows}),
    for a subprocess whose PYTHONPATH puts it before the editable install."""
    import shutil

    repo = Path(__file__).resolve().parents[2]
    ignore = shutil.ignore_patterns("__pycache__")
    # alignflow/{components,tasks,flows} are links to the folders: copy the folders themselves in their place
    shutil.copytree(repo / "alignflow", target / "alignflow",
                    ignore=shutil.ignore_patterns("__pycache__", "components", "tasks", "flows"))
    for folder in ("components", "tasks", "flows"):
        shutil.copytree(repo / folder, target / "alignflow" / folder, ignore=ignore)
    return target
