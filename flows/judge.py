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
from pydantic import BaseModel

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.tracking import flatten
from alignflow.components.stages.results import Checkpoint
from alignflow.tasks.judge import (
    judge_curate_task,
    judge_data_task,
    judge_eval_task,
    judge_sample_task,
    judge_sft_task,
    judge_train_task,
)
from alignflow.tasks.runs import log_metrics_task, promote_task, register_task, tracked_flow, tracked_run
from alignflow.tasks.stages import prepare_base_task, prepare_data_task, quality_task, sft_task

ACCURACY = "judge/exact_accuracy"


class JudgeLoopResult(BaseModel):
    parent_run_id: str
    tracking_uri: str
    experiment: str
    history: list[dict[str, float]]
    judge: Checkpoint
    registered_model: str
    version: str
    promotion: dict[str, Any]
    workspace: str


@flow(name="judge_loop", log_prints=True)
def judge_loop(config: dict[str, Any]) -> JudgeLoopResult:
    cfg = PipelineConfig.model_validate(config)
    config = cfg.model_dump(mode="json")
    j = cfg.judge
    # the pipeline's data and SFT policy live under the pipeline's hash: the same stages, reused
    pipeline_ws = Path(cfg.workspace).resolve() / cfg.content_hash()
    workspace = Path(cfg.workspace).resolve() / f"judge-{cfg.judge_hash()}"
    state = Path(cfg.state_dir).resolve()
    checkpoints = state / "checkpoints" / f"judge-{cfg.judge_hash()}"
    ref_cache = str(state / "reference-logps")
    with tracked_flow(cfg, workspace, f"judge-loop-{cfg.judge_hash()}",
                      {"alignflow.kind": "judge_loop", "judge_hash": cfg.judge_hash(),
                       "model_source": cfg.model.source},
                      params=flatten({"judge": config["judge"], "seed": cfg.seed,
                                      "model.source": cfg.model.source})) as ctx:
        data = prepare_data_task(config, str(pipeline_ws / "data"), ctx)
        base = prepare_base_task(config, ctx).checkpoint
        policy = base
        if cfg.sft.enabled and data.sft is not None:  # the policy whose samples join the labelled rows
            policy = sft_task(config, base, data.sft, str(state / "checkpoints" / cfg.content_hash() / "sft"),
                              ctx).checkpoint
        labelled = judge_data_task(config, policy, data.role("prompts"), str(workspace / "data"), ctx)
        seed_judge = judge_sft_task(config, base, labelled.train, str(checkpoints / "seed"), ctx).checkpoint

        with tracked_run(ctx, "judge-iter-0", {"alignflow.kind": "judge_iteration", "iteration": 0,
                                               "judge_in": seed_judge.model_id}) as (run, run_ctx):
            evaluated = judge_eval_task(config, seed_judge, labelled.heldout, "seed", str(workspace / "iter-0"),
                                        run_ctx)
            log_metrics_task(run_ctx, run, evaluated.metrics, step=0, tags={"judge_out": seed_judge.model_id})
        log_metrics_task(ctx, ctx.parent_run_id, evaluated.metrics, step=0)
        history = [evaluated.metrics]

        judge, reference = seed_judge, seed_judge
        for t in range(1, j.iterations + 1):
            with tracked_run(ctx, f"judge-iter-{t}", {"alignflow.kind": "judge_iteration", "iteration": t,
                                                      "judge_in": judge.model_id}) as (run, run_ctx):
                out = str(workspace / f"iter-{t}")
                sampled = judge_sample_task(config, judge, labelled.train, t, out, run_ctx)
                pairs = judge_curate_task(config, sampled.judgments, sampled.judge_model_id, t, sampled.seed, out,
                                          run_ctx)
                metrics = {"judge_pairs/n_pairs": pairs.n_pairs, "judge_sample/malformed_rate": sampled.malformed_rate}
                if pairs.n_pairs:
                    quality = quality_task(config, pairs.pairs, labelled.heldout, f"judge-t{t}",
                                           str(Path(out) / "quality"), run_ctx)
                    metrics.update(quality.metrics)
                    judge = judge_train_task(config, judge, reference, pairs.pairs, t, str(checkpoints / f"iter-{t}"),
                                             ref_cache, run_ctx).checkpoint
                    history.append(judge_eval_task(config, judge, labelled.heldout, f"t{t}", out, run_ctx).metrics)
                else:  # every input's samples agreed: nothing to learn this iteration, the judge stays
                    history.append(history[-1])
                log_metrics_task(run_ctx, run, {**history[-1], **metrics}, step=t,
                                 tags={"judge_out": judge.model_id, "trained": bool(pairs.n_pairs)})
            log_metrics_task(ctx, ctx.parent_run_id, {**history[-1], **metrics}, step=t)
            if j.reference == "previous":
                reference = judge

        final = history[-1][ACCURACY]
        version = register_task(ctx, config, judge, ACCURACY, final, labelled.heldout.md5, base.model_id,
                                history[0][ACCURACY],
                                name=j.registered_model,
                                extra_tags={"role": "judge", "judge_hash": cfg.judge_hash(),
                                            "judge_mae": history[-1]["judge/mae"],
                                            "judge_pairwise_agreement": history[-1]["judge/pairwise_agreement"]},
                                step=len(history) - 1, max_tokens=j.max_new_tokens)
        decision = promote_task(ctx, config, version, str(workspace / "promotion"), name=j.registered_model,
                                min_delta=j.min_delta, policy_gates=False)
        log_metrics_task(ctx, ctx.parent_run_id, {"judge_loop/seed_accuracy": history[0][ACCURACY],
                                                  "judge_loop/final_accuracy": final,
                                                  "judge_loop/accuracy_gain": final - history[0][ACCURACY]})
    return JudgeLoopResult(parent_run_id=ctx.parent_run_id, tracking_uri=ctx.tracking_uri,
                           experiment=cfg.tracking.experiment, history=history, judge=judge,
                           registered_model=j.registered_model, version=version, promotion=decision,
                           workspace=str(workspace))
