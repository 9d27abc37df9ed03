"""The reward-model path end to end on the tiny model (Prefect harness, a real mlflow server, real DVC):
builtin:constraints → SFT → the reward_model step (the SFT policy's samples ranked by the constraints
verifier, a reward model trained, evaluated, registered and gated in its own nested run) → a round
scored by that reward model (best-vs-worst pairs whose lineage names it) with the verifier at weight 0
beside it → eval of both → the proxy/truth plot and the proxy-gap gate on the registered policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alignflow.components.config import load_config
from tests.conftest import produced, tiny_overrides

pytestmark = pytest.mark.integration

PROXY, TRUTH = "eval/reward_model/mean", "eval/constraints/pass_rate"


def test_reward_model_stage_and_a_round_scored_by_it(prefect_harness, mlflow_server, dvc_project):
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import PairRow
    from alignflow.flows.pipeline import alignment_pipeline
    from alignflow.flows.reward import reward_model_step
    from alignflow.tasks.context import TrackingContext

    builtin = "[{source: 'builtin:constraints'}]"
    overrides = tiny_overrides(dvc_project, **{
        "tracking.tracking_uri": mlflow_server, "tracking.experiment": "it-reward",
        "tracking.registered_model": "it-reward-policy", "rounds.n_rounds": "1",
        **{f"data.sources.{role}": builtin for role in ("sft", "prompts", "eval")},
        "data.constraints.n_sft": "16", "data.constraints.n_train_prompts": "24", "data.constraints.n_eval": "12",
        "sft.max_length": "320", "preference.max_length": "320", "sampling.max_new_tokens": "16",
        "eval.max_new_tokens": "16", "eval.group_by": "[n_constraints]",
        "reward.enabled": "true", "reward.registered_model": "it-reward", "reward.labeller": "{type: constraints}",
        "reward.prompts": "24", "reward.samples_per_prompt": "4", "reward.heldout_fraction": "0.4",
        "reward.min_accuracy": "0.0", "reward.lr": "1.0e-3", "reward.epochs": "2", "reward.batch_size": "8",
        "reward.max_length": "320",
        "scoring.scorers": "[{type: reward_model, batch_size: 8}, {type: constraints, weight: 0}]",
        "pairs.strategy": "best_vs_worst", "promotion.proxy_metric": PROXY, "promotion.truth_metric": TRUTH})
    result = alignment_pipeline(load_config(None, overrides).model_dump(mode="json"))
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("it-reward")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id], max_results=300)}

    # the reward_model step: its own nested run under the pipeline's, holding its tasks
    step = runs["reward-model"]
    assert step.data.tags["mlflow.parentRunId"] == result.parent_run_id and step.info.status == "FINISHED"
    tasks = {r.info.run_name for r in runs.values() if r.data.tags.get("mlflow.parentRunId") == step.info.run_id}
    assert tasks == {"reward-pairs", "quality:reward", "reward-train"}  # nothing in production to compare with yet
    pairs_run, train_run = runs["reward-pairs"], runs["reward-train"]
    assert pairs_run.data.tags["pairs_source"] == "labeller:constraints"
    assert pairs_run.data.tags["labeller.version"].startswith("constraints@")
    curve = client.get_metric_history(train_run.info.run_id, "reward/train/loss")
    assert len(curve) >= 2 and [m.step for m in curve] == sorted(m.step for m in curve)
    assert 0.0 <= train_run.data.metrics["reward/accuracy"] <= 1.0 and "reward/ece" in train_run.data.metrics
    assert any(k.startswith("reward/accuracy/") for k in train_run.data.metrics)  # per constraint kind
    plots = {Path(a.path).name for a in client.list_artifacts(train_run.info.run_id, "reward_model")}
    assert "calibration.png" in plots
    rm_pairs = read_rows(produced(result.workspace, "reward-model/pairs/*/train.jsonl"), PairRow)
    assert rm_pairs and all(p.lineage["labeller"]["id"] == "constraints" and p.categories for p in rm_pairs)

    # registered with aliases, gated on its own held-out accuracy
    reward_model = client.get_registered_model("it-reward")
    assert reward_model.aliases == {"candidate": "1", "staging": "1", "production": "1"}
    version = client.get_model_version("it-reward", "1")
    assert version.tags["eval_metric_name"] == "reward/accuracy" and version.tags["role"] == "reward_model"
    assert version.tags["gate.min_metric"] == "passed" and version.tags["labeller.id"] == "constraints"
    rm_id = version.tags["model_id"]
    assert step.data.tags["reward_model.model_id"] == rm_id == train_run.data.tags["model_id"]

    # the round: k samples scored by that reward model, best-vs-worst pairs naming it, its time its own entry
    round_run, score_run = runs["round-1"], runs["score:r1"]
    assert score_run.data.tags["scorer_model.reward_model"] == rm_id
    assert score_run.data.tags["scorer.reward_model"].startswith("reward_model@")
    assert round_run.data.metrics["time/reward_model_scoring_seconds"] > 0
    pairs = read_rows(produced(result.workspace, "round-1/pairs-*/pairs.jsonl"), PairRow)
    assert pairs and all(p.lineage["scorer_models"] == {"reward_model": rm_id} for p in pairs)
    assert all(p.lineage["strategy"] == "best_vs_worst" and p.score_chosen > p.score_rejected for p in pairs)
    # the combined score is the reward model's alone: the weight-0 verifier is measured, never mixed in
    assert all(p.score_chosen == p.lineage["chosen_scores"]["reward_model"] for p in pairs)
    assert all("constraints" in p.lineage["chosen_scores"] for p in pairs)

    # both metrics per round on held-out prompts, a plot of the two, and the proxy-gap gate on the policy
    for key in (PROXY, TRUTH, "eval/constraints/mean"):
        assert key in round_run.data.metrics and key in runs["evaluate:baseline"].data.metrics
    assert any(k.startswith("eval/constraints/kind/") for k in round_run.data.metrics)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["reward_model.model_id"] == rm_id
    assert [m.step for m in client.get_metric_history(result.parent_run_id, PROXY)] == [0, 1]
    assert {Path(a.path).name for a in client.list_artifacts(result.parent_run_id, "reward_hacking")} == {
        "proxy_vs_truth.png"}
    policy = client.get_model_version("it-reward-policy", result.version)
    assert policy.tags["proxy_metric_name"] == PROXY and policy.tags["truth_metric_name"] == TRUTH
    assert float(policy.tags["truth_metric"]) == pytest.approx(round_run.data.metrics[TRUTH])
    gates = {g["gate"]: g for g in result.promotion["gates"]}
    assert gates["proxy_gap"]["status"] in ("passed", "failed") and TRUTH in gates["proxy_gap"]["detail"]
    assert result.metric == PROXY  # promotion.metric auto: the primary scorer (the reward model) has no pass rule
    report = json.loads(Path(result.workspace, "promotion", "gate_report.json").read_text())
    assert "proxy_gap" in {g["gate"] for g in report["gates"]}

    # reward.source: the step resolves the registered reward model and trains nothing
    registered = load_config(None, [*overrides, "reward.source=models:/it-reward@production", "reward.prompts=64",
                                    "reward.labeller=null", "reward.heldout_fraction=0.2", "reward.min_accuracy=0.6"])
    ctx = TrackingContext(tracking_uri=mlflow_server, experiment="it-reward", parent_run_id=result.parent_run_id)
    resolved = reward_model_step(registered.model_dump(mode="json"), result.policy, _data(result), result.workspace,
                                 str(Path(result.workspace) / "unused"), ctx)
    assert resolved.trained is None and resolved.checkpoint.model_id == rm_id
    assert resolved.source == "models:/it-reward@production = it-reward/v1"


def _data(result):
    """The pipeline's DataResult, as the flow handed it on (read back from its prepare-data files)."""
    from alignflow.components.stages.results import Artifact, DataResult

    def role(name: str) -> Artifact:
        return Artifact.of(produced(result.workspace, f"data/*/{name}.jsonl"))

    return DataResult(sft=role("sft"), prompts=role("prompts"), preferences=None, eval=role("eval"), counts={},
                      seconds=0.0)
