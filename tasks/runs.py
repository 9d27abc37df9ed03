"""Tasks that act on the current MLflow runs and the registry; never cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.components.platform import registry
from alignflow.components.platform.atomic import write_json_atomic, write_text_atomic
from alignflow.components.config import PipelineConfig
from alignflow.components.platform.lineage import git_commit
from alignflow.components.platform.recovery import Attempt, record_attempt
from alignflow.components.platform.tracking import Tracker, flatten
from alignflow.tasks.context import TrackingContext

TRACKING = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)


@task(name="open-run", **TRACKING)
def open_run_task(tracking_uri: str, experiment: str, name: str, parent_run_id: str | None,
                  tags: dict[str, Any], params: dict[str, Any] | None = None) -> str:
    tracker = Tracker(tracking_uri, experiment)
    run_id = tracker.start_run(name, parent_run_id=parent_run_id, tags=tags)
    if params:
        tracker.log_params(run_id, params)
    return run_id


@task(name="record-attempt", **TRACKING)
def record_attempt_task(ctx: TrackingContext, workspace: str, previous: Attempt | None) -> list[str]:
    """A re-run after a crash: the dead attempt's RUNNING runs become FAILED and are linked to this one."""
    return record_attempt(ctx.tracker(), Path(workspace), ctx.parent_run_id, previous)


@task(name="log-metrics", **TRACKING)
def log_metrics_task(ctx: TrackingContext, run_id: str, metrics: dict[str, float], step: int = 0,
                     tags: dict[str, Any] | None = None) -> None:
    tracker = ctx.tracker()
    tracker.log_metrics(run_id, metrics, step=step)
    if tags:
        tracker.set_tags(run_id, tags)


@task(name="close-run", **TRACKING)
def close_run_task(ctx: TrackingContext, run_id: str, status: str = "FINISHED") -> None:
    ctx.tracker().end_run(run_id, status)


@task(name="register-model", **TRACKING)
def register_task(ctx: TrackingContext, config: dict[str, Any], checkpoint_dir: str, model_id: str,
                  eval_accuracy: float, eval_md5: str, base_model_id: str, baseline_accuracy: float,
                  name: str | None = None, extra_tags: dict[str, Any] | None = None) -> str:
    """Register under ``name`` (default: the policy's registered model; the judge loop names its own).
    ``baseline_accuracy``: the accuracy of the model the rounds started from, on the same eval set —
    what the accuracy gate compares a first version with."""
    cfg = PipelineConfig.model_validate(config)
    tracker = ctx.tracker()
    tags = {"model_id": model_id, "eval_accuracy": eval_accuracy, "eval_dataset": eval_md5,
            "baseline_accuracy": baseline_accuracy,
            "config_hash": cfg.content_hash(), "git_commit": git_commit(), "base_model": base_model_id,
            "pipeline_run_id": ctx.parent_run_id, **(extra_tags or {})}
    return registry.register_checkpoint(tracker, name or cfg.tracking.registered_model, ctx.parent_run_id,
                                        Path(checkpoint_dir), tags)


@task(name="promote", **TRACKING)
def promote_task(ctx: TrackingContext, config: dict[str, Any], version: str, report_dir: str,
                 name: str | None = None, min_delta: float | None = None, policy_gates: bool = True) -> dict[str, Any]:
    """Gate the version just registered on its own tags (accuracy, eval set, baseline, KL, length).
    ``policy_gates``: the promotion section's KL, length and approval settings apply (a policy);
    False for a judge, gated on its held-out accuracy alone."""
    cfg = PipelineConfig.model_validate(config)
    tracker = ctx.tracker()
    name = name or cfg.tracking.registered_model
    production = registry.version_for_alias(tracker, name, "production")
    limits = cfg.promotion if min_delta is None else cfg.promotion.model_copy(update={"min_delta": min_delta})
    candidate_tags = tracker.client.get_model_version(name, version).tags
    decision = registry.decide_promotion(version, candidate_tags, production, limits, policy_gates)
    moved = registry.apply_promotion(tracker, name, decision, cfg.promotion.target_alias)
    report = Path(report_dir)
    write_json_atomic(report / "gate_decision.json", {**decision.as_dict(), "aliases_set": moved})
    write_text_atomic(report / "gate_report.md", decision.as_markdown())
    tracker.log_artifact(ctx.parent_run_id, report / "gate_decision.json", "promotion")
    tracker.log_artifact(ctx.parent_run_id, report / "gate_report.md", "promotion")
    tracker.set_tags(ctx.parent_run_id, {"promotion.passed": decision.passed, "promotion.version": version,
                                         "promotion.aliases": ",".join(moved) or "none"})
    tracker.client.set_model_version_tag(name, version, "gate_passed", str(decision.passed))
    return {**decision.as_dict(), "aliases_set": moved, "registered_model": name}


def pipeline_params(cfg: PipelineConfig) -> dict[str, Any]:
    return flatten(cfg.model_dump(mode="json"))
