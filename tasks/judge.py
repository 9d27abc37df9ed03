"""Prefect tasks of the self-rationalization judge loop: thin wrappers over
``components.judges.loop`` adding caching, one MLflow child run each, DVC versioning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from alignflow.components.config import PipelineConfig
from alignflow.components.judges import loop
from alignflow.tasks.context import TrackingContext, child_run, metric_logger, record_timing, version_outputs
from alignflow.tasks.stages import COMPUTE


def _cfg(config: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.model_validate(config)


@task(name="judge-data", **COMPUTE)
def judge_data_task(config: dict[str, Any], policy_dir: str, train_path: str, train_md5: str, out_dir: str,
                    ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, "judge-data") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(train_path), "train-prompts", train_md5, context="judge-data",
                            extra_tags={"dvc_md5": train_md5})
        result = loop.build_judge_data(_cfg(config), Path(policy_dir), Path(train_path), Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(p) for p in result["paths"].values()])
        for split, path in result["paths"].items():
            tracker.log_dataset(run_id, Path(path), f"judge-{split}", result["md5"][path], context="labelled",
                                extra_tags={"dvc_md5": result["md5"][path]})
        tracker.log_metrics(run_id, {f"judge_data/n_{k}" if not k.startswith("judge_data") else k: v
                                     for k, v in result["counts"].items()})
    record_timing(ctx, "judge-data", result["seconds"])
    return result


@task(name="judge-sft", **COMPUTE)
def judge_sft_task(config: dict[str, Any], base_dir: str, train_path: str, train_md5: str, out_dir: str,
                   ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, "judge-sft") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(train_path), "judge-train", train_md5, context="training",
                            extra_tags={"dvc_md5": train_md5})
        tracker.log_params(run_id, {f"judge.sft.{k}": v for k, v in config["judge"]["sft"].items()})
        result = loop.train_seed_judge(_cfg(config), Path(base_dir), Path(train_path), Path(out_dir),
                                       on_step=metric_logger(tracker, run_id))
        tracker.set_tags(run_id, {"model_id": result["model_id"]})
        tracker.log_metrics(run_id, {"time/judge_sft_seconds": result["seconds"]})
    record_timing(ctx, "judge-sft", result["seconds"])
    return result


@task(name="judge-sample", **COMPUTE)
def judge_sample_task(config: dict[str, Any], judge_dir: str, rows_path: str, rows_md5: str, iteration: int,
                      out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    cfg = _cfg(config)
    with child_run(ctx, f"judge-sample:t{iteration}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(rows_path), "judge-train", rows_md5, context="judging",
                            extra_tags={"dvc_md5": rows_md5})
        result = loop.sample_judgments(cfg, Path(judge_dir), Path(rows_path), iteration, Path(out_dir),
                                       loop.judgment_cache_path(cfg))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_artifact(run_id, Path(result["path"]), "judgments")
        tracker.set_tags(run_id, {"judge_model_id": result["judge_model_id"], "template_hash": result["template_hash"]})
        tracker.log_metrics(run_id, {"judge_sample/n_judgments": result["n_judgments"],
                                     "judge_sample/malformed_rate": result["malformed_rate"],
                                     "judge_sample/cache_hits": result["cache_hits"],
                                     "time/judge_sample_seconds": result["seconds"]})
    record_timing(ctx, f"judge-sample:t{iteration}", result["seconds"])
    return result


@task(name="judge-curate", **COMPUTE)
def judge_curate_task(config: dict[str, Any], judgments_path: str, judgments_md5: str, judge_model_id: str,
                      iteration: int, seed: int, out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"judge-curate:t{iteration}") as (tracker, run_id):
        tracker.log_params(run_id, {f"judge.curation.{k}": v for k, v in config["judge"]["curation"].items()})
        result = loop.curate_judge_pairs(_cfg(config), Path(judgments_path), judge_model_id, iteration, seed,
                                         Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_dataset(run_id, Path(result["path"]), f"judge-pairs-t{iteration}", result["md5"], context="pairs",
                            extra_tags={"dvc_md5": result["md5"], "judgments_md5": judgments_md5})
        tracker.log_metrics(run_id, {"judge_pairs/n_pairs": result["n_pairs"],
                                     "judge_pairs/n_inputs": result["n_inputs"]})
    record_timing(ctx, f"judge-curate:t{iteration}", result["seconds"])
    return result


@task(name="judge-dpo", **COMPUTE)
def judge_train_task(config: dict[str, Any], judge_dir: str, reference_dir: str, pairs_path: str, pairs_md5: str,
                     iteration: int, out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"judge-dpo:t{iteration}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(pairs_path), f"judge-pairs-t{iteration}", pairs_md5, context="training",
                            extra_tags={"dvc_md5": pairs_md5})
        tracker.log_params(run_id, {f"judge.preference.{k}": v for k, v in config["judge"]["preference"].items()})
        result = loop.train_judge(_cfg(config), Path(judge_dir), Path(reference_dir), Path(pairs_path), iteration,
                                  Path(out_dir), on_step=metric_logger(tracker, run_id))
        tracker.set_tags(run_id, {"model_id": result["model_id"], "reference_model_id": result["reference_model_id"]})
        tracker.log_metrics(run_id, {"time/judge_dpo_seconds": result["seconds"]})
    record_timing(ctx, f"judge-dpo:t{iteration}", result["seconds"])
    return result


@task(name="judge-eval", **COMPUTE)
def judge_eval_task(config: dict[str, Any], judge_dir: str, heldout_path: str, heldout_md5: str, label: str,
                    out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    cfg = _cfg(config)
    with child_run(ctx, f"judge-eval:{label}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(heldout_path), "judge-heldout", heldout_md5, context="evaluation",
                            extra_tags={"dvc_md5": heldout_md5})
        result = loop.evaluate_judge(cfg, Path(judge_dir), Path(heldout_path), Path(out_dir),
                                     loop.judgment_cache_path(cfg))
        result["md5"] = version_outputs(ctx, [Path(result["predictions"]), Path(result["metrics_file"])])
        tracker.log_metrics(run_id, {**result["metrics"], "time/judge_eval_seconds": result["seconds"]})
        tracker.log_artifact(run_id, Path(result["predictions"]), "judge-eval")
        tracker.log_artifact(run_id, Path(result["metrics_file"]), "judge-eval")
    record_timing(ctx, f"judge-eval:{label}", result["seconds"])
    return result
