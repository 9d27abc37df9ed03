"""A user's own project on the tiny model: JSONL sft/prompts/eval/preference files, a Python scorer in
the user's rewards.py, offline DPO on the preferences (round 0), an on-policy round scored by the
user function, and a registered version gated on promotion.metric — Prefect harness, a real
mlflow server, real DVC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alignflow.components.config import load_config
from alignflow.components.data.arithmetic import generate_dataset
from tests.conftest import tiny_overrides
from tests.support.datafiles import write_jsonl

pytestmark = pytest.mark.integration

REWARDS = '''
import re


def closeness(prompts, completions, answer, **columns):
    """1 for the right final number, else -min(1, |error| / (|gold| + 1)); -1 with no number."""
    scores = []
    for completion, gold in zip(completions, answer):
        numbers = re.findall(r"-?\\d+", completion)
        if not numbers:
            scores.append(-1.0)
            continue
        error = abs(int(numbers[-1]) - gold)
        scores.append(1.0 if error == 0 else -min(1.0, error / (abs(gold) + 1)))
    return scores
'''


def write_project(root: Path) -> dict[str, Path]:
    """The arithmetic task exported to the files a user would bring, and a reward function."""
    splits = generate_dataset(7, 16, 16, 12, [1], 20)
    files = {
        "sft": write_jsonl(root / "sft.jsonl",
                           [{"prompt": p.question, "completion": p.solution} for p in splits["sft"]]),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": p.question, "answer": p.answer}
                                                        for p in splits["train"]]),
        "eval": write_jsonl(root / "eval.jsonl", [{"prompt": p.question, "answer": p.answer} for p in splits["eval"]]),
        "preferences": write_jsonl(root / "preferences.jsonl", [
            {"prompt": p.question, "chosen": p.solution,
             "rejected": p.solution.replace(f"The answer is {p.answer}.", f"The answer is {p.answer + 3}.")}
            for p in splits["sft"][:8]]),
    }
    (root / "rewards.py").write_text(REWARDS)
    files["rewards"] = root / "rewards.py"
    return files


def test_own_files_python_scorer_offline_dpo_and_a_metric_gate(prefect_harness, mlflow_server, dvc_project):
    from alignflow.flows.pipeline import alignment_pipeline

    files = write_project(dvc_project)
    overrides = tiny_overrides(dvc_project, **{
        "tracking.tracking_uri": mlflow_server, "tracking.experiment": "it-own-data",
        "tracking.registered_model": "it-own-policy", "rounds.n_rounds": "1",
        "data.prompt_template": "'{prompt}\nEnd with: The answer is N.'",
        **{f"data.sources.{role}": f"[{{source: {files[role]}}}]"
           for role in ("sft", "prompts", "eval", "preferences")},
        "scoring.scorers": f"[{{type: python, name: closeness, function: '{files['rewards']}:closeness'}}]"})
    cfg = load_config(None, overrides)
    result = alignment_pipeline(cfg.model_dump(mode="json"))

    assert result.metric == "eval/closeness/mean" and len(result.metric_history) == 3  # baseline, round 0, round 1
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("it-own-data")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=200)}
    offline, online = runs["round-0"], runs["round-1"]
    assert offline.data.tags["round_kind"] == "offline" and online.data.tags["round_kind"] == "on_policy"
    assert offline.data.metrics["round/n_pairs"] == 8 and "eval/closeness/mean" in offline.data.metrics
    trained_on = runs["train:r0"].inputs
    assert trained_on is not None and {d.dataset.name for d in trained_on.dataset_inputs} == {"pairs-r0"}
    # the user function scored the on-policy samples, and every pair names it (id and version)
    assert runs["score:r1"].data.tags["scorer.closeness"].startswith("python@")
    pairs_file = next((Path(result.workspace) / "round-1").glob("pairs-*/pairs.jsonl"))
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    assert pairs and all(p["lineage"]["scorers"] == {"closeness": runs["score:r1"].data.tags["scorer.closeness"]}
                         for p in pairs)
    assert all(p["lineage"]["source"] == "python" for p in pairs)
    # the imported data is logged as datasets with a profile
    data_run = runs["prepare-data"]
    assert data_run.inputs is not None
    inputs = {d.dataset.name: d.dataset for d in data_run.inputs.dataset_inputs}
    assert set(inputs) == {"sft", "prompts", "eval", "preferences"}
    assert json.loads(inputs["eval"].profile or "{}")["rows"] == 12
    # the gate compared the promotion metric, and the version says which
    version = client.get_model_version("it-own-policy", result.version)
    assert version.tags["eval_metric_name"] == "eval/closeness/mean"
    assert float(version.tags["eval_metric"]) == pytest.approx(result.metric_history[-1])
    assert "eval/closeness/mean" in result.promotion["reason"]
