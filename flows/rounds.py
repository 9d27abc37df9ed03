"""One alignment round as a resumable subflow: collect pairs → [reward-ensemble curation] →
train → eval. Two ways to collect:

- ``on_policy_round``: sample k completions per prompt, verifier scores, response-level pairs;
- ``mcts_round``: step-level MCTS with the current policy (ALGORITHMS.md §2), step pairs with
  visit-count ε, trees logged as JSON and one as an HTML picture;
- ``synthesized_round``: a pool of policies (the current one, earlier checkpoints, several
  temperatures) answers, the registered judge rates each completion per aspect with its tools,
  ratings are binarized (§9), optionally with rationales for rationale-enriched DPO (§4).

Every round's pair file gets a quality report (MLflow metrics, table and PNG) and its
thresholds (``quality:``) are checked before any training.

A finished round leaves ``round.json`` (written last, atomically). Re-running finds it and
only re-reports its metrics under the new pipeline run; a round that crashed midway re-runs,
and its finished tasks come back from Prefect's result cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow

from alignflow.components.config import PipelineConfig
from alignflow.components.collection.synthesis import resolve_pool

from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.platform.faults import maybe_kill_after_round
from alignflow.components.stages.steps import load_json
from alignflow.tasks.context import TrackingContext
from alignflow.tasks.stages import (evaluate_task, mcts_task, pairs_task, quality_task, sample_task, score_task,
                                  strength_task, train_task)
from alignflow.tasks.synthesis import (position_bias_task, resolve_judge_task, synth_pairs_task, synth_rate_task,
                                   synth_sample_task)
from alignflow.tasks.runs import close_run_task, log_metrics_task, open_run_task

# (config, round index, policy, data, round dir, ctx) → (pairs result, seconds by stage, metrics, files)
Collector = Callable[..., tuple[dict[str, Any], dict[str, float], dict[str, float], dict[str, Any]]]


def _collect_on_policy(config, round_index, policy, data, round_dir, ctx, named_models):
    paths, md5 = data["paths"], data["md5"]
    sampled = sample_task(config, policy["path"], paths["train"], md5[paths["train"]], round_index, round_dir, ctx)
    scored = score_task(sampled["path"], sampled["md5"], round_index, round_dir, ctx)
    pairs = pairs_task(config, scored["path"], scored["md5"], sampled["policy_model_id"], round_index,
                       sampled["seed"], round_dir, ctx)
    seconds = {"sampling": sampled["seconds"], "scoring": scored["seconds"], "pairs": pairs["seconds"]}
    metrics = {"round/sample_accuracy": scored["sample_accuracy"]}
    return pairs, seconds, metrics, {"samples": {"path": sampled["path"], "md5": sampled["md5"]}}


def _collect_mcts(config, round_index, policy, data, round_dir, ctx, named_models):
    paths, md5 = data["paths"], data["md5"]
    searched = mcts_task(config, policy["path"], paths["train"], md5[paths["train"]], round_index, round_dir, ctx)
    metrics = {"round/search_final_accuracy": searched["final_accuracy"], "round/trees": searched["n_trees"],
               "round/trees_kept": searched["trees_kept"], "round/search_nodes": searched["n_nodes"],
               "round/search_nodes_per_second": searched["nodes_per_second"]}
    return searched, {"search": searched["seconds"]}, metrics, {"trees": searched["trees"]}


def _collect_synthesized(config, round_index, policy, data, round_dir, ctx, named_models):
    paths, md5 = data["paths"], data["md5"]
    cfg = PipelineConfig.model_validate(config)
    pool = [asdict(m) for m in resolve_pool(cfg, {**named_models, "current": policy["path"]})]
    judge = resolve_judge_task(config, ctx)
    sampled = synth_sample_task(config, pool, paths["train"], md5[paths["train"]], round_index, round_dir, ctx)
    rated = synth_rate_task(config, judge["path"], judge["model_id"], sampled["path"], sampled["md5"], round_index,
                            round_dir, ctx)
    pairs = synth_pairs_task(config, rated["path"], rated["md5"], rated["judge_model_id"], round_index,
                             sampled["seed"], round_dir, ctx,
                             rationale_model_dir=judge["path"] if cfg.synthesis.rationales else None)
    seconds = {"sampling": sampled["seconds"], "judging": rated["seconds"], "pairs": pairs["seconds"]}
    metrics = {"round/pool_completions": sampled["n_completions"], "round/judge_malformed_rate": rated["malformed_rate"],
               "round/prompts_with_a_pair": pairs["prompts_with_a_pair"]}
    if cfg.synthesis.position_bias_pairs and pairs["n_pairs"]:
        metrics.update(position_bias_task(config, judge["path"], judge["model_id"], pairs["path"], pairs["md5"],
                                          f"r{round_index}", ctx))
    return pairs, seconds, metrics, {"ratings": {"path": rated["path"], "md5": rated["md5"]},
                                     "judge": judge["source"]}


def _round(collect: Collector, kind: str, config: dict[str, Any], round_index: int, policy: dict[str, Any],
           reference_dir: str, data: dict[str, Any], round_dir: str, checkpoint_dir: str, ref_cache_dir: str,
           ctx: TrackingContext, named_models: dict[str, str] | None = None) -> dict[str, Any]:
    manifest_path = Path(round_dir) / "round.json"
    round_run = open_run_task(ctx.tracking_uri, ctx.experiment, f"round-{round_index}", ctx.parent_run_id,
                              {"alignflow.kind": "round", "round": round_index, "round_kind": kind,
                               "policy_in": policy["model_id"]})
    round_ctx = ctx.model_copy(update={"parent_run_id": round_run})
    if manifest_path.exists():
        manifest = load_json(manifest_path)
        log_metrics_task(round_ctx, round_run, manifest["metrics"], step=round_index,
                         tags={"resumed": "true", "policy_out": manifest["policy"]["model_id"]})
        close_run_task(round_ctx, round_run)
        return manifest
    started = time.perf_counter()
    try:
        pairs, compute, collect_metrics, files = collect(config, round_index, policy, data, round_dir, round_ctx,
                                                           named_models or {})
        quality = quality_task(config, pairs["path"], pairs["md5"], data["paths"]["eval"], f"r{round_index}",
                               str(Path(round_dir) / "quality"), round_ctx)
        collect_metrics = {**collect_metrics, **quality["metrics"]}
        training_pairs = pairs
        if config["reward"]["strength_mode"] != "none":  # curate with a reward-model ensemble first
            training_pairs = strength_task(config, reference_dir, pairs["path"], pairs["md5"], round_index,
                                           round_dir, round_ctx)
            compute["strength"] = training_pairs["seconds"]
        trained = train_task(config, policy["path"], reference_dir, training_pairs["path"], training_pairs["md5"],
                             round_index, checkpoint_dir, ref_cache_dir, round_ctx)
        evaluated = evaluate_task(config, trained["path"], reference_dir, data["paths"]["eval"],
                                  data["md5"][data["paths"]["eval"]], str(Path(round_dir) / "eval"),
                                  config["seed"] + round_index, f"r{round_index}", round_ctx)
    except BaseException:
        close_run_task(round_ctx, round_run, "FAILED")
        raise
    wall = time.perf_counter() - started
    compute.update({"training": trained["seconds"], "eval": evaluated["seconds"]})
    metrics = {**evaluated["metrics"], **collect_metrics, "round/n_pairs": pairs["n_pairs"],
               **{f"train_final/{k.removeprefix('train/')}": v for k, v in trained["final_metrics"].items()},
               **{f"time/{k}_seconds": v for k, v in compute.items()},
               "time/round_wall_seconds": wall,
               "time/tracking_overhead_seconds": max(0.0, wall - sum(compute.values()))}
    manifest = {"round": round_index, "kind": kind, "policy": {"path": trained["path"], "model_id": trained["model_id"]},
                "metrics": metrics, "pairs": {"path": pairs["path"], "md5": pairs["md5"]},
                "training_pairs": {"path": training_pairs["path"], "md5": training_pairs["md5"]},
                "quality": {"json": quality["json"], "png": quality["png"]}, **files}
    log_metrics_task(round_ctx, round_run, metrics, step=round_index, tags={"policy_out": trained["model_id"]})
    close_run_task(round_ctx, round_run)
    write_json_atomic(manifest_path, manifest)
    maybe_kill_after_round(round_index)
    return manifest


@flow(name="on-policy-round")
def on_policy_round(config: dict[str, Any], round_index: int, policy: dict[str, Any], reference_dir: str,
                    data: dict[str, Any], round_dir: str, checkpoint_dir: str, ref_cache_dir: str,
                    ctx: TrackingContext, named_models: dict[str, str] | None = None) -> dict[str, Any]:
    return _round(_collect_on_policy, "on_policy", config, round_index, policy, reference_dir, data, round_dir,
                  checkpoint_dir, ref_cache_dir, ctx, named_models)


@flow(name="mcts-round")
def mcts_round(config: dict[str, Any], round_index: int, policy: dict[str, Any], reference_dir: str,
               data: dict[str, Any], round_dir: str, checkpoint_dir: str, ref_cache_dir: str,
               ctx: TrackingContext, named_models: dict[str, str] | None = None) -> dict[str, Any]:
    return _round(_collect_mcts, "mcts", config, round_index, policy, reference_dir, data, round_dir,
                  checkpoint_dir, ref_cache_dir, ctx, named_models)


@flow(name="synthesized-round")
def synthesized_round(config: dict[str, Any], round_index: int, policy: dict[str, Any], reference_dir: str,
                      data: dict[str, Any], round_dir: str, checkpoint_dir: str, ref_cache_dir: str,
                      ctx: TrackingContext, named_models: dict[str, str] | None = None) -> dict[str, Any]:
    return _round(_collect_synthesized, "synthesized", config, round_index, policy, reference_dir, data, round_dir,
                  checkpoint_dir, ref_cache_dir, ctx, named_models)
