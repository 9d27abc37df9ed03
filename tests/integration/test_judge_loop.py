"""The self-rationalization judge loop on the tiny model: Prefect (test harness), a real mlflow
server, real DVC. The tiny judge is over-fitted on its few training rows so that its sampled
judgments sometimes match gold and sometimes do not — which is what curation needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alignflow.components.config import load_config
from tests.conftest import produced, tiny_overrides

pytestmark = pytest.mark.integration

JUDGE = {"judge.n_problems": "6", "judge.heldout_fraction": "0.34", "judge.sampled_per_problem": "1",
         "judge.sft.epochs": "40", "judge.sft.lr": "5.0e-3", "judge.iterations": "2", "judge.n_samples": "3",
         "judge.preference.batch_size": "4", "judge.registered_model": "it-judge"}


def test_judge_loop_iterates_tracks_nested_runs_and_registers_the_judge(prefect_harness, mlflow_server, dvc_project):
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import JudgeRow, PairRow
    from alignflow.flows.judge import judge_loop

    overrides = tiny_overrides(dvc_project, **{"tracking.tracking_uri": mlflow_server,
                                               "tracking.experiment": "it-judge-loop", **JUDGE})
    result = judge_loop(load_config(None, overrides).model_dump(mode="json"))
    assert len(result.history) == 3  # seed + T = 2 iterations

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("it-judge-loop")
    assert exp is not None
    runs = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=500)}
    parent = runs[result.parent_run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["alignflow.kind"] == "judge_loop"
    assert parent.data.params["judge.curation.rejected_rule"] == "max_deviation"  # the unverified switches, logged
    iterations = sorted((r for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                         and r.data.tags.get("alignflow.kind") == "judge_iteration"),
                        key=lambda r: r.info.run_name or "")
    assert [r.info.run_name for r in iterations] == ["judge-iter-0", "judge-iter-1", "judge-iter-2"]
    for run in iterations:
        for key in ("judge/exact_accuracy", "judge/pairwise_agreement", "judge/malformed_rate"):
            assert key in run.data.metrics
        # MAE is over parsed scores only: undefined (and not logged as a number) when every judgment was malformed,
        # which the tiny judge can be on held-out questions it never saw
        assert ("judge/mae" in run.data.metrics) == (run.data.metrics["judge/malformed_rate"] < 1.0)
    curve = client.get_metric_history(parent.info.run_id, "judge/exact_accuracy")
    assert sorted(m.step for m in curve) == [0, 1, 2]

    # iteration 1: its tasks nested under it; the judge's own judgments became pairs and it was DPO-trained
    first = iterations[1]
    tasks = {r.info.run_name for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == first.info.run_id}
    assert {"judge-sample:t1", "judge-curate:t1"} <= tasks
    assert first.data.tags["trained"] == "True", "the over-fitted tiny judge gave no mixed judgments to curate"
    assert {"quality:judge-t1", "judge-dpo:t1", "judge-eval:t1"} <= tasks
    workspace = Path(result.workspace)
    judgments = [json.loads(line) for line in produced(workspace, "iter-1/*/judgments.jsonl").read_text().splitlines()]
    assert all(len(line["judgments"]) == 3 for line in judgments)
    assert all({c["tool"] for c in line["tool_calls"]} == {"check_equations", "verify_answer"} for line in judgments)
    pairs = read_rows(produced(workspace, "iter-1/*/judge-pairs.jsonl"), PairRow)
    assert pairs and all(p.score_chosen == p.lineage["gold_score"] for p in pairs)
    assert all(p.lineage["source"] == "judge-self" and p.lineage["judge_model_id"].startswith("judge-seed@")
               for p in pairs)
    assert Path(f"{produced(workspace, 'iter-1/*/judge-pairs.jsonl')}.dvc").exists()
    # held-out rows never share a question with the training rows
    train = read_rows(produced(workspace, "data/*/judge-train.jsonl"), JudgeRow)
    heldout = read_rows(produced(workspace, "data/*/judge-heldout.jsonl"), JudgeRow)
    assert train and heldout and not {r.context for r in train} & {r.context for r in heldout}

    # the judge is its own registered model, gated like a policy
    model = client.get_registered_model("it-judge")
    assert model.aliases["candidate"] == result.version
    version = client.get_model_version("it-judge", result.version)
    assert version.tags["role"] == "judge" and "judge_mae" in version.tags
    if result.promotion["passed"]:
        assert model.aliases["production"] == result.version
