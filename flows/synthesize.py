"""synthesize: one UltraFeedback-style pair file (ALGORITHMS.md §9), outside any round.

Composition only: data → base → SFT (the same cached stages as the pipeline) → the pool answers
the first round's prompts → the registered judge rates each completion per aspect → binarize
(→ rationales) → quality report and the judge's position-bias probe. The pair file is DVC-tracked,
logged as an MLflow dataset, and ready for the preference trainer (rationale-enriched DPO when it
carries rationales). A ``rounds.kind: synthesized`` pipeline runs the same tasks inside every round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from alignflow.components.collection.synthesis import resolve_pool
from alignflow.components.config import PipelineConfig
from alignflow.components.platform.tracking import flatten
from alignflow.components.stages.results import QualityResult, ResolvedModel, SynthesisPairsResult
from alignflow.tasks.runs import log_metrics_task, tracked_flow
from alignflow.tasks.stages import prepare_base_task, prepare_data_task, quality_task, sft_task
from alignflow.tasks.synthesis import (
    bias_metrics,
    position_bias_task,
    resolve_judge_task,
    synth_pairs_task,
    synth_rate_task,
    synth_sample_task,
)


class SynthesisResult(BaseModel):
    parent_run_id: str
    tracking_uri: str
    experiment: str
    pairs: SynthesisPairsResult
    ratings: str
    judge: ResolvedModel
    quality: QualityResult
    workspace: str


@flow(name="synthesize", log_prints=True)
def synthesize(config: dict[str, Any]) -> SynthesisResult:
    cfg = PipelineConfig.model_validate(config)
    config = cfg.model_dump(mode="json")
    key = cfg.content_hash()
    pipeline_ws = Path(cfg.workspace).resolve() / key
    synth_hash = cfg.model_copy(update={"rounds": cfg.rounds.model_copy(update={"kind": "synthesized"})}).content_hash()
    out = Path(cfg.workspace).resolve() / f"synthesis-{synth_hash}"
    with tracked_flow(cfg, out, f"synthesize-{synth_hash}", {"alignflow.kind": "synthesis", "config_hash": synth_hash},
                      params=flatten({"synthesis": config["synthesis"], "sampling": config["sampling"]})) as ctx:
        data = prepare_data_task(config, str(pipeline_ws / "data"), ctx)
        base = prepare_base_task(config, ctx).checkpoint
        named = {"base": base.path}
        if cfg.sft.enabled and data.sft is not None:
            sft_dir = str(Path(cfg.state_dir).resolve() / "checkpoints" / key / "sft")
            named["sft"] = sft_task(config, base, data.sft, sft_dir, ctx).checkpoint.path
        named["current"] = named.get("sft", named["base"])
        judge = resolve_judge_task(config, ctx)
        sampled = synth_sample_task(config, resolve_pool(cfg, named), data.role("prompts"), 1, str(out), ctx)
        rated = synth_rate_task(config, judge.checkpoint, sampled.completions, 1, str(out), ctx)
        pairs = synth_pairs_task(config, rated.ratings, rated.judge_model_id, 1, sampled.seed, str(out), ctx,
                                 rationale_model=judge.checkpoint if cfg.synthesis.rationales else None)
        quality = quality_task(config, pairs.pairs, data.eval, "synthesis", str(out / "quality"), ctx)
        bias = {}
        if cfg.synthesis.position_bias_pairs:
            bias = bias_metrics(position_bias_task(config, judge.checkpoint, pairs.pairs, "synthesis", ctx))
        log_metrics_task(ctx, ctx.parent_run_id, {"synthesis/n_pairs": pairs.n_pairs,
                                                  "synthesis/judge_malformed_rate": rated.malformed_rate,
                                                  **quality.metrics, **bias}, tags={"judge": judge.source})
    return SynthesisResult(parent_run_id=ctx.parent_run_id, tracking_uri=ctx.tracking_uri,
                           experiment=cfg.tracking.experiment, pairs=pairs, ratings=rated.ratings.path, judge=judge,
                           quality=quality, workspace=str(out))
