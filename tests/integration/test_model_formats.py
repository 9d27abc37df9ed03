"""The adapter format (``tracking.model_format=adapter``) on a real mlflow server: a version that holds only
the LoRA adapter and names its base by ``models:/`` URI and hash loads on another machine through the
registry, and ``alignflow export --merge`` folds it into a plain Hugging Face directory. (The default,
merged format is checked on the pipeline's own production version in test_pipeline.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from alignflow.components.config import LoraSettings
from tests.conftest import MODEL_CACHE, REPO
from tests.integration.portable import files_naming, pyfunc_predict, transformers_generate

pytestmark = pytest.mark.integration


def test_an_adapter_version_loads_through_the_registry_and_exports_merged(mlflow_server, tmp_path, tiny_loaded):
    from alignflow.components.data.prompts import INSTRUCTION
    from alignflow.components.data.schemas import ProblemRow
    from alignflow.components.evaluation.policy import evaluate_policy
    from alignflow.components.modeling.checkpoints import attach_lora, load_checkpoint, save_checkpoint
    from alignflow.components.platform.mlflow_models import download_logged_model, logged_model_id_of
    from alignflow.components.platform.tracking import Tracker
    from alignflow.components.stages.register import Packaging, register_checkpoint

    state = tmp_path / "state"
    base = save_checkpoint(tiny_loaded, state / "models" / "tiny-base", {"model_id": "tiny-formats-base",
                                                                         "produced_by": "tiny-init"})
    policy = attach_lora(load_checkpoint(base), LoraSettings(r=4, alpha=8), seed=0)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a visible adapter: lora_B starts at zero
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    checkpoint = save_checkpoint(policy, state / "checkpoints" / "round-1", {
        "model_id": "formats-round1", "base_path": str(base), "parent": "tiny-formats-base"})

    tracker = Tracker(mlflow_server, "it-formats")
    run = tracker.start_run("pipeline")
    version = register_checkpoint(tracker, "it-adapter", run, checkpoint, {"eval_accuracy": 0.0},
                                  Packaging(format="adapter", max_tokens=10))
    tracker.end_run(run)
    client = MlflowClient(mlflow_server)
    registered = client.get_model_version("it-adapter", version)
    assert registered.tags["model_format"] == "adapter" and int(registered.tags["size_bytes"]) < 5_000_000
    files = download_logged_model(tracker, logged_model_id_of(registered) or "", tmp_path / "downloaded")
    assert "peft==" in (files / "requirements.txt").read_text()
    assert files_naming(files, [str(tmp_path), str(Path.home()), str(REPO), str(MODEL_CACHE)]) == []

    problem = ProblemRow(id="p", question="Sam has 3 pens and buys 4 more. How many pens?", solution="s", answer=7,
                         difficulty=1, template="t")
    expected = evaluate_policy(load_checkpoint(checkpoint, merge=True), [problem], 1, 10).predictions[0].completion
    messages = [{"role": "user", "content": f"{problem.question}\n{INSTRUCTION}"}]
    exported = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "alignflow.cli", "export", "--model", "it-adapter", "--version",
                           version, "--merge", "--out", str(exported), "-s", f"tracking.tracking_uri={mlflow_server}",
                           "-s", f"state_dir={state}"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert not (exported / "adapter_config.json").exists() and (exported / "model.safetensors").exists()

    (state / "models").rename(tmp_path / "base-elsewhere")  # the base must come from the registry
    other = tmp_path / "other-machine"
    got = pyfunc_predict("models:/it-adapter@candidate", [{"input": {"messages": messages},
                                                           "params": {"max_tokens": 10}}], other / "pyfunc",
                         mlflow_server)
    assert got["alignflow_importable"] is False
    assert got["outputs"][0]["choices"][0]["message"]["content"] == expected
    plain = transformers_generate(exported, messages, 10, other / "transformers")
    assert plain["alignflow_importable"] is False and plain["text"] == expected
