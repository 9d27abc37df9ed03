"""A synthesized round end to end on the tiny model, with the judge taken from the MLflow registry.

The tiny model cannot judge, so the test gives it a judge whose behaviour is known: first the
untrained tiny model (every judgment malformed → no pairs → the round stops with a clear error),
then a tiny judge fitted to score exactly the completions the pool produced (5 for the first
pool member's answer, 2 for the second's), registered as a new version under the same alias.
The re-run reuses the sampled completions (Prefect cache), re-rates with the new judge (its id
is part of the cache key), binarizes, adds rationales and trains on rationale-enriched rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alignflow.components.config import SFTConfig, load_config
from tests.conftest import produced, tiny_overrides

pytestmark = pytest.mark.integration

ASPECTS = '{truthfulness: "5: the final answer is right. 1: it is wrong.", helpfulness: "5: helpful. 1: not helpful."}'


def _register(client: MlflowClient, tracking_uri: str, name: str, checkpoint: Path) -> str:
    from alignflow.components.platform.tracking import Tracker
    from alignflow.components.stages.register import register_checkpoint

    tracker = Tracker(tracking_uri, "it-synth-judges")
    run = tracker.start_run("judge")
    version = register_checkpoint(tracker, name, run, checkpoint, {"role": "judge"})
    tracker.end_run(run)
    client.set_registered_model_alias(name, "production", version)
    return version


def _fitted_judge(cfg, base_dir: Path, ratings_path: Path, out: Path) -> Path:
    """A tiny judge that has memorised one score per completion, for exactly these prompts."""
    from alignflow.components.judges.judge import JudgeInput, judge_from_config
    from alignflow.components.modeling.checkpoints import load_checkpoint, save_checkpoint
    from alignflow.components.trainers.sft import train_sft

    rows = [json.loads(line) for line in ratings_path.read_text().splitlines()]
    model = load_checkpoint(base_dir, trainable=True)
    judge = judge_from_config(cfg, model)
    prompts, targets = [], []
    for row in rows:
        score = 5 if row["pool_label"] == "current" and row["temperature"] == 0.7 else 2
        for rubric in cfg.synthesis.aspects.values():
            item = JudgeInput(row["question"], row["completion"], rubric, row["answer"])
            prompts.append(judge.prompt_for(item, judge.tool_calls(item)))
            targets.append(f"Rationale: checked.\nScore: {score}{model.tokenizer.eos_token}")
    train_sft(model, prompts, targets, SFTConfig(epochs=60, lr=5e-3, batch_size=8, max_length=1024, warmup_steps=0),
              seed=0)
    return save_checkpoint(model, out, {"model_id": "fitted-tiny-judge", "role": "judge"})


def test_synthesized_round_rates_binarizes_and_trains_on_rationale_rows(prefect_harness, mlflow_server, dvc_project):
    from alignflow.components.collection.quality import PairQualityError
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import PairRow
    from alignflow.components.modeling.checkpoints import materialize_base
    from alignflow.flows.pipeline import alignment_pipeline

    overrides = tiny_overrides(dvc_project, **{
        "tracking.tracking_uri": mlflow_server, "tracking.experiment": "it-synth", "rounds.n_rounds": "1",
        "rounds.kind": "synthesized", "sampling.prompts_per_round": "4", "synthesis.samples_per_policy": "1",
        "synthesis.judge": "models:/it-synth-judge@production", "synthesis.aspects": ASPECTS,
        "synthesis.rejected_strategy": "lowest", "synthesis.rationales": "true",
        "synthesis.rationale_max_new_tokens": "12", "judge.max_new_tokens": "16"})
    cfg = load_config(None, overrides)
    client = MlflowClient(mlflow_server)
    base_dir = materialize_base(cfg.model, cfg.seed, cfg.state_dir)
    _register(client, mlflow_server, "it-synth-judge", base_dir)  # v1: an untrained judge

    with pytest.raises(PairQualityError, match="no pairs"):
        alignment_pipeline(cfg.model_dump(mode="json"))
    round_dir = Path(cfg.workspace).resolve() / cfg.content_hash() / "round-1"
    ratings = produced(round_dir, "synthesis-*/ratings.jsonl")
    first = [json.loads(line) for line in ratings.read_text().splitlines()]
    assert len(first) == 4 * 2  # prompts × pool members (current @ 0.7 and @ 1.0)
    assert all(set(r["ratings"]) == {"truthfulness", "helpfulness"} for r in first)
    assert all(r["ratings"]["truthfulness"]["status"] == "malformed" for r in first)  # never scored by guessing

    fitted = _fitted_judge(cfg, base_dir, ratings, Path(cfg.state_dir) / "fitted-judge")
    assert _register(client, mlflow_server, "it-synth-judge", fitted) == "2"
    judge_version = client.get_model_version("it-synth-judge", "2")  # a judge is a chat model like a policy
    card = judge_version.description or ""
    assert (judge_version.source or "").startswith("models:/m-") and judge_version.tags["family"] == "judge"
    assert "(judge)" in card and "Rating responses" in card
    result = alignment_pipeline(cfg.model_dump(mode="json"))

    second = [json.loads(line) for line in ratings.read_text().splitlines()]
    assert [r["completion"] for r in second] == [r["completion"] for r in first]  # the pool's answers were reused
    scored = [r["ratings"]["truthfulness"]["score"] for r in second]
    assert sum(s is not None for s in scored) >= 6, f"the fitted judge did not reproduce its scores: {scored}"
    pairs = read_rows(produced(round_dir, "synthesis-*/pairs-rationale.jsonl"), PairRow)
    assert pairs and all(p.score_chosen > p.score_rejected for p in pairs)
    for p in pairs:
        assert p.lineage["source"] == "synthesis" and p.lineage["judge_model_id"] == "fitted-tiny-judge"
        assert p.lineage["chosen_temperature"] == 0.7 and p.lineage["rejected_strategy"] == "lowest"
        assert p.rationale_prompt and "Response A" in p.rationale_prompt
    assert any(p.rationale for p in pairs)

    exp = client.get_experiment_by_name("it-synth")
    assert exp is not None
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                                            max_results=200)}
    train = runs["train:r1"]
    assert train.inputs is not None and {d.dataset.name for d in train.inputs.dataset_inputs} == {"pairs-rationale-r1"}
    assert "train/rationale_logp" in train.data.metrics  # the §4 term was in the loss
    round_run = client.get_run(next(r.info.run_id for r in client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'") if r.info.run_name == "round-1"))
    assert round_run.data.tags["round_kind"] == "synthesized"
    assert round_run.data.metrics["quality/source/synthesis"] == len(pairs)
    # the judge's position bias, probed on the round's pairs both ways round
    assert 0 <= round_run.data.metrics["quality/judge_flip_rate"] <= 1
    assert round_run.data.metrics["quality/judge_probed_pairs"] == len(pairs)
