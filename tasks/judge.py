"""Prefect tasks of the self-rationalization judge loop: ``tracked_step`` around each stage of
``components/stages/judge.py``, cached by ``compute``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from alignflow.components.judges.judge import judgment_cache_path
from alignflow.components.stages import judge as stage
from alignflow.components.stages.results import (
    Artifact,
    Checkpoint,
    EvalResult,
    JudgeDataResult,
    JudgePairsResult,
    JudgeTrainResult,
    JudgmentsResult,
    SFTResult,
)
from alignflow.tasks.context import TrackingContext, compute, config_of, section_params, tracked_step, versioned_dir

STAGE = stage.__name__


@task(name="judge-data", **compute(STAGE))
def judge_data_task(config: dict[str, Any], policy: Checkpoint, train: Artifact, out_dir: str,
                    ctx: TrackingContext) -> JudgeDataResult:
    return tracked_step(
        ctx, "judge-data", lambda _: stage.build_judge_data(config_of(config), policy, train,
                                                            versioned_dir(out_dir, STAGE)),
        stage_module=STAGE, inputs=[("train-prompts", train, "judge-data")],
        outputs=lambda r: [("judge-train", r.train, "labelled"), ("judge-heldout", r.heldout, "labelled")],
        metrics=lambda r: {f"judge_data/{k}": v for k, v in r.counts.items()})


@task(name="judge-sft", **compute(STAGE))
def judge_sft_task(config: dict[str, Any], base: Checkpoint, train: Artifact, out_dir: str,
                   ctx: TrackingContext) -> SFTResult:
    return tracked_step(
        ctx, "judge-sft",
        lambda on_step: stage.train_seed_judge(config_of(config), base, train, versioned_dir(out_dir, STAGE), on_step),
        stage_module=STAGE, inputs=[("judge-train", train, "training")],
        params=section_params("judge.sft", config["judge"]["sft"]), metrics=lambda r: r.fit.metrics("judge_sft"),
        tags=lambda r: {"model_id": r.checkpoint.model_id})


@task(name="judge-sample", **compute(STAGE))
def judge_sample_task(config: dict[str, Any], judge: Checkpoint, rows: Artifact, iteration: int, out_dir: str,
                      ctx: TrackingContext) -> JudgmentsResult:
    cfg = config_of(config)
    return tracked_step(
        ctx, f"judge-sample:t{iteration}",
        lambda _: stage.sample_judgments(cfg, judge, rows, iteration, versioned_dir(out_dir, STAGE),
                                         judgment_cache_path(cfg)),
        stage_module=STAGE, inputs=[("judge-train", rows, "judging")],
        tags=lambda r: {"judge_model_id": r.judge_model_id, "template_hash": r.template_hash},
        metrics=lambda r: {"judge_sample/n_judgments": r.n_judgments, "judge_sample/malformed_rate": r.malformed_rate,
                           "judge_sample/cache_hits": r.cache_hits},
        artifacts=lambda r: [(r.judgments.path, "judgments")])


@task(name="judge-curate", **compute(STAGE))
def judge_curate_task(config: dict[str, Any], judgments: Artifact, judge_model_id: str, iteration: int, seed: int,
                      out_dir: str, ctx: TrackingContext) -> JudgePairsResult:
    return tracked_step(
        ctx, f"judge-curate:t{iteration}",
        lambda _: stage.curate_judge_pairs(config_of(config), judgments, judge_model_id, iteration, seed,
                                           versioned_dir(out_dir, STAGE)),
        stage_module=STAGE, params=section_params("judge.curation", config["judge"]["curation"]),
        outputs=lambda r: [(f"judge-pairs-t{iteration}", r.pairs, "pairs")],
        tags=lambda r: {"judgments_md5": judgments.md5},
        metrics=lambda r: {"judge_pairs/n_pairs": r.n_pairs, "judge_pairs/n_inputs": r.n_inputs})


@task(name="judge-dpo", **compute(STAGE))
def judge_train_task(config: dict[str, Any], judge: Checkpoint, reference: Checkpoint, judge_pairs: Artifact,
                     iteration: int, out_dir: str, ref_cache_dir: str, ctx: TrackingContext) -> JudgeTrainResult:
    return tracked_step(
        ctx, f"judge-dpo:t{iteration}",
        lambda on_step: stage.train_judge(config_of(config), judge, reference, judge_pairs, iteration,
                                          versioned_dir(out_dir, STAGE),
                                          Path(ref_cache_dir), on_step),
        stage_module=STAGE, inputs=[(f"judge-pairs-t{iteration}", judge_pairs, "training")],
        params=section_params("judge.preference", config["judge"]["preference"]),
        metrics=lambda r: r.fit.metrics("train"),
        tags=lambda r: {"model_id": r.checkpoint.model_id, "reference_model_id": r.reference_model_id})


@task(name="judge-eval", **compute(STAGE))
def judge_eval_task(config: dict[str, Any], judge: Checkpoint, heldout: Artifact, label: str, out_dir: str,
                    ctx: TrackingContext) -> EvalResult:
    cfg = config_of(config)
    return tracked_step(
        ctx, f"judge-eval:{label}",
        lambda _: stage.evaluate_judge(cfg, judge, heldout, versioned_dir(out_dir, STAGE), judgment_cache_path(cfg)),
        stage_module=STAGE, inputs=[("judge-heldout", heldout, "evaluation")], metrics=lambda r: r.metrics,
        artifacts=lambda r: [(r.predictions.path, "judge-eval"), (r.metrics_file.path, "judge-eval")])
