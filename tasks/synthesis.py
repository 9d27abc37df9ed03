"""Prefect tasks of preference synthesis (``components.synthesis``): the pool answers, the judge
rates, ratings become pairs, optionally with rationales. Thin wrappers: caching, one MLflow child
run each, DVC versioning of every file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from alignflow.components.platform import registry
from alignflow.components.collection import synthesis
from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.judges.loop import judgment_cache_path
from alignflow.components.judges.pairwise import model_position_bias
from alignflow.components.modeling.checkpoints import load_checkpoint, read_metadata
from alignflow.components.collection.quality import check_position_bias
from alignflow.tasks.context import TrackingContext, child_run, record_timing, version_outputs
from alignflow.tasks.stages import COMPUTE


def _cfg(config: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.model_validate(config)


# Not cached: the alias may have moved since (a new judge promoted); the download itself is cached on disk.
@task(name="resolve-judge", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def resolve_judge_task(config: dict[str, Any], ctx: TrackingContext) -> dict[str, str]:
    cfg = _cfg(config)
    spec = cfg.synthesis.judge
    named = registry.parse_model_uri(spec)
    if named is None:
        if not Path(spec).is_dir():
            raise FileNotFoundError(f"synthesis.judge: '{spec}' is not a checkpoint directory or models:/name@alias")
        return {"path": str(Path(spec).resolve()), "source": spec,
                "model_id": read_metadata(Path(spec)).get("model_id", f"local:{spec}")}
    path, version = registry.download_version(ctx.tracker(), *named, Path(cfg.state_dir).resolve() / "registry")
    return {"path": str(path), "source": f"{spec} = {version}",
            "model_id": read_metadata(path).get("model_id", version)}


@task(name="synthesis-sample", **COMPUTE)
def synth_sample_task(config: dict[str, Any], pool: list[dict[str, Any]], train_path: str, train_md5: str,
                      round_index: int, out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"synth-sample:r{round_index}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(train_path), "train-prompts", train_md5, context="sampling",
                            extra_tags={"dvc_md5": train_md5})
        tracker.log_params(run_id, {f"pool.{i}": f"{m['label']}@T={m['temperature']}" for i, m in enumerate(pool)})
        result = synthesis.sample_pool(_cfg(config), [synthesis.PoolMember(**m) for m in pool], Path(train_path),
                                       round_index, Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_metrics(run_id, {"synthesis/n_completions": result["n_completions"],
                                     "synthesis/generated_tokens": result["generated_tokens"],
                                     "time/synthesis_sampling_seconds": result["seconds"]})
    record_timing(ctx, f"synth-sample:r{round_index}", result["seconds"])
    return result


@task(name="synthesis-rate", **COMPUTE)
def synth_rate_task(config: dict[str, Any], judge_dir: str, judge_model_id: str, completions_path: str,
                    completions_md5: str, round_index: int, out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    """``judge_model_id`` is an input so that a newly promoted judge is a new cache key."""
    cfg = _cfg(config)
    with child_run(ctx, f"synth-rate:r{round_index}") as (tracker, run_id):
        tracker.log_params(run_id, {f"aspect.{k}": v for k, v in config["synthesis"]["aspects"].items()})
        result = synthesis.rate_completions(cfg, Path(judge_dir), Path(completions_path), Path(out_dir),
                                            judgment_cache_path(cfg))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_artifact(run_id, Path(result["path"]), "ratings")
        tracker.set_tags(run_id, {"judge_model_id": result["judge_model_id"], "template_hash": result["template_hash"],
                                  "completions_md5": completions_md5})
        tracker.log_metrics(run_id, {"synthesis/n_judgments": result["n_judgments"],
                                     "synthesis/judge_malformed_rate": result["malformed_rate"],
                                     "synthesis/judgment_cache_hits": result["cache_hits"],
                                     "time/synthesis_judging_seconds": result["seconds"]})
    record_timing(ctx, f"synth-rate:r{round_index}", result["seconds"])
    return result


@task(name="synthesis-pairs", **COMPUTE)
def synth_pairs_task(config: dict[str, Any], ratings_path: str, ratings_md5: str, judge_model_id: str,
                     round_index: int, seed: int, out_dir: str, ctx: TrackingContext,
                     rationale_model_dir: str | None = None) -> dict[str, Any]:
    """Binarize the ratings; with ``rationale_model_dir``, add a rationale per pair."""
    cfg = _cfg(config)
    with child_run(ctx, f"synth-pairs:r{round_index}") as (tracker, run_id):
        tracker.log_params(run_id, {"synthesis.rejected_strategy": cfg.synthesis.rejected_strategy,
                                    "synthesis.rationales": cfg.synthesis.rationales})
        result = synthesis.binarize_ratings(cfg, Path(ratings_path), judge_model_id, seed, Path(out_dir),
                                            {"round": round_index})
        if rationale_model_dir and result["n_pairs"]:
            enriched = synthesis.add_rationales(cfg, Path(rationale_model_dir), Path(result["path"]), Path(out_dir))
            result = {**result, "path": enriched["path"], "n_with_rationale": enriched["n_with_rationale"],
                      "seconds": result["seconds"] + enriched["seconds"]}
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_dataset(run_id, Path(result["path"]), f"pairs-r{round_index}", result["md5"], context="pairs",
                            extra_tags={"dvc_md5": result["md5"], "ratings_md5": ratings_md5, "source": "synthesis"})
        tracker.log_metrics(run_id, {"synthesis/n_pairs": result["n_pairs"],
                                     "synthesis/prompts_with_a_pair": result["prompts_with_a_pair"],
                                     "time/synthesis_pairs_seconds": result["seconds"]})
    record_timing(ctx, f"synth-pairs:r{round_index}", result["seconds"])
    return result


@task(name="position-bias", cache_policy=(INPUTS - "ctx") + TASK_SOURCE, persist_result=True)
def position_bias_task(config: dict[str, Any], judge_dir: str, judge_model_id: str, pairs_path: str, pairs_md5: str,
                       label: str, ctx: TrackingContext) -> dict[str, float]:
    """Ask the judge model about the first ``synthesis.position_bias_pairs`` pairs both ways
    round; log the flip and first-position rates, then check ``quality.max_judge_flip_rate``."""
    cfg = _cfg(config)
    with child_run(ctx, f"position-bias:{label}") as (tracker, run_id):
        pairs = read_rows(Path(pairs_path), PairRow)[: cfg.synthesis.position_bias_pairs]
        judge = load_checkpoint(Path(judge_dir), merge=True)
        bias = model_position_bias(judge.model, judge.tokenizer, pairs, cfg.data.system_prompt, cfg.judge.batch_size)
        metrics = {"quality/judge_flip_rate": bias["flip_rate"],
                   "quality/judge_first_position_rate": bias["first_position_rate"],
                   "quality/judge_probed_pairs": float(len(pairs))}
        tracker.log_metrics(run_id, metrics)
        tracker.set_tags(run_id, {"judge_model_id": judge_model_id, "pairs_md5": pairs_md5})
        if cfg.quality.enabled:
            check_position_bias(bias["flip_rate"], cfg.quality.max_judge_flip_rate, pairs_path)
    return metrics
