"""The reward_model stage on the tiny model: a separable toy preference learned (held-out accuracy above
chance, per constraint kind), the labeller path (samples ranked by a scorer, its lineage on every pair),
registration with aliases and the gate that keeps a worse reward model out of production, the model the
rounds score with, and the config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignflow.components.config import ConfigError, load_config
from alignflow.components.data.constraints import constraints_source
from tests.conftest import MODEL_CACHE
from tests.support.datafiles import write_jsonl

REFUSAL = "Sorry, I will not write that."


def _cfg(tmp_path: Path, *overrides: str):
    return load_config(None, [
        f"state_dir={tmp_path / 'state'}", "model.source=tiny", f"model.cache_dir={MODEL_CACHE}",
        "reward.enabled=true", "reward.lr=2e-3", "reward.epochs=4", "reward.batch_size=8", "reward.max_length=320",
        "reward.heldout_fraction=0.3", "scoring.scorers=[{type: reward_model}, {type: constraints, weight: 0}]",
        "pairs.strategy=best_vs_worst", *overrides])


def _toy_preferences(tmp_path: Path, n: int = 40) -> str:
    """Constraint instructions: chosen = the reference response (meets every constraint), rejected = a
    refusal. Separable by what the response says, on prompts the model never trained on."""
    rows = constraints_source("prompts", 11, 1, n, 1)
    write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": REFUSAL,
                                            "constraints": r["constraints"]} for r in rows])
    return f"data.sources.preferences=[{{source: {tmp_path / 'prefs.jsonl'}}}]"


def _base(cfg):
    from alignflow.components.modeling.checkpoints import materialize_base
    from alignflow.components.stages.results import Checkpoint

    return Checkpoint(path=str(materialize_base(cfg.model, cfg.seed, cfg.state_dir)), model_id="tiny-base")


def _trained(tmp_path: Path, cfg, name: str = "rm"):
    from alignflow.components.stages.data import prepare_data
    from alignflow.components.stages.reward_model import reward_pairs, train_reward_model

    data = prepare_data(cfg, tmp_path / f"data-{name}")
    base = _base(cfg)
    pairs = reward_pairs(cfg, base, None, data.preferences, tmp_path / f"pairs-{name}")
    return base, pairs, train_reward_model(cfg, base, pairs, tmp_path / name)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The reward model trained once on the toy preference: (config, base, pairs, result)."""
    tmp_path = tmp_path_factory.mktemp("toy-reward")
    cfg = _cfg(tmp_path, _toy_preferences(tmp_path), "scoring.scorers=[{type: reward_model, batch_size: 2}, "
                                                     "{type: constraints, weight: 0}]")
    return cfg, *_trained(tmp_path, cfg)


def test_the_stage_learns_a_separable_toy_preference_and_reports_it_per_constraint_kind(toy):
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import PairRow
    from alignflow.components.modeling.checkpoints import read_metadata

    cfg, base, pairs, result = toy
    train, heldout = read_rows(pairs.train.file, PairRow), read_rows(pairs.heldout.file, PairRow)
    assert pairs.source == "preferences" and pairs.n_train == len(train) and pairs.n_heldout == len(heldout) >= 5
    assert not {p.problem_id for p in train} & {p.problem_id for p in heldout}  # split by prompt
    assert all(p.categories for p in heldout)  # a constraints prompt's kinds
    metrics = result.metrics
    assert metrics["reward/accuracy"] >= 0.9 > 0.5  # held-out prompts: learned, not memorized
    assert metrics["reward/n_pairs"] == len(heldout) and 0.0 <= metrics["reward/ece"] <= 0.5
    kinds = {k for p in heldout for k in p.categories}
    assert {f"reward/accuracy/{k}" for k in kinds} <= set(metrics)
    losses = [h["train/loss"] for h in result.history]
    assert len(losses) == result.steps and losses[-1] < losses[0]
    assert Path(result.calibration_plot).read_bytes()[:4] == b"\x89PNG"
    meta = read_metadata(result.checkpoint.dir)  # lineage by identity: what scorers and the registry read
    assert meta["model_id"] == result.checkpoint.model_id and meta["parent"] == base.model_id
    assert meta["pairs_source"] == "preferences" and meta["inputs"]["heldout_pairs"]["md5"] == pairs.heldout.md5


def test_the_labeller_path_ranks_the_policy_s_samples_and_names_the_labeller(tmp_path):
    from alignflow.components.data.io import read_rows
    from alignflow.components.data.schemas import CompletionRow, PairRow
    from alignflow.components.stages.data import prepare_data
    from alignflow.components.stages.reward_model import reward_pairs

    (tmp_path / "rewards.py").write_text("def longer(prompts, completions, **columns):\n"
                                         "    return [float(len(c)) for c in completions]\n")
    sources = [f"data.sources.{role}=[{{source: 'builtin:constraints'}}]" for role in ("sft", "prompts", "eval")]
    cfg = _cfg(tmp_path, *sources, "data.constraints.n_sft=4", "data.constraints.n_train_prompts=30",
               "data.constraints.n_eval=4", "reward.prompts=20", "reward.samples_per_prompt=3",
               "sampling.max_new_tokens=12", "sampling.temperature=1.0",
               f"reward.labeller={{type: python, name: longer, function: '{tmp_path / 'rewards.py'}:longer'}}")
    data = prepare_data(cfg, tmp_path / "data")
    pairs = reward_pairs(cfg, _base(cfg), data.role("prompts"), None, tmp_path / "pairs")
    assert pairs.source == "labeller:longer" and pairs.labeller["id"] == "longer"
    assert pairs.labeller["version"].startswith("python@") and pairs.samples is not None
    samples = read_rows(pairs.samples.file, CompletionRow)
    assert len(samples) == 20 * 3 and len({s.prompt_id for s in samples}) == 20
    # the end of the prompts role: round 1 samples the beginning
    prompts = [json.loads(line)["id"] for line in Path(data.role("prompts").path).read_text().splitlines()]
    assert {s.prompt_id for s in samples} == set(prompts[-20:])
    rows = read_rows(pairs.train.file, PairRow) + read_rows(pairs.heldout.file, PairRow)
    assert rows and all(p.score_chosen > p.score_rejected and len(p.chosen) > len(p.rejected) for p in rows)
    assert all(p.lineage["labeller"] == pairs.labeller and p.lineage["policy_model_id"] == pairs.policy_model_id
               for p in rows)
    assert all(len([p for p in rows if p.problem_id == q]) <= cfg.reward.max_pairs_per_prompt
               for q in {p.problem_id for p in rows})


def test_a_worse_reward_model_does_not_replace_production(toy, tmp_path):
    """v1 (learned the preference) is registered, gated and promoted; v2, trained on the pairs flipped, is
    scored on its own held-out pairs — where production is scored too — and blocked: production stays v1."""
    from alignflow.components.config import PromotionConfig
    from alignflow.components.data.io import read_rows, write_rows
    from alignflow.components.data.schemas import PairRow
    from alignflow.components.evaluation.gates import Remeasured, decide_promotion
    from alignflow.components.platform import registry
    from alignflow.components.platform.tracking import Tracker
    from alignflow.components.stages.register import register_checkpoint
    from alignflow.components.stages.results import Artifact
    from alignflow.components.stages.reward_model import METRIC, evaluate_reward_model, train_reward_model

    cfg, base, pairs, good = toy
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "reward")

    def register(result, heldout_md5: str) -> str:
        run = tracker.start_run("reward-model")
        version = register_checkpoint(tracker, "reward", run, result.checkpoint.dir, {
            "model_id": result.checkpoint.model_id, "eval_metric_name": METRIC,
            "eval_metric": result.metrics[METRIC], "eval_dataset": heldout_md5, "baseline_metric": "nan"})
        tracker.end_run(run)
        return version

    def gate(version: str, remeasured: Remeasured | None):
        production = registry.version_for_alias(tracker, "reward", "production")
        tags = dict(tracker.get_model_version("reward", version).tags or {})
        return decide_promotion("reward", version, tags, production and str(production.version),
                                production and dict(production.tags or {}), PromotionConfig(), policy_gates=False,
                                min_metric=0.0, remeasured=remeasured)

    def aliases() -> dict[str, str]:
        found = {a: registry.version_for_alias(tracker, "reward", a) for a in ("candidate", "staging", "production")}
        return {a: str(v.version) for a, v in found.items() if v is not None}

    v1 = register(good, pairs.heldout.md5)
    first = gate(v1, None)
    assert first.passed and registry.apply_promotion(tracker, "reward", first, "production") == ["staging",
                                                                                                   "production"]
    assert aliases() == {"candidate": v1, "staging": v1, "production": v1}

    flipped = [p.model_copy(update={"chosen": p.rejected, "rejected": p.chosen})
               for p in read_rows(pairs.train.file, PairRow)]
    bad_pairs = pairs.model_copy(update={"train": Artifact.of(write_rows(tmp_path / "flipped.jsonl", flipped))})
    bad = train_reward_model(cfg, base, bad_pairs, tmp_path / "bad")
    assert bad.metrics[METRIC] < 0.5  # it learned the opposite
    v2 = register(bad, pairs.heldout.md5)
    production_dir = registry.download_version(tracker, "reward", "production", tmp_path / "cache")[0]
    measured = evaluate_reward_model(cfg, good.checkpoint.model_copy(update={"path": str(production_dir)}),
                                     pairs.heldout, tmp_path / "production-eval")
    assert measured.metrics[METRIC] == pytest.approx(good.metrics[METRIC])  # the same model, the same pairs
    # the version is an MLflow reward pyfunc too: served, it ranks the held-out pairs as alignflow did
    import mlflow.pyfunc

    version_tags = tracker.get_model_version("reward", v1).tags
    assert version_tags["family"] == "reward" and version_tags["reward_head"] == "scalar"
    from alignflow.components.platform.versioning import weights_sha256

    assert version_tags["base_weights_sha256"] == weights_sha256(base.dir)  # the base it started from, not itself
    assert str(tmp_path) not in (production_dir / "alignflow_model.json").read_text()  # nothing names this machine
    served = mlflow.pyfunc.load_model(str(production_dir.parent.parent))  # the version's root: MLmodel
    heldout = read_rows(pairs.heldout.file, PairRow)
    chosen = served.predict([{"prompt": p.prompt, "response": p.chosen} for p in heldout])
    rejected = served.predict([{"prompt": p.prompt, "response": p.rejected} for p in heldout])
    wins = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(heldout)
    assert wins == pytest.approx(measured.metrics[METRIC])
    second = gate(v2, Remeasured(v1, METRIC, measured.metrics[METRIC], pairs.heldout.md5))
    assert not second.passed and {g.gate: g.status for g in second.gates} == {"metric_delta": "failed",
                                                                              "min_metric": "passed"}
    assert "metric gate FAILED: reward/accuracy" in second.reason and "production v1" in second.reason
    assert registry.apply_promotion(tracker, "reward", second, "production") == []
    assert aliases() == {"candidate": v2, "staging": v1, "production": v1}


def test_the_rounds_score_with_the_stage_s_model_batched_and_named_by_its_model_id(toy):
    from alignflow.components.scoring.base import ScoringItem, score_all
    from alignflow.components.scoring.build import build_scorers
    from alignflow.components.stages.reward_model import bind_reward_model, needs_pipeline_reward_model
    from alignflow.components.stages.score import scorer_models

    cfg, _, _, result = toy
    assert needs_pipeline_reward_model(cfg)
    with pytest.raises(ValueError, match="unset means the reward model of the pipeline's reward_model stage"):
        build_scorers(cfg)
    bound = bind_reward_model(cfg, result.checkpoint.path)
    assert not needs_pipeline_reward_model(bound) and bound.scoring.scorers[1] == cfg.scoring.scorers[1]
    scorers = build_scorers(bound)
    assert scorer_models(scorers) == {"reward_model": result.checkpoint.model_id}
    rows = constraints_source("eval", 11, 1, 1, 5)
    items = [ScoringItem(f"p{i}", r["prompt"], text, {"constraints": r["constraints"]})
             for i, r in enumerate(rows) for text in (r["completion"], REFUSAL)]
    run = score_all(scorers, items)  # 10 completions in batches of 2
    rewards = [r for s in run.scored if (r := s.scores["reward_model"]) is not None]
    assert len(rewards) == 10 and all(rewards[i] > rewards[i + 1] for i in range(0, 10, 2))  # reference > refusal
    # the weight-0 verifier is measured but never moves the combined score
    assert [s.score for s in run.scored] == rewards and run.scored[0].scores["constraints"] == 1.0
    assert set(run.seconds) == {"reward_model", "constraints"}


def test_which_reward_model_the_rounds_score_with():
    from alignflow.components.stages.results import Checkpoint
    from alignflow.components.stages.reward_model import scoring_reward_model

    new, production = Checkpoint(path="/new", model_id="new"), Checkpoint(path="/prod", model_id="prod")
    assert scoring_reward_model(new, True, production, True, "rm") == new
    assert scoring_reward_model(new, False, production, True, "rm") == production
    assert scoring_reward_model(new, False, None, False, "rm") == new  # nothing scores with it: no error
    with pytest.raises(ValueError, match="failed its gate .* has no production version"):
        scoring_reward_model(new, False, None, True, "rm")


@pytest.mark.parametrize("overrides,message", [
    (["scoring.scorers=[{type: reward_model}]"], "set reward.enabled: true"),
    (["reward.enabled=true", "reward.labeller={type: constraints}", "reward.loss=gpm",
      "scoring.scorers=[{type: reward_model}]"], "scores pairs, not single completions"),
    (["reward.enabled=true"], "set data.sources.preferences, or reward.labeller"),
    (["reward.enabled=true", "reward.labeller={type: constraints}", "reward.loss=regression"],
     "set reward.n_attributes: 1"),
    (["reward.enabled=true", "reward.labeller={type: reward_model}"], "labeller: a reward_model labeller without"),
    (["reward.labeller={type: constraints}"], "has no effect with enabled false"),
    (["reward.trainable_layers=4"], "trainable_layers=4 has no effect with enabled false"),
    (["reward.enabled=true", "reward.source=models:/alignflow-reward@production", "reward.prompts=8"],
     "prompts=8 has no effect with source"),
])
def test_the_stage_s_settings_are_checked_at_load_time(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_a_registered_reward_model_needs_no_labeller_and_regression_one_attribute():
    cfg = load_config(None, ["reward.enabled=true", "reward.source=models:/alignflow-reward@production",
                             "scoring.scorers=[{type: reward_model}]", "pairs.strategy=best_vs_worst"])
    assert cfg.reward.source and cfg.scoring.scorers[0].model is None
    cfg = load_config(None, ["reward.enabled=true", "reward.labeller={type: constraints}", "reward.loss=regression",
                             "reward.n_attributes=1"])
    assert cfg.reward.head == "multi_attribute"


def test_regression_fits_the_labeller_s_scores_and_scores_completions(tmp_path):
    """reward.loss regression: one attribute regressed onto the labeller's score of every training sample;
    the saved model ranks held-out pairs by it and the reward_model scorer reads that attribute."""
    from alignflow.components.scoring.base import ScoringItem
    from alignflow.components.scoring.build import build_scorers
    from alignflow.components.stages.data import prepare_data
    from alignflow.components.stages.reward_model import bind_reward_model, reward_pairs, train_reward_model

    (tmp_path / "rewards.py").write_text("def short(prompts, completions, **columns):\n"
                                         "    return [-float(len(c)) for c in completions]\n")
    sources = [f"data.sources.{role}=[{{source: 'builtin:constraints'}}]" for role in ("sft", "prompts", "eval")]
    cfg = _cfg(tmp_path, *sources, "data.constraints.n_sft=4", "data.constraints.n_train_prompts=24",
               "data.constraints.n_eval=4", "reward.prompts=24", "reward.samples_per_prompt=3",
               "sampling.max_new_tokens=16", "sampling.temperature=1.0", "reward.loss=regression",
               "reward.n_attributes=1", "reward.epochs=6",
               f"reward.labeller={{type: python, name: short, function: '{tmp_path / 'rewards.py'}:short'}}")
    data = prepare_data(cfg, tmp_path / "data")
    base = _base(cfg)
    pairs = reward_pairs(cfg, base, data.role("prompts"), None, tmp_path / "pairs")
    result = train_reward_model(cfg, base, pairs, tmp_path / "rm")
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"] and "train/mae" in result.history[0]
    assert 0.0 <= result.metrics["reward/accuracy"] <= 1.0 and result.metrics["reward/n_pairs"] == pairs.n_heldout
    [scorer, _] = build_scorers(bind_reward_model(cfg, result.checkpoint.path))
    rows = constraints_source("eval", 2, 1, 1, 2)
    scores = scorer.score([ScoringItem(f"p{i}", r["prompt"], "ok", {}) for i, r in enumerate(rows)])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
