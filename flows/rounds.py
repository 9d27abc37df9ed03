"""One on-policy round: sample → score → pairs → [reward-ensemble curation] → train → eval, as a
resumable subflow.

A finished round leaves ``round.json`` (written last, atomically). Re-running finds it and
only re-reports its metrics under the new pipeline run; a round that crashed midway re-runs,
and its finished tasks come back from Prefect's result cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow

from components.atomic import write_json_atomic
from components.faults import maybe_kill_after_round
from components.steps import load_json
from tasks.context import TrackingContext
from tasks.pipeline_tasks import evaluate_task, pairs_task, sample_task, score_task, strength_task, train_task
from tasks.tracking_tasks import close_run_task, log_metrics_task, open_run_task


@flow(name="on-policy-round")
def on_policy_round(config: dict[str, Any], round_index: int, policy: dict[str, Any], reference_dir: str,
                    data: dict[str, Any], round_dir: str, checkpoint_dir: str, ref_cache_dir: str,
                    ctx: TrackingContext) -> dict[str, Any]:
    manifest_path = Path(round_dir) / "round.json"
    round_run = open_run_task(ctx.tracking_uri, ctx.experiment, f"round-{round_index}", ctx.parent_run_id,
                              {"alignflow.kind": "round", "round": round_index, "policy_in": policy["model_id"]})
    round_ctx = ctx.model_copy(update={"parent_run_id": round_run})
    if manifest_path.exists():
        manifest = load_json(manifest_path)
        log_metrics_task(round_ctx, round_run, manifest["metrics"], step=round_index,
                         tags={"resumed": "true", "policy_out": manifest["policy"]["model_id"]})
        close_run_task(round_ctx, round_run)
        return manifest
    started = time.perf_counter()
    try:
        paths, md5 = data["paths"], data["md5"]
        sampled = sample_task(config, policy["path"], paths["train"], md5[paths["train"]], round_index,
                              round_dir, round_ctx)
        scored = score_task(sampled["path"], sampled["md5"], round_index, round_dir, round_ctx)
        pairs = pairs_task(config, scored["path"], scored["md5"], sampled["policy_model_id"], round_index,
                           sampled["seed"], round_dir, round_ctx)
        training_pairs = pairs
        if config["reward"]["strength_mode"] != "none":  # curate with a reward-model ensemble first
            training_pairs = strength_task(config, reference_dir, pairs["path"], pairs["md5"], round_index,
                                           round_dir, round_ctx)
        trained = train_task(config, policy["path"], reference_dir, training_pairs["path"], training_pairs["md5"],
                             round_index, checkpoint_dir, ref_cache_dir, round_ctx)
        evaluated = evaluate_task(config, trained["path"], reference_dir, paths["eval"], md5[paths["eval"]],
                                  str(Path(round_dir) / "eval"), config["seed"] + round_index, f"r{round_index}",
                                  round_ctx)
    except BaseException:
        close_run_task(round_ctx, round_run, "FAILED")
        raise
    wall = time.perf_counter() - started
    compute = {"sampling": sampled["seconds"], "scoring": scored["seconds"], "pairs": pairs["seconds"],
               "training": trained["seconds"], "eval": evaluated["seconds"]}
    if training_pairs is not pairs:
        compute["strength"] = training_pairs["seconds"]
    metrics = {**evaluated["metrics"],
               "round/sample_accuracy": scored["sample_accuracy"], "round/n_pairs": pairs["n_pairs"],
               **{f"train_final/{k.removeprefix('train/')}": v for k, v in trained["final_metrics"].items()},
               **{f"time/{k}_seconds": v for k, v in compute.items()},
               "time/round_wall_seconds": wall,
               "time/tracking_overhead_seconds": max(0.0, wall - sum(compute.values()))}
    manifest = {"round": round_index, "policy": {"path": trained["path"], "model_id": trained["model_id"]},
                "metrics": metrics, "pairs": {"path": pairs["path"], "md5": pairs["md5"]},
                "training_pairs": {"path": training_pairs["path"], "md5": training_pairs["md5"]},
                "samples": {"path": sampled["path"], "md5": sampled["md5"]}}
    log_metrics_task(round_ctx, round_run, metrics, step=round_index, tags={"policy_out": trained["model_id"]})
    close_run_task(round_ctx, round_run)
    write_json_atomic(manifest_path, manifest)
    maybe_kill_after_round(round_index)
    return manifest
