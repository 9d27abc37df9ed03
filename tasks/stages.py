"""One Prefect task per pipeline stage.

Compute tasks cache on (inputs minus ``ctx``) + task source and persist their results, so a
re-run after a crash returns finished stages from the cache instead of recomputing them.
Tracking tasks (opening/closing runs, registering, promoting) never cache: they act on the
current MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE

from alignflow.components.stages import steps
from alignflow.components.collection.quality import check_quality, heldout_questions, report_pair_file, thresholds_from
from alignflow.components.config import PipelineConfig
from alignflow.tasks.context import TrackingContext, child_run, metric_logger, record_timing, version_outputs

COMPUTE = dict(cache_policy=(INPUTS - "ctx") + TASK_SOURCE, persist_result=True, retries=1, retry_delay_seconds=2)


def _cfg(config: dict[str, Any]) -> PipelineConfig:
    return PipelineConfig.model_validate(config)


def _log_datasets(tracker, run_id: str, hashes: dict[str, str], context: str) -> None:
    for path, md5 in hashes.items():
        tracker.log_dataset(run_id, Path(path), name=Path(path).stem, digest=md5, context=context,
                            extra_tags={"dvc_md5": md5})


@task(name="prepare-data", **COMPUTE)
def prepare_data_task(config: dict[str, Any], out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, "prepare-data") as (tracker, run_id):
        result = steps.prepare_data(_cfg(config), Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(p) for p in result["paths"].values()])
        _log_datasets(tracker, run_id, result["md5"], context="generated")
        tracker.log_metrics(run_id, {f"data/n_{k}": v for k, v in result["counts"].items()})
        tracker.log_params(run_id, {f"data.{k}": v for k, v in config["data"].items()})
    record_timing(ctx, "prepare-data", result["seconds"])
    return result


# Not cached: it resolves a directory outside the workspace (the model cache), which may have
# been cleared since; re-resolving costs one hash of the GGUF (~0.3 s) when the cache exists.
@task(name="prepare-base-model", cache_policy=NO_CACHE, retries=1)
def prepare_base_task(config: dict[str, Any], ctx: TrackingContext) -> dict[str, Any]:
    result = steps.prepare_base(_cfg(config))
    record_timing(ctx, "prepare-base-model", result["seconds"])
    return result


@task(name="sft", **COMPUTE)
def sft_task(config: dict[str, Any], base_dir: str, sft_path: str, sft_md5: str, out_dir: str,
             ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, "sft") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(sft_path), "sft", sft_md5, context="training", extra_tags={"dvc_md5": sft_md5})
        tracker.log_params(run_id, {f"sft.{k}": v for k, v in config["sft"].items()})
        result = steps.run_sft(_cfg(config), Path(base_dir), Path(sft_path), Path(out_dir),
                               on_step=metric_logger(tracker, run_id))
        tracker.set_tags(run_id, {"model_id": result["model_id"], "resumed_from_step": result["resumed_from_step"]})
        tracker.log_metrics(run_id, {"time/sft_seconds": result["seconds"]})
    record_timing(ctx, "sft", result["seconds"])
    return result


@task(name="evaluate", **COMPUTE)
def evaluate_task(config: dict[str, Any], policy_dir: str, reference_dir: str | None, eval_path: str, eval_md5: str,
                  out_dir: str, seed: int, label: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"evaluate:{label}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(eval_path), "eval", eval_md5, context="evaluation",
                            extra_tags={"dvc_md5": eval_md5})
        result = steps.evaluate(_cfg(config), Path(policy_dir), Path(reference_dir) if reference_dir else None,
                                Path(eval_path), Path(out_dir), seed)
        result["md5"] = version_outputs(ctx, [Path(result["predictions"]), Path(result["metrics_file"])])
        tracker.log_metrics(run_id, {**result["metrics"], "time/eval_seconds": result["seconds"]})
        tracker.log_artifact(run_id, Path(result["metrics_file"]))
    record_timing(ctx, f"evaluate:{label}", result["seconds"])
    return result


@task(name="sample", **COMPUTE)
def sample_task(config: dict[str, Any], policy_dir: str, train_path: str, train_md5: str, round_index: int,
                out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"sample:r{round_index}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(train_path), "train-prompts", train_md5, context="sampling",
                            extra_tags={"dvc_md5": train_md5})
        tracker.log_params(run_id, {f"sampling.{k}": v for k, v in config["sampling"].items()})
        result = steps.sample(_cfg(config), Path(policy_dir), Path(train_path), round_index, Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_metrics(run_id, {"sampling/n_samples": result["n_samples"],
                                     "sampling/generated_tokens": result["generated_tokens"],
                                     "sampling/tokens_per_second": result["generated_tokens"] / max(result["seconds"], 1e-9),
                                     "time/sampling_seconds": result["seconds"]})
    record_timing(ctx, f"sample:r{round_index}", result["seconds"])
    return result


@task(name="mcts-search", **COMPUTE)
def mcts_task(config: dict[str, Any], policy_dir: str, train_path: str, train_md5: str, round_index: int,
              out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"mcts:r{round_index}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(train_path), "train-prompts", train_md5, context="search",
                            extra_tags={"dvc_md5": train_md5})
        tracker.log_params(run_id, {f"mcts.{k}": v for k, v in config["mcts"].items()})
        result = steps.mcts_collect(_cfg(config), Path(policy_dir), Path(train_path), round_index, Path(out_dir))
        hashes = version_outputs(ctx, [Path(result["path"]), Path(result["trees"])])
        result["md5"] = hashes[result["path"]]
        tracker.log_dataset(run_id, Path(result["path"]), f"pairs-r{round_index}", result["md5"], context="pairs",
                            extra_tags={"dvc_md5": result["md5"], "source": "mcts"})
        tracker.log_artifact(run_id, Path(result["trees"]), "trees")
        tracker.log_artifact(run_id, Path(result["tree_html"]), "trees")
        tracker.log_metrics(run_id, {"mcts/trees": result["n_trees"], "mcts/trees_kept": result["trees_kept"],
                                     "mcts/nodes": result["n_nodes"], "mcts/pairs": result["n_pairs"],
                                     "mcts/final_accuracy": result["final_accuracy"],
                                     "mcts/nodes_per_second": result["nodes_per_second"],
                                     "mcts/tokens_encoded": result["tokens_encoded"],
                                     "time/search_seconds": result["search_seconds"]})
    record_timing(ctx, f"mcts:r{round_index}", result["seconds"])
    return result


@task(name="score", **COMPUTE)
def score_task(samples_path: str, samples_md5: str, round_index: int, out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"score:r{round_index}") as (tracker, run_id):
        result = steps.score(Path(samples_path), Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_metrics(run_id, {"scoring/sample_accuracy": result["sample_accuracy"],
                                     "scoring/prompts_with_a_correct_sample": result["prompts_with_a_correct_sample"],
                                     "time/scoring_seconds": result["seconds"]})
        tracker.set_tags(run_id, {"scorer": result["scorer"], "input_md5": samples_md5})
    record_timing(ctx, f"score:r{round_index}", result["seconds"])
    return result


@task(name="build-pairs", **COMPUTE)
def pairs_task(config: dict[str, Any], scored_path: str, scored_md5: str, policy_model_id: str, round_index: int,
               seed: int, out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"pairs:r{round_index}") as (tracker, run_id):
        result = steps.make_pairs(_cfg(config), Path(scored_path), policy_model_id, round_index, seed, Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_dataset(run_id, Path(result["path"]), f"pairs-r{round_index}", result["md5"], context="pairs",
                            extra_tags={"dvc_md5": result["md5"], "scored_md5": scored_md5})
        tracker.log_params(run_id, {f"pairs.{k}": v for k, v in config["pairs"].items()})
        tracker.log_metrics(run_id, {"pairs/n_pairs": result["n_pairs"], "time/pairs_seconds": result["seconds"]})
    record_timing(ctx, f"pairs:r{round_index}", result["seconds"])
    return result


@task(name="preference-strength", **COMPUTE)
def strength_task(config: dict[str, Any], backbone_dir: str, pairs_path: str, pairs_md5: str, round_index: int,
                  out_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"strength:r{round_index}") as (tracker, run_id):
        tracker.log_dataset(run_id, Path(pairs_path), f"pairs-r{round_index}", pairs_md5, context="scoring",
                            extra_tags={"dvc_md5": pairs_md5})
        tracker.log_params(run_id, {f"reward.{k}": v for k, v in config["reward"].items()})
        result = steps.preference_strength(_cfg(config), Path(backbone_dir), Path(pairs_path), round_index, Path(out_dir))
        result["md5"] = version_outputs(ctx, [Path(result["path"])])[result["path"]]
        tracker.log_dataset(run_id, Path(result["path"]), f"pairs-strength-r{round_index}", result["md5"],
                            context="pairs", extra_tags={"dvc_md5": result["md5"], "pairs_md5": pairs_md5})
        tracker.log_metrics(run_id, {"strength/n_flipped": result["n_flipped"], "strength/n_smoothed": result["n_smoothed"],
                                     "strength/mean": result["strength_mean"], "strength/std": result["strength_std"],
                                     "strength/ensemble_agreement": result["ensemble_agreement"],
                                     "time/strength_seconds": result["seconds"]})
    record_timing(ctx, f"strength:r{round_index}", result["seconds"])
    return result


@task(name="train-preference", **COMPUTE)
def train_task(config: dict[str, Any], policy_dir: str, reference_dir: str, pairs_path: str, pairs_md5: str,
               round_index: int, out_dir: str, ref_cache_dir: str, ctx: TrackingContext) -> dict[str, Any]:
    with child_run(ctx, f"train:r{round_index}") as (tracker, run_id):
        # pairs-rN, or pairs-strength-rN when a reward ensemble curated them
        tracker.log_dataset(run_id, Path(pairs_path), f"{Path(pairs_path).stem}-r{round_index}", pairs_md5,
                            context="training", extra_tags={"dvc_md5": pairs_md5})
        tracker.log_params(run_id, {f"preference.{k}": v for k, v in config["preference"].items()})
        result = steps.train_round_launched(_cfg(config), Path(policy_dir), Path(reference_dir), Path(pairs_path),
                                            round_index, Path(out_dir), Path(ref_cache_dir),
                                            on_step=metric_logger(tracker, run_id))
        tracker.set_tags(run_id, {"model_id": result["model_id"], "reference_cache": result["reference_cache"],
                                  "reference_cached": result["reference_cached"],
                                  "resumed_from_step": result["resumed_from_step"]})
        # the reference log-probs this round trained against, with what produced them
        for key in ("reference_cache", "reference_lineage"):
            if Path(result[key]).exists():
                tracker.log_artifact(run_id, Path(result[key]), "reference_logps")
        tracker.log_metrics(run_id, {"time/train_seconds": result["seconds"],
                                     "time/reference_logprobs_seconds": result["reference_seconds"]})
    record_timing(ctx, f"train:r{round_index}", result["seconds"])
    return result


# Not retried: a failed threshold is a verdict on the data, and re-reading it gives the same one.
@task(name="pair-quality", cache_policy=(INPUTS - "ctx") + TASK_SOURCE, persist_result=True)
def quality_task(config: dict[str, Any], pairs_path: str, pairs_md5: str, eval_path: str, label: str, out_dir: str,
                 ctx: TrackingContext) -> dict[str, Any]:
    """The pair file's quality report, logged (metrics, a table, the PNG) before the thresholds
    are checked, so a round that fails its gate still shows why in MLflow. ``eval_path``: the
    held-out file whose questions must not be trained on (eval problems, or held-out judge rows)."""
    cfg = _cfg(config)
    with child_run(ctx, f"quality:{label}") as (tracker, run_id):
        heldout = heldout_questions(Path(eval_path))
        result = report_pair_file(Path(pairs_path), heldout, Path(out_dir), f"pair quality, {label}")
        tracker.log_metrics(run_id, result["metrics"])
        tracker.client.log_table(run_id, data=result["table"], artifact_file=f"quality/{label}.json")
        tracker.log_artifact(run_id, Path(result["png"]), "quality")
        tracker.log_artifact(run_id, Path(result["json"]), "quality")
        tracker.set_tags(run_id, {"pairs_md5": pairs_md5})
        tracker.log_params(run_id, {f"quality.{k}": v for k, v in config["quality"].items()})
        if cfg.quality.enabled:
            check_quality(result["report"], thresholds_from(cfg.quality), pairs_path)
    return {"metrics": result["metrics"], "json": result["json"], "png": result["png"]}
