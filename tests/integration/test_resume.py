"""SIGKILL the pipeline right after round 1, re-run it, and check round 1 is not recomputed."""

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
        process = subprocess.Popen([sys.executable, "-m", "components.cli", "run", *args], cwd=cwd, env=env,
                                   stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = process.wait(timeout=900)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return code, log.read_text()[-4000:]


def test_killed_pipeline_resumes_without_recomputing_round_one(dvc_project, mlflow_server):
    args = [a for o in tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                                      "tracking.experiment": "it-resume",
                                                      "tracking.registered_model": "it-resume-policy"})
            for a in ("-s", o)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "ALIGNFLOW_KILL_AFTER_ROUND": "1"}
    code, output = _alignflow(args, dvc_project, env, dvc_project.parent / "killed.log")
    assert code == -signal.SIGKILL, output

    workspace = next((dvc_project / "workspace").iterdir())
    assert (workspace / "round-1" / "round.json").exists()
    assert not (workspace / "round-2").exists() or not (workspace / "round-2" / "round.json").exists()
    pairs = workspace / "round-1" / "pairs.jsonl"
    pairs_mtime = pairs.stat().st_mtime_ns
    assert not list(workspace.rglob(".*.tmp-*")), "a half-written file is visible"

    env.pop("ALIGNFLOW_KILL_AFTER_ROUND")
    code, output = _alignflow(args, dvc_project, env, dvc_project.parent / "resumed.log")
    assert code == 0, output

    steps = [json.loads(line)["step"] for line in (workspace / "timings.jsonl").read_text().splitlines()]
    for step in ("sft", "evaluate:baseline", "sample:r1", "score:r1", "pairs:r1", "train:r1", "evaluate:r1"):
        assert steps.count(step) == 1, f"{step} ran {steps.count(step)} times: {steps}"
    assert steps.count("sample:r2") == 1 and steps.count("train:r2") == 1
    assert pairs.stat().st_mtime_ns == pairs_mtime
    assert (workspace / "round-2" / "round.json").exists()
