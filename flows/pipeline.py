"""alignment_pipeline: data → base → SFT → baseline eval → N on-policy rounds → register → gate.

Composition only. Everything a stage computes lives in a task; everything a round does lives
in the round subflow. Directories are keyed by the config's content hash, so the same config
re-run after a crash lands in the same place and resumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.lineage import git_commit
from alignflow.flows.rounds import mcts_round, on_policy_round, synthesized_round
from alignflow.tasks.context import open_flow_context
from alignflow.tasks.stages import evaluate_task, prepare_base_task, prepare_data_task, sft_task
from alignflow.tasks.runs import close_run_task, log_metrics_task, pipeline_params, promote_task, register_task


def _layout(cfg: PipelineConfig) -> dict[str, Path]:
    key = cfg.content_hash()
    workspace = Path(cfg.workspace).resolve() / key
    state = Path(cfg.state_dir).resolve()
    return {"workspace": workspace, "data": workspace / "data", "checkpoints": state / "checkpoints" / key,
            "ref_cache": state / "reference-logps", "timings": workspace / "timings.jsonl"}


@flow(name="alignment_pipeline", log_prints=True)
def alignment_pipeline(config: dict[str, Any]) -> dict[str, Any]:
    cfg = PipelineConfig.model_validate(config)
    config = cfg.model_dump(mode="json")
    layout = _layout(cfg)
    ctx = open_flow_context(cfg, layout["workspace"], f"pipeline-{cfg.content_hash()}",
                            {"alignflow.kind": "pipeline", "git_commit": git_commit(),
                             "config_hash": cfg.content_hash(), "model_source": cfg.model.source},
                            params=pipeline_params(cfg))
    tracking_uri, parent = ctx.tracking_uri, ctx.parent_run_id
    try:
        data = prepare_data_task(config, str(layout["data"]), ctx)
        paths, md5 = data["paths"], data["md5"]
        base = prepare_base_task(config, ctx)
        if cfg.sft.enabled:
            policy = sft_task(config, base["path"], paths["sft"], md5[paths["sft"]],
                              str(layout["checkpoints"] / "sft"), ctx)
        else:
            policy = {"path": base["path"], "model_id": base["model_id"]}
        reference_dir = policy["path"]
        # what synthesis.policies may name besides "current": earlier checkpoints of this pipeline
        named_models = {"base": base["path"], **({"sft": policy["path"]} if cfg.sft.enabled else {})}
        baseline = evaluate_task(config, policy["path"], None, paths["eval"], md5[paths["eval"]],
                                 str(layout["workspace"] / "eval-baseline"), cfg.seed, "baseline", ctx)
        log_metrics_task(ctx, parent, baseline["metrics"], step=0)
        history = [baseline["metrics"]["eval/accuracy"]]
        final_metrics = baseline["metrics"]
        for round_index in range(1, cfg.rounds.n_rounds + 1):
            run_round = {"mcts": mcts_round, "synthesized": synthesized_round}.get(cfg.rounds.kind, on_policy_round)
            manifest = run_round(config, round_index, policy, reference_dir, data,
                                 str(layout["workspace"] / f"round-{round_index}"),
                                 str(layout["checkpoints"] / f"round-{round_index}"), str(layout["ref_cache"]), ctx,
                                 named_models)
            named_models[f"round-{round_index}"] = manifest["policy"]["path"]
            policy = manifest["policy"]
            if cfg.preference.reference == "previous_round":
                reference_dir = policy["path"]
            history.append(manifest["metrics"]["eval/accuracy"])
            final_metrics = manifest["metrics"]
            log_metrics_task(ctx, parent, {k: v for k, v in manifest["metrics"].items() if k.startswith("eval/")},
                             step=round_index)
        final_accuracy = history[-1]
        version = register_task(ctx, config, policy["path"], policy["model_id"], final_accuracy,
                                md5[paths["eval"]], base["model_id"], history[0],
                                extra_tags={"eval_kl": final_metrics.get("eval/kl_to_reference", float("nan")),
                                            "eval_mean_length": final_metrics["eval/mean_length"]})
        decision = promote_task(ctx, config, version, str(layout["workspace"] / "promotion"))
        log_metrics_task(ctx, parent, {"pipeline/baseline_accuracy": history[0], "pipeline/final_accuracy": final_accuracy,
                                       "pipeline/accuracy_gain": final_accuracy - history[0]})
    except BaseException:
        close_run_task(ctx, parent, "FAILED")
        raise
    close_run_task(ctx, parent)
    return {"parent_run_id": parent, "tracking_uri": tracking_uri, "accuracy_history": history,
            "registered_model": cfg.tracking.registered_model, "version": version, "promotion": decision,
            "policy": policy, "workspace": str(layout["workspace"]), "experiment": cfg.tracking.experiment,
            "pid": os.getpid()}
