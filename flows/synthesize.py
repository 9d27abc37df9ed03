"""synthesize: one UltraFeedback-style pair file (ALGORITHMS.md §9), outside any round.

Composition only: data → base → SFT (the same cached stages as the pipeline) → the pool answers
the first round's prompts → the registered judge rates each completion per aspect → binarize
(→ rationales) → quality report and the judge's position-bias probe. The pair file is DVC-tracked, logged as an MLflow dataset, and
ready for the preference trainer (rationale-enriched DPO when it carries rationales). A
``rounds.kind: synthesized`` pipeline runs the same tasks inside every round.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow

from alignflow.components.config import PipelineConfig
from alignflow.components.platform.lineage import git_commit
from alignflow.components.collection.synthesis import resolve_pool
from alignflow.components.platform.tracking import flatten
from alignflow.tasks.context import open_flow_context
from alignflow.tasks.stages import prepare_base_task, prepare_data_task, quality_task, sft_task
from alignflow.tasks.synthesis import (position_bias_task, resolve_judge_task, synth_pairs_task, synth_rate_task,
                                   synth_sample_task)
from alignflow.tasks.runs import close_run_task, log_metrics_task


@flow(name="synthesize", log_prints=True)
def synthesize(config: dict[str, Any]) -> dict[str, Any]:
    cfg = PipelineConfig.model_validate(config)
    config = cfg.model_dump(mode="json")
    key = cfg.content_hash()
    pipeline_ws = Path(cfg.workspace).resolve() / key
    synth_hash = PipelineConfig.model_validate({**config, "rounds": {**config["rounds"], "kind": "synthesized"}}
                                               ).content_hash()
    out = Path(cfg.workspace).resolve() / f"synthesis-{synth_hash}"
    ctx = open_flow_context(cfg, out, f"synthesize-{synth_hash}",
                            {"alignflow.kind": "synthesis", "git_commit": git_commit(), "config_hash": synth_hash},
                            params=flatten({"synthesis": config["synthesis"], "sampling": config["sampling"]}))
    tracking_uri, parent = ctx.tracking_uri, ctx.parent_run_id
    try:
        data = prepare_data_task(config, str(pipeline_ws / "data"), ctx)
        paths, md5 = data["paths"], data["md5"]
        base = prepare_base_task(config, ctx)
        named = {"base": base["path"]}
        if cfg.sft.enabled:
            named["sft"] = sft_task(config, base["path"], paths["sft"], md5[paths["sft"]],
                                    str(Path(cfg.state_dir).resolve() / "checkpoints" / key / "sft"), ctx)["path"]
        named["current"] = named.get("sft", named["base"])
        pool = [asdict(m) for m in resolve_pool(cfg, named)]
        judge = resolve_judge_task(config, ctx)
        sampled = synth_sample_task(config, pool, paths["train"], md5[paths["train"]], 1, str(out), ctx)
        rated = synth_rate_task(config, judge["path"], judge["model_id"], sampled["path"], sampled["md5"], 1,
                                str(out), ctx)
        pairs = synth_pairs_task(config, rated["path"], rated["md5"], rated["judge_model_id"], 1, sampled["seed"],
                                 str(out), ctx, rationale_model_dir=judge["path"] if cfg.synthesis.rationales else None)
        quality = quality_task(config, pairs["path"], pairs["md5"], paths["eval"], "synthesis", str(out / "quality"),
                               ctx)
        bias = {}
        if cfg.synthesis.position_bias_pairs:
            bias = position_bias_task(config, judge["path"], judge["model_id"], pairs["path"], pairs["md5"],
                                      "synthesis", ctx)
        log_metrics_task(ctx, parent, {"synthesis/n_pairs": pairs["n_pairs"],
                                       "synthesis/judge_malformed_rate": rated["malformed_rate"],
                                       **quality["metrics"], **bias}, tags={"judge": judge["source"]})
    except BaseException:
        close_run_task(ctx, parent, "FAILED")
        raise
    close_run_task(ctx, parent)
    return {"parent_run_id": parent, "tracking_uri": tracking_uri, "experiment": cfg.tracking.experiment,
            "pairs": pairs, "ratings": rated["path"], "judge": judge, "quality": quality, "workspace": str(out)}
