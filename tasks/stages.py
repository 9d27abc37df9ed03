"""One Prefect task per pipeline stage: ``tracked_step`` around the stage function, cached by
``compute`` (inputs minus ``ctx``, the task's source, the stage's code version).

Each task names the stage module it calls once, in its ``compute(...)`` options and in its
``tracked_step`` call, so its cache key and its run's ``code_version`` tag describe the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.components.platform.tracking import flatten
from alignflow.components.stages import (
    base_model,
    data,
    launch,
    mcts,
    offline,
    pairs,
    quality,
    score,
    sft,
    sharded,
    strength,
)
from alignflow.components.stages.results import (
    Artifact,
    BaseModelResult,
    Checkpoint,
    DataResult,
    EvalResult,
    MCTSResult,
    PairsResult,
    PreferenceTrainResult,
    QualityResult,
    SampleResult,
    ScoreResult,
    SFTResult,
    StrengthResult,
)
from alignflow.tasks.context import (
    TrackingContext,
    compute,
    config_of,
    record_timing,
    section_params,
    tracked_step,
    versioned_dir,
)

# what an MLflow dataset input of a role file shows as its schema: the canonical Example row
EXAMPLE_SCHEMA = {"row": "alignflow.components.data.formats.Example",
                  "fields": ["id", "prompt", "completion", "chosen", "rejected", "columns", "origin"]}


@task(name="prepare-data", **compute(data.__name__))
def prepare_data_task(config: dict[str, Any], out_dir: str, ctx: TrackingContext) -> DataResult:
    return tracked_step(
        ctx, "prepare-data", lambda _: data.prepare_data(config_of(config), versioned_dir(out_dir, data.__name__)),
        stage_module=data.__name__,
        params=flatten(config["data"], "data."),
        outputs=lambda r: [(role, file, "imported", EXAMPLE_SCHEMA, r.profiles.get(role, {}))
                           for role in ("sft", "prompts", "preferences", "eval") if (file := getattr(r, role))],
        metrics=lambda r: {**{f"data/n_{k}": v for k, v in r.counts.items()},
                           **{f"data/{role}/{k}": v for role, p in r.profiles.items() for k, v in p.items()
                              if isinstance(v, (int, float))},
                           "data/contaminated_prompts": len(r.contaminated)})


# Not cached: it resolves a directory outside the workspace (the model cache), which may have
# been cleared since; re-resolving costs one hash of the GGUF (~0.3 s) when the cache exists.
@task(name="prepare-base-model", cache_policy=NO_CACHE, retries=1)
def prepare_base_task(config: dict[str, Any], ctx: TrackingContext) -> BaseModelResult:
    result = base_model.prepare_base(config_of(config))
    record_timing(ctx, "prepare-base-model", result.seconds)
    return result


@task(name="sft", **compute(sft.__name__))
def sft_task(config: dict[str, Any], base: Checkpoint, sft_data: Artifact, out_dir: str,
             ctx: TrackingContext) -> SFTResult:
    return tracked_step(
        ctx, "sft", lambda on_step: sft.run_sft(config_of(config), base, sft_data,
                                                versioned_dir(out_dir, sft.__name__), on_step),
        stage_module=sft.__name__, inputs=[("sft", sft_data, "training")], params=section_params("sft", config["sft"]),
        metrics=lambda r: r.fit.metrics("sft"),
        tags=lambda r: {"model_id": r.checkpoint.model_id, "resumed_from_step": r.resumed_from_step})


# both run on launch.nproc_per_node ranks when it is > 1 (stages/sharded.py); its module names the code
@task(name="evaluate", **compute(sharded.__name__))
def evaluate_task(config: dict[str, Any], policy: Checkpoint, reference: Checkpoint | None, eval_data: Artifact,
                  out_dir: str, seed: int, label: str, ctx: TrackingContext) -> EvalResult:
    return tracked_step(
        ctx, f"evaluate:{label}",
        lambda _: sharded.evaluate_launched(config_of(config), policy, reference, eval_data,
                                            versioned_dir(out_dir, sharded.__name__, "evaluate"), seed),
        stage_module=sharded.__name__, inputs=[("eval", eval_data, "evaluation")], timer="eval",
        metrics=lambda r: {**r.metrics, "eval/sampler_stall_seconds": r.stall_seconds},
        artifacts=lambda r: [(r.metrics_file.path, "")])


@task(name="sample", **compute(sharded.__name__))
def sample_task(config: dict[str, Any], policy: Checkpoint, prompts: Artifact, round_index: int, out_dir: str,
                ctx: TrackingContext) -> SampleResult:
    return tracked_step(
        ctx, f"sample:r{round_index}",
        lambda _: sharded.sample_launched(config_of(config), policy, prompts, round_index,
                                          versioned_dir(out_dir, sharded.__name__, "sample")),
        stage_module=sharded.__name__, inputs=[("prompts", prompts, "sampling")], timer="sampling",
        params=section_params("sampling", config["sampling"]),
        metrics=lambda r: {"sampling/n_samples": r.n_samples, "sampling/generated_tokens": r.generated_tokens,
                           "sampling/tokens_per_second": r.generated_tokens / max(r.seconds, 1e-9),
                           "sampling/stall_seconds": r.stall_seconds, "sampling/ranks": r.ranks})


@task(name="mcts-search", **compute(mcts.__name__))
def mcts_task(config: dict[str, Any], policy: Checkpoint, prompts: Artifact, round_index: int, out_dir: str,
              ctx: TrackingContext) -> MCTSResult:
    return tracked_step(
        ctx, f"mcts:r{round_index}",
        lambda _: mcts.mcts_collect(config_of(config), policy, prompts, round_index,
                                    versioned_dir(out_dir, mcts.__name__)),
        stage_module=mcts.__name__, inputs=[("prompts", prompts, "search")], timer="mcts",
        params=section_params("mcts", config["mcts"]),
        outputs=lambda r: [(f"pairs-r{round_index}", r.pairs, "pairs")],
        metrics=lambda r: {"mcts/trees": r.n_trees, "mcts/trees_kept": r.trees_kept, "mcts/nodes": r.n_nodes,
                           "mcts/pairs": r.n_pairs, "mcts/final_accuracy": r.final_accuracy,
                           "mcts/nodes_per_second": r.nodes_per_second, "mcts/tokens_encoded": r.tokens_encoded,
                           "time/search_seconds": r.search_seconds},
        artifacts=lambda r: [(r.trees.path, "trees"), (r.tree_html, "trees")])


@task(name="score", **compute(score.__name__))
def score_task(config: dict[str, Any], samples: Artifact, round_index: int, out_dir: str,
               ctx: TrackingContext) -> ScoreResult:
    return tracked_step(
        ctx, f"score:r{round_index}",
        lambda _: score.score(config_of(config), samples, versioned_dir(out_dir, score.__name__)),
        stage_module=score.__name__, timer="scoring", params=flatten(config["scoring"], "scoring."),
        metrics=lambda r: {"scoring/sample_accuracy": r.sample_accuracy,
                           "scoring/prompts_with_a_correct_sample": r.prompts_with_a_correct_sample,
                           "scoring/cache_hits": r.cache_hits,
                           **{f"scoring/{k}/mean": v for k, v in r.score_means.items()},
                           **{f"scoring/{k}/seconds": v for k, v in r.scorer_seconds.items()}},
        tags=lambda r: {"input_md5": samples.md5, **{f"scorer.{k}": v for k, v in r.scorers.items()},
                        **{f"scorer_model.{k}": v for k, v in r.scorer_models.items()}})


@task(name="build-pairs", **compute(pairs.__name__))
def pairs_task(config: dict[str, Any], scored: ScoreResult, policy_model_id: str, round_index: int, seed: int,
               out_dir: str, ctx: TrackingContext) -> PairsResult:
    return tracked_step(
        ctx, f"pairs:r{round_index}",
        lambda _: pairs.make_pairs(config_of(config), scored, policy_model_id, round_index, seed,
                                   versioned_dir(out_dir, pairs.__name__)),
        stage_module=pairs.__name__, params=section_params("pairs", config["pairs"]),
        outputs=lambda r: [(f"pairs-r{round_index}", r.pairs, "pairs")],
        metrics=lambda r: {"pairs/n_pairs": r.n_pairs}, tags=lambda r: {"scored_md5": scored.scored.md5})


@task(name="preference-strength", **compute(strength.__name__))
def strength_task(config: dict[str, Any], backbone: Checkpoint, round_pairs: Artifact, round_index: int,
                  out_dir: str, ctx: TrackingContext) -> StrengthResult:
    return tracked_step(
        ctx, f"strength:r{round_index}",
        lambda _: strength.preference_strength(config_of(config), backbone, round_pairs, round_index,
                                               versioned_dir(out_dir, strength.__name__)),
        stage_module=strength.__name__, inputs=[(f"pairs-r{round_index}", round_pairs, "scoring")],
        params=section_params("reward", config["reward"]),
        outputs=lambda r: [(f"pairs-strength-r{round_index}", r.pairs, "pairs")],
        metrics=lambda r: {"strength/n_flipped": r.n_flipped, "strength/n_smoothed": r.n_smoothed,
                           "strength/mean": r.strength_mean, "strength/std": r.strength_std,
                           "strength/ensemble_agreement": r.ensemble_agreement, **r.fit.metrics("reward")})


@task(name="train-preference", **compute(launch.__name__))
def train_task(config: dict[str, Any], policy: Checkpoint, reference: Checkpoint, training_pairs: Artifact,
               round_index: int, out_dir: str, ref_cache_dir: str, ctx: TrackingContext) -> PreferenceTrainResult:
    return tracked_step(
        ctx, f"train:r{round_index}",
        lambda on_step: launch.train_round_launched(config_of(config), policy, reference, training_pairs, round_index,
                                                    versioned_dir(out_dir, launch.__name__, "train"),
                                                    Path(ref_cache_dir), on_step),
        stage_module=launch.__name__,
        # pairs-rN, or pairs-strength-rN when a reward ensemble curated them
        inputs=[(f"{training_pairs.file.stem}-r{round_index}", training_pairs, "training")],
        params=section_params("preference", config["preference"]),
        tags=lambda r: {"model_id": r.checkpoint.model_id, "reference_cache": r.reference.cache_file,
                        "reference_cached": r.reference.cached, "resumed_from_step": r.resumed_from_step},
        metrics=lambda r: {"time/reference_logprobs_seconds": r.reference.seconds, **r.fit.metrics("train")},
        # the reference log-probs this round trained against, with what produced them
        artifacts=lambda r: [(r.reference.cache_file, "reference_logps"),
                             (r.reference.lineage_file, "reference_logps")])


# Not retried: a failed threshold is a verdict on the data, and re-reading it gives the same one.
@task(name="pair-quality", **compute(quality.__name__, retries=0))
def quality_task(config: dict[str, Any], round_pairs: Artifact, heldout: Artifact, label: str, out_dir: str,
                 ctx: TrackingContext) -> QualityResult:
    """The pair file's quality report, logged (metrics, a table, the PNG) before the thresholds are
    checked, so a round that fails its gate still shows why in MLflow. ``heldout``: the file whose
    questions must not be trained on (eval problems, or held-out judge rows)."""
    cfg = config_of(config)
    return tracked_step(
        ctx, f"quality:{label}",
        lambda _: quality.report_pair_file(round_pairs, heldout, cfg.quality, versioned_dir(out_dir, quality.__name__),
                                           f"pair quality, {label}"),
        stage_module=quality.__name__, params=section_params("quality", config["quality"]), metrics=lambda r: r.metrics,
        tags=lambda r: {"pairs_md5": round_pairs.md5, "quality_failures": "; ".join(r.failures) or "none"},
        artifacts=lambda r: [(r.plot, "quality"), (r.report_json.path, "quality")],
        tables=lambda r: [(r.table(), f"quality/{label}.json")], check=lambda r: r.raise_on_failures())


@task(name="preference-pairs", **compute(offline.__name__))
def offline_pairs_task(config: dict[str, Any], policy: Checkpoint, preferences: Artifact, out_dir: str,
                       ctx: TrackingContext) -> PairsResult:
    return tracked_step(
        ctx, "preference-pairs:r0",
        lambda _: offline.preference_pairs(config_of(config), policy, preferences,
                                           versioned_dir(out_dir, offline.__name__)),
        stage_module=offline.__name__, inputs=[("preferences", preferences, "training")],
        outputs=lambda r: [("pairs-r0", r.pairs, "pairs")], metrics=lambda r: {"pairs/n_pairs": r.n_pairs})
