"""Prefect tasks of preference synthesis (``components/stages/synthesis.py``): the pool answers, the
judge rates, ratings become pairs (optionally with rationales), the judge's position bias is probed.
``tracked_step`` around each stage, cached by ``compute``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.components.collection.quality import check_position_bias
from alignflow.components.collection.synthesis import PoolMember
from alignflow.components.judges.judge import judgment_cache_path
from alignflow.components.stages import synthesis as stage
from alignflow.components.stages.resolve import resolve_model
from alignflow.components.stages.results import (
    Artifact,
    Checkpoint,
    PoolSampleResult,
    PositionBiasResult,
    RatingsResult,
    ResolvedModel,
    SynthesisPairsResult,
)
from alignflow.tasks.context import TrackingContext, compute, config_of, tracked_step, versioned_dir

STAGE = stage.__name__


# Not cached: the alias may have moved since (a new judge promoted); the download itself is cached on disk.
@task(name="resolve-judge", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def resolve_judge_task(config: dict[str, Any], ctx: TrackingContext) -> ResolvedModel:
    cfg = config_of(config)
    return resolve_model(cfg.synthesis.judge, "synthesis.judge", ctx.tracker(),
                         Path(cfg.state_dir).resolve() / "registry")


@task(name="synthesis-sample", **compute(STAGE))
def synth_sample_task(config: dict[str, Any], pool: list[PoolMember], train: Artifact, round_index: int,
                      out_dir: str, ctx: TrackingContext) -> PoolSampleResult:
    return tracked_step(
        ctx, f"synth-sample:r{round_index}",
        lambda _: stage.sample_pool(config_of(config), pool, train, round_index, versioned_dir(out_dir, STAGE)),
        stage_module=STAGE, inputs=[("train-prompts", train, "sampling")], timer="synthesis_sampling",
        params={f"pool.{i}": f"{m.label}@T={m.temperature}" for i, m in enumerate(pool)},
        metrics=lambda r: {"synthesis/n_completions": r.n_completions,
                           "synthesis/generated_tokens": r.generated_tokens})


@task(name="synthesis-rate", **compute(STAGE))
def synth_rate_task(config: dict[str, Any], judge: Checkpoint, completions: Artifact, round_index: int,
                    out_dir: str, ctx: TrackingContext) -> RatingsResult:
    """The judge's ``model_id`` is part of the input, so a newly promoted judge is a new cache key."""
    cfg = config_of(config)
    return tracked_step(
        ctx, f"synth-rate:r{round_index}",
        lambda _: stage.rate_completions(cfg, judge, completions, versioned_dir(out_dir, STAGE),
                                         judgment_cache_path(cfg)),
        stage_module=STAGE, timer="synthesis_judging",
        params={f"aspect.{k}": v for k, v in config["synthesis"]["aspects"].items()},
        tags=lambda r: {"judge_model_id": r.judge_model_id, "template_hash": r.template_hash,
                        "completions_md5": completions.md5},
        metrics=lambda r: {"synthesis/n_judgments": r.n_judgments, "synthesis/judge_malformed_rate": r.malformed_rate,
                           "synthesis/judgment_cache_hits": r.cache_hits},
        artifacts=lambda r: [(r.ratings.path, "ratings")])


@task(name="synthesis-pairs", **compute(STAGE))
def synth_pairs_task(config: dict[str, Any], ratings: Artifact, judge_model_id: str, round_index: int, seed: int,
                     out_dir: str, ctx: TrackingContext, rationale_model: Checkpoint | None = None
                     ) -> SynthesisPairsResult:
    """Binarize the ratings; with ``rationale_model``, add a rationale per pair."""
    cfg = config_of(config)

    def run(_: Any) -> SynthesisPairsResult:
        binarized = stage.binarize_ratings(cfg, ratings, judge_model_id, seed, versioned_dir(out_dir, STAGE),
                                           {"round": round_index})
        if rationale_model is None or not binarized.n_pairs:
            return binarized
        return stage.add_rationales(cfg, rationale_model, binarized, versioned_dir(out_dir, STAGE))

    return tracked_step(
        ctx, f"synth-pairs:r{round_index}", run, stage_module=STAGE, timer="synthesis_pairs",
        params={"synthesis.rejected_strategy": cfg.synthesis.rejected_strategy,
                "synthesis.rationales": cfg.synthesis.rationales},
        outputs=lambda r: [(f"pairs-r{round_index}", r.pairs, "pairs")], tags=lambda r: {"ratings_md5": ratings.md5},
        metrics=lambda r: {"synthesis/n_pairs": r.n_pairs, "synthesis/prompts_with_a_pair": r.prompts_with_a_pair})


@task(name="position-bias", **compute(STAGE, retries=0))
def position_bias_task(config: dict[str, Any], judge: Checkpoint, judged_pairs: Artifact, label: str,
                       ctx: TrackingContext) -> PositionBiasResult:
    """Log the judge's flip and first-position rates on the pair file, then check
    ``quality.max_judge_flip_rate`` (logged first, so a failing round still shows why)."""
    cfg = config_of(config)

    def check(result: PositionBiasResult) -> None:
        if cfg.quality.enabled:
            check_position_bias(result.flip_rate, cfg.quality.max_judge_flip_rate, judged_pairs.path)

    return tracked_step(
        ctx, f"position-bias:{label}", lambda _: stage.position_bias(cfg, judge, judged_pairs), stage_module=STAGE,
        tags=lambda r: {"judge_model_id": judge.model_id, "pairs_md5": judged_pairs.md5}, metrics=bias_metrics,
        check=check)


def bias_metrics(result: PositionBiasResult) -> dict[str, float]:
    return {"quality/judge_flip_rate": result.flip_rate,
            "quality/judge_first_position_rate": result.first_position_rate,
            "quality/judge_probed_pairs": float(result.probed_pairs)}
