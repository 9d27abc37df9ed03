"""Tasks that act on the current MLflow runs and the registry (never cached), and the two ways a flow
opens a run: ``tracked_flow`` (a flow's parent run, with its workspace's attempt record) and
``tracked_run`` (a nested run, e.g. a round or a judge iteration). Either closes its run FINISHED,
or FAILED when the body raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.components.config import PipelineConfig
from alignflow.components.evaluation.gates import Remeasured, decide_promotion
from alignflow.components.evaluation.hacking import plot_proxy_truth
from alignflow.components.platform import registry
from alignflow.components.platform.codeversion import package_version
from alignflow.components.platform.lineage import git_commit
from alignflow.components.platform.recovery import Attempt, check_not_running, record_attempt
from alignflow.components.platform.tracking import Tracker, flatten, resolve_tracking_uri
from alignflow.components.platform.versioning import find_repo_root
from alignflow.components.stages.register import Packaging, register_checkpoint
from alignflow.components.stages.results import Checkpoint
from alignflow.tasks.context import TrackingContext, config_of
from alignflow.tasks.promotion import publish_gate_report

TRACKING: dict[str, Any] = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)


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


def open_flow_context(cfg: PipelineConfig, workspace: Path, run_name: str, tags: dict[str, Any],
                      params: dict[str, Any] | None = None) -> TrackingContext:
    """What every flow does first: check DVC is there when versioning is on, refuse a workspace a live
    attempt is using, open the flow's parent MLflow run (tagged with the git commit and the code
    version of the components package; a crashed attempt's runs closed and linked), and return the
    context its tasks report through.

    Raises:
        RuntimeError: versioning is on and the workspace is not inside a DVC repository.
        WorkspaceBusyError: a live attempt holds the workspace.
    """
    dvc_root = find_repo_root(workspace) if cfg.versioning.enabled else None
    if cfg.versioning.enabled and dvc_root is None:
        raise RuntimeError(f"versioning.enabled is true but {workspace} is not inside a DVC repo: "
                           f"run `dvc init` in the project root, or set versioning.enabled=false")
    Path(workspace).mkdir(parents=True, exist_ok=True)
    previous = check_not_running(Path(workspace))
    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir)
    tags = {"git_commit": git_commit(), "code_version": package_version(), **tags}
    parent = open_run_task(tracking_uri, cfg.tracking.experiment, run_name, None, tags, params=params)
    ctx = TrackingContext(tracking_uri=tracking_uri, experiment=cfg.tracking.experiment, parent_run_id=parent,
                          dvc_root=str(dvc_root) if dvc_root else None, dvc_remote=cfg.versioning.remote,
                          dvc_push=cfg.versioning.push, timings_file=str(Path(workspace) / "timings.jsonl"))
    record_attempt_task(ctx, str(workspace), previous)
    return ctx


@contextmanager
def tracked_flow(cfg: PipelineConfig, workspace: Path, run_name: str, tags: dict[str, Any],
                 params: dict[str, Any] | None = None) -> Iterator[TrackingContext]:
    """A flow's parent run around its body (``open_flow_context``), closed FINISHED or FAILED."""
    ctx = open_flow_context(cfg, workspace, run_name, tags, params)
    try:
        yield ctx
    except BaseException:
        close_run_task(ctx, ctx.parent_run_id, "FAILED")
        raise
    close_run_task(ctx, ctx.parent_run_id)


@contextmanager
def tracked_run(ctx: TrackingContext, name: str, tags: dict[str, Any]) -> Iterator[tuple[str, TrackingContext]]:
    """A run nested under ``ctx``'s parent: yields (run id, the context whose parent it is), closed
    FINISHED or FAILED."""
    run_id = open_run_task(ctx.tracking_uri, ctx.experiment, name, ctx.parent_run_id, tags)
    child = ctx.under(run_id)
    try:
        yield run_id, child
    except BaseException:
        close_run_task(child, run_id, "FAILED")
        raise
    close_run_task(child, run_id)


@task(name="register-model", **TRACKING)
def register_task(ctx: TrackingContext, config: dict[str, Any], checkpoint: Checkpoint, metric: str, value: float,
                  eval_md5: str, base_model_id: str, baseline: float, name: str | None = None,
                  extra_tags: dict[str, Any] | None = None, step: int | None = None,
                  max_tokens: int | None = None) -> str:
    """Register ``checkpoint`` under ``name`` (default: the policy's registered model; the judge loop
    names its own) as a self-contained MLflow model (``stages/register.py``), linked to the flow's run and
    its metrics at ``step`` (the final round), tagged with its eval ``metric`` (the promotion metric) and
    ``value``, and the ``baseline``: that metric of the model the rounds started from, on the same eval
    set — what the gate compares a first version with. ``max_tokens``: the served default answer length
    (default ``eval.max_new_tokens``, what was evaluated)."""
    cfg = config_of(config)
    tags = {"model_id": checkpoint.model_id, "eval_metric_name": metric, "eval_metric": value,
            "baseline_metric": baseline, "eval_dataset": eval_md5, "config_hash": cfg.content_hash(),
            "git_commit": git_commit(), "code_version": package_version(), "base_model": base_model_id,
            "pipeline_run_id": ctx.parent_run_id, **(extra_tags or {})}
    if metric == "eval/accuracy":
        tags.update({"eval_accuracy": value, "baseline_accuracy": baseline})
    packaging = Packaging.of(cfg, max_tokens or cfg.eval.max_new_tokens)
    return register_checkpoint(ctx.tracker(), name or cfg.tracking.registered_model, ctx.parent_run_id,
                               checkpoint.dir, tags, packaging, step=step)


@task(name="promote", **TRACKING)
def promote_task(ctx: TrackingContext, config: dict[str, Any], version: str, report_dir: str,
                 name: str | None = None, min_delta: float | None = None, policy_gates: bool = True,
                 min_metric: float | None = None, remeasured: Remeasured | None = None) -> dict[str, Any]:
    """Gate the version just registered on its own tags (accuracy, eval set, baseline, KL, length, proxy
    gap) and move its aliases. ``policy_gates``: the promotion section's KL, length, proxy-gap and
    approval settings apply (a policy); False for a judge or a reward model, gated on its held-out
    accuracy alone — with a floor ``min_metric``, and against production measured again on the
    candidate's own eval set (``remeasured``) when given."""
    cfg = config_of(config)
    tracker = ctx.tracker()
    name = name or cfg.tracking.registered_model
    production = registry.version_for_alias(tracker, name, "production")
    limits = cfg.promotion if min_delta is None else cfg.promotion.model_copy(update={"min_delta": min_delta})
    candidate_tags = dict(tracker.get_model_version(name, version).tags or {})
    report = decide_promotion(name, version, candidate_tags, None if production is None else str(production.version),
                              None if production is None else dict(production.tags or {}), limits, policy_gates,
                              min_metric, remeasured)
    moved = registry.apply_promotion(tracker, name, report, cfg.promotion.target_alias)
    publish_gate_report(tracker, report, ctx.parent_run_id, Path(report_dir), moved)
    tracker.set_tags(ctx.parent_run_id, {"promotion.passed": report.passed, "promotion.version": version,
                                         "promotion.aliases": ",".join(moved) or "none"})
    return {**report.as_dict(), "aliases_set": moved, "registered_model": name}


@task(name="proxy-truth-plot", **TRACKING)
def proxy_truth_plot_task(ctx: TrackingContext, evals: dict[int, dict[str, float]], proxy: str, truth: str,
                          out_dir: str) -> str:
    """The proxy and truth metrics per round (``evaluation/hacking.py``) as a PNG on the pipeline run
    (``reward_hacking/proxy_vs_truth.png``); returns the file."""
    plot = plot_proxy_truth(evals, proxy, truth, Path(out_dir) / "proxy_vs_truth.png")
    ctx.tracker().log_artifact(ctx.parent_run_id, plot, "reward_hacking")
    return str(plot)


def pipeline_params(cfg: PipelineConfig) -> dict[str, Any]:
    return flatten(cfg.model_dump(mode="json"))
