"""judge_loop: labelled judge data → seed SFT judge → T self-rationalization iterations → register.

Composition only (ALGORITHMS.md §3). Each iteration is a nested MLflow run (``judge-iter-t``,
under the loop's parent run) holding its tasks and the held-out judge metrics; the seed judge's
evaluation is ``judge-iter-0``. The final judge is registered as its own model
(``judge.registered_model``) and moves ``candidate`` → ``staging`` → ``production`` through the same
gate as a policy: its exact-score accuracy against the production judge's on the same held-out
file, or against the seed judge when none is in production yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.lineage import git_commit
from alignflow.components.platform.tracking import flatten
from alignflow.tasks.context import TrackingContext, open_flow_context
from alignflow.tasks.judge import (judge_curate_task, judge_data_task, judge_eval_task, judge_sample_task, judge_sft_task,
                               judge_train_task)
from alignflow.tasks.stages import prepare_base_task, prepare_data_task, quality_task, sft_task
from alignflow.tasks.runs import close_run_task, log_metrics_task, open_run_task, promote_task, register_task

ACCURACY = "judge/exact_accuracy"


def _iteration_run(ctx: TrackingContext, parent: str, iteration: int, judge_in: str) -> tuple[str, TrackingContext]:
    run = open_run_task(ctx.tracking_uri, ctx.experiment, f"judge-iter-{iteration}", parent,
                        {"alignflow.kind": "judge_iteration", "iteration": iteration, "judge_in": judge_in})
    return run, ctx.model_copy(update={"parent_run_id": run})


@flow(name="judge_loop", log_prints=True)
def judge_loop(config: dict[str, Any]) -> dict[str, Any]:
    cfg = PipelineConfig.model_validate(config)
    config = cfg.model_dump(mode="json")
    j = cfg.judge
    # the pipeline's data and SFT policy live under the pipeline's hash: the same stages, reused
    pipeline_ws = Path(cfg.workspace).resolve() / cfg.content_hash()
    workspace = Path(cfg.workspace).resolve() / f"judge-{cfg.judge_hash()}"
    checkpoints = Path(cfg.state_dir).resolve() / "checkpoints" / f"judge-{cfg.judge_hash()}"
    ctx = open_flow_context(cfg, workspace, f"judge-loop-{cfg.judge_hash()}",
                            {"alignflow.kind": "judge_loop", "git_commit": git_commit(),
                             "judge_hash": cfg.judge_hash(), "model_source": cfg.model.source},
                            params=flatten({"judge": config["judge"], "seed": cfg.seed,
                                            "model.source": cfg.model.source}))
    tracking_uri, parent = ctx.tracking_uri, ctx.parent_run_id
    try:
        data = prepare_data_task(config, str(pipeline_ws / "data"), ctx)
        paths, md5 = data["paths"], data["md5"]
        base = prepare_base_task(config, ctx)
        policy_dir = base["path"]
        if cfg.sft.enabled:  # the policy whose samples join the labelled rows
            policy_dir = sft_task(config, base["path"], paths["sft"], md5[paths["sft"]],
                                  str(Path(cfg.state_dir).resolve() / "checkpoints" / cfg.content_hash() / "sft"),
                                  ctx)["path"]
        labelled = judge_data_task(config, policy_dir, paths["train"], md5[paths["train"]], str(workspace / "data"), ctx)
        train_rows, heldout = labelled["paths"]["train"], labelled["paths"]["heldout"]
        seed_judge = judge_sft_task(config, base["path"], train_rows, labelled["md5"][train_rows],
                                    str(checkpoints / "seed"), ctx)

        run, run_ctx = _iteration_run(ctx, parent, 0, seed_judge["model_id"])
        evaluated = judge_eval_task(config, seed_judge["path"], heldout, labelled["md5"][heldout], "seed",
                                    str(workspace / "iter-0"), run_ctx)
        log_metrics_task(run_ctx, run, evaluated["metrics"], step=0, tags={"judge_out": seed_judge["model_id"]})
        close_run_task(run_ctx, run)
        log_metrics_task(ctx, parent, evaluated["metrics"], step=0)
        history = [evaluated["metrics"]]

        judge, reference = seed_judge, seed_judge
        for t in range(1, j.iterations + 1):
            run, run_ctx = _iteration_run(ctx, parent, t, judge["model_id"])
            try:
                out = workspace / f"iter-{t}"
                sampled = judge_sample_task(config, judge["path"], train_rows, labelled["md5"][train_rows], t,
                                            str(out), run_ctx)
                pairs = judge_curate_task(config, sampled["path"], sampled["md5"], sampled["judge_model_id"], t,
                                          sampled["seed"], str(out), run_ctx)
                metrics = {"judge_pairs/n_pairs": pairs["n_pairs"], "judge_sample/malformed_rate":
                           sampled["malformed_rate"]}
                if pairs["n_pairs"]:
                    quality = quality_task(config, pairs["path"], pairs["md5"], heldout, f"judge-t{t}",
                                           str(out / "quality"), run_ctx)
                    metrics.update(quality["metrics"])
                    judge = judge_train_task(config, judge["path"], reference["path"], pairs["path"], pairs["md5"], t,
                                             str(checkpoints / f"iter-{t}"), run_ctx)
                    evaluated = judge_eval_task(config, judge["path"], heldout, labelled["md5"][heldout], f"t{t}",
                                                str(out), run_ctx)
                    history.append(evaluated["metrics"])
                else:  # every input's samples agreed: nothing to learn this iteration, the judge stays
                    history.append(history[-1])
            except BaseException:
                close_run_task(run_ctx, run, "FAILED")
                raise
            log_metrics_task(run_ctx, run, {**history[-1], **metrics}, step=t,
                             tags={"judge_out": judge["model_id"], "trained": bool(pairs["n_pairs"])})
            close_run_task(run_ctx, run)
            log_metrics_task(ctx, parent, {**history[-1], **metrics}, step=t)
            if j.reference == "previous":
                reference = judge

        final = history[-1][ACCURACY]
        version = register_task(ctx, config, judge["path"], judge["model_id"], final, labelled["md5"][heldout],
                                base["model_id"], history[0][ACCURACY], name=j.registered_model,
                                extra_tags={"role": "judge", "judge_hash": cfg.judge_hash(),
                                            "judge_mae": history[-1]["judge/mae"],
                                            "judge_pairwise_agreement": history[-1]["judge/pairwise_agreement"]})
        decision = promote_task(ctx, config, version, str(workspace / "promotion"), name=j.registered_model,
                                min_delta=j.min_delta, policy_gates=False)
        log_metrics_task(ctx, parent, {"judge_loop/seed_accuracy": history[0][ACCURACY],
                                       "judge_loop/final_accuracy": final,
                                       "judge_loop/accuracy_gain": final - history[0][ACCURACY]})
    except BaseException:
        close_run_task(ctx, parent, "FAILED")
        raise
    close_run_task(ctx, parent)
    return {"parent_run_id": parent, "tracking_uri": tracking_uri, "experiment": cfg.tracking.experiment,
            "history": history, "judge": judge, "registered_model": j.registered_model, "version": version,
            "promotion": decision, "workspace": str(workspace)}
