"""alignment_pipeline: data → base → SFT → [reward model] → baseline eval → [offline preference round] →
N rounds → register (the version starts a lineage that
``flows/continuing.py`` continues) → gate.

With ``reward.enabled`` the reward_model step (flows/reward.py) trains, gates and registers a reward
model (or resolves ``reward.source``), and every ``reward_model`` scorer without a ``model`` scores
with it from then on (the baseline eval included). When the eval has a reward model and a verifier
(or ``promotion.proxy_metric`` / ``truth_metric`` name two metrics), the pipeline run gets a plot of
the two per round, and the registered policy carries both as tags for the proxy-gap gate.

Composition only. Everything a stage computes lives in a task; everything a round does lives in
the round subflow. Directories are keyed by the config's content hash (and, inside, by each
stage's code version), so the same config re-run after a crash lands in the same place and
resumes, and edited code recomputes exactly what it affects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from alignflow.components.config import PipelineConfig, warn_unused_settings
from alignflow.components.evaluation.gates import scorer_models_tag
from alignflow.components.evaluation.hacking import proxy_and_truth, proxy_truth_tags
from alignflow.components.evaluation.policy import promotion_metric
from alignflow.components.stages.results import Checkpoint
from alignflow.components.stages.reward_model import bind_reward_model
from alignflow.flows.reward import reward_model_step
from alignflow.flows.rounds import RoundLayout, alignment_round
from alignflow.tasks.continuing import start_lineage_task
from alignflow.tasks.reward import resolve_reward_task
from alignflow.tasks.runs import (
    log_metrics_task,
    pipeline_params,
    promote_task,
    proxy_truth_plot_task,
    register_task,
    tracked_flow,
)
from alignflow.tasks.stages import evaluate_task, prepare_base_task, prepare_data_task, sft_task


class PipelineResult(BaseModel):
    parent_run_id: str
    tracking_uri: str
    experiment: str
    metric: str  # the promotion metric (promotion.metric, resolved)
    metric_history: list[float]  # its value after SFT, then after each round (round 0: offline preferences)
    registered_model: str
    version: str
    promotion: dict[str, Any]
    policy: Checkpoint
    workspace: str
    pid: int
    reward_model: str | None = None  # the reward_model step's model the rounds scored with, and where it came from


@flow(name="alignment_pipeline", log_prints=True)
def alignment_pipeline(config: dict[str, Any]) -> PipelineResult:
    cfg = PipelineConfig.model_validate(config)
    warn_unused_settings(cfg)  # sections the chosen options leave unused: named, loudly, but not fatal
    config = cfg.model_dump(mode="json")
    key = cfg.content_hash()
    workspace = Path(cfg.workspace).resolve() / key
    checkpoints = Path(cfg.state_dir).resolve() / "checkpoints" / key
    ref_cache = str(Path(cfg.state_dir).resolve() / "reference-logps")
    metric = promotion_metric(cfg)
    with tracked_flow(cfg, workspace, f"pipeline-{key}", {"alignflow.kind": "pipeline", "config_hash": key,
                                                          "model_source": cfg.model.source,
                                                          "promotion_metric": metric},
                      params=pipeline_params(cfg)) as ctx:
        data = prepare_data_task(config, str(workspace / "data"), ctx)
        base = prepare_base_task(config, ctx).checkpoint
        if cfg.reward.enabled and cfg.reward.source is not None:  # a missing or wrong model fails before SFT
            resolve_reward_task(config, ctx)  # (downloaded once; the reward_model step below reuses it)
        policy = base
        if cfg.sft.enabled and data.sft is not None:
            policy = sft_task(config, base, data.sft, str(checkpoints / "sft"), ctx).checkpoint
        reference = policy
        reward_source = None
        if cfg.reward.enabled:  # the pipeline's reward model; its reward_model scorers score with it from here on
            reward = reward_model_step(config, policy, data, str(workspace / "reward-model"),
                                       str(checkpoints / "reward-model"), ctx)
            config = bind_reward_model(cfg, reward.checkpoint.path).model_dump(mode="json")
            reward_source = f"{reward.checkpoint.model_id} ({reward.source})"
            log_metrics_task(ctx, ctx.parent_run_id, {}, tags={"reward_model.source": reward.source,
                                                               "reward_model.model_id": reward.checkpoint.model_id})
        # what synthesis.policies may name besides "current": earlier checkpoints of this pipeline
        named_models = {"base": base, **({"sft": policy} if policy is not base else {})}
        baseline = evaluate_task(config, policy, None, data.eval, str(workspace / "eval-baseline"), cfg.seed,
                                 "baseline", ctx)
        log_metrics_task(ctx, ctx.parent_run_id, baseline.metrics, step=0)
        proxy_truth = proxy_and_truth(cfg, baseline.metrics)  # checked here: before any round runs
        history, final_metrics = [baseline.metrics[metric]], baseline.metrics
        evals = {0: baseline.metrics}
        # round 0: the preferences source trained on directly (offline DPO), then the on-policy rounds
        kinds = ([(0, "offline")] if data.preferences is not None else []) + [
            (i, cfg.rounds.kind) for i in range(1, cfg.rounds.n_rounds + 1)]
        for round_index, kind in kinds:
            layout = RoundLayout(round_dir=str(workspace / f"round-{round_index}"),
                                 checkpoint_dir=str(checkpoints / f"round-{round_index}"), ref_cache_dir=ref_cache)
            done = alignment_round(config, round_index, kind, policy, reference, data, layout, ctx, named_models)
            policy = named_models[f"round-{round_index}"] = done.policy
            if cfg.preference.reference == "previous_round":
                reference = policy
            history.append(done.metric(metric))
            final_metrics = done.metrics
            if kind != "offline":  # the proxy/truth plot's round 0 is the SFT model
                evals[round_index] = done.metrics
            log_metrics_task(ctx, ctx.parent_run_id, {k: v for k, v in done.metrics.items() if k.startswith("eval/")},
                             step=round_index if kind != "offline" else 0)
        if proxy_truth is not None:
            proxy_truth_plot_task(ctx, evals, *proxy_truth, str(workspace / "reward-hacking"))
        version = register_task(ctx, config, policy, metric, history[-1], data.eval.md5, base.model_id, history[0],
                                extra_tags={"eval_kl": final_metrics.get("eval/kl_to_reference", float("nan")),
                                            # which reward model / judge scored the metrics: gates compare like
                                            **scorer_models_tag(baseline.scorer_models),
                                            "eval_mean_length": final_metrics["eval/mean_length"],
                                            **({"eval_accuracy": final_metrics["eval/accuracy"]}
                                               if "eval/accuracy" in final_metrics else {}),
                                            **proxy_truth_tags(proxy_truth, final_metrics, baseline.metrics)},
                                step=len(history) - 1)
        start_lineage_task(ctx, config, version, data.prompts, [i for i, k in kinds if k != "offline"],
                           named_models.get("sft", base))  # what `alignflow continue` starts from
        decision = promote_task(ctx, config, version, str(workspace / "promotion"))
        log_metrics_task(ctx, ctx.parent_run_id, {"pipeline/baseline_metric": history[0],
                                                  "pipeline/final_metric": history[-1],
                                                  "pipeline/metric_gain": history[-1] - history[0]})
    return PipelineResult(parent_run_id=ctx.parent_run_id, tracking_uri=ctx.tracking_uri,
                          experiment=cfg.tracking.experiment, metric=metric, metric_history=history,
                          registered_model=cfg.tracking.registered_model, version=version, promotion=decision,
                          policy=policy, workspace=str(workspace), pid=os.getpid(), reward_model=reward_source)
