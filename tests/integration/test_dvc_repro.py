"""`dvc repro` runs the same stages through the CLI, and a second repro is a no-op."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignflow.components.config import load_config
from tests.conftest import REPO, tiny_overrides

pytestmark = pytest.mark.integration


def test_dvc_repro_runs_the_pipeline_stages(dvc_project: Path):
    shutil.copy(REPO / "dvc.yaml", dvc_project / "dvc.yaml")
    params = load_config(None, tiny_overrides(dvc_project, **{"rounds.n_rounds": "1"})).model_dump(mode="json")
    (dvc_project / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=dvc_project, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads((dvc_project / "pipeline" / "eval" / "metrics.json").read_text())
    assert metrics["metrics"]["eval/n"] == 12.0
    lock = yaml.safe_load((dvc_project / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"data", "sft", "rounds", "eval"}
    assert (dvc_project / "pipeline" / "rounds" / "final" / "alignflow_model.json").exists()
    again = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=dvc_project, env=env, capture_output=True,
                           text=True, timeout=300)
    assert "Data and pipelines are up to date" in again.stdout, again.stdout
