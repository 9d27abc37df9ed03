"""continue_rounds: the next round of a lineage — production in, unseen prompts, one round, register,
gate against production.

What ``alignflow continue`` and the ``nightly-round`` deployment run, any number of times after one
``alignflow run``. Composition only:

1. take the lineage's lock in the registry (a second run on the lineage refuses, or waits
   ``continuing.lock_wait_s``; components/platform/lineage_lock.py);
2. read the lineage from the registry (``model.source``, e.g. ``models:/alignflow-policy@production``,
   pinned to the version it names now): its prompt cursor, what every version of the lineage
   consumed, the next round number, the reference ``preference.reference`` names — nothing from a
   local state directory, so a fresh machine (or pod) continues where the lineage stands;
3. the data sources → the next ``sampling.prompts_per_round`` prompts no round of the lineage drew
   (none left: the run says so and stops cleanly, unless ``continuing.recycle``);
4. the policy in, evaluated on the eval set (the baseline of this round), then one round
   (``flows/rounds.alignment_round``: its MLflow run nested under this run, tagged with the lineage id
   and the parent version; a crashed run resumes it as a pipeline's rounds resume);
5. the cursor logged with the run, the new version registered with the ``lineage.*`` tags, gated
   against production on the same eval set (``tasks/runs.promote_task``): pass → staging → production,
   fail → it stays a candidate and production keeps its cursor.

``run_key`` makes a night idempotent: a deployment run's key is its deployment and scheduled time, so
re-running a finished night returns the version it registered without training again — and gates that
version first when the night crashed between registering and gating it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from pydantic import BaseModel

from alignflow.components.config import PipelineConfig, warn_unused_settings
from alignflow.components.evaluation.policy import promotion_metric
from alignflow.components.platform import registry
from alignflow.components.platform.lineage_cursor import TAG_ID, TAG_PARENT, TAG_ROUND, lineage_tags
from alignflow.components.stages.results import Checkpoint
from alignflow.flows.rounds import RoundLayout, alignment_round
from alignflow.tasks.continuing import (
    lineage_guard,
    lineage_state_task,
    record_cursor_task,
    resolve_version_task,
    slice_prompts_task,
)
from alignflow.tasks.runs import log_metrics_task, pipeline_params, promote_task, register_task, tracked_flow
from alignflow.tasks.stages import evaluate_task, prepare_data_task


class ContinueResult(BaseModel):
    """What a continuing run did: ``status`` is ``trained`` (a round ran and was gated),
    ``exhausted`` (no unused prompts: nothing trained), ``already_done`` (this ``run_key`` had
    registered and gated ``version`` before) or ``gated`` (this ``run_key`` had registered ``version``
    and crashed before its gate: the gate ran now, nothing trained)."""

    status: str
    message: str
    lineage_id: str
    registered_model: str
    policy_in: str  # models:/name/N the round started from
    round_index: int
    version: str | None = None
    promotion: dict[str, Any] = {}
    metric: str = ""
    baseline_metric: float | None = None  # the policy in's, on the eval set
    metric_value: float | None = None  # the new version's
    prompt_ids: list[str] = []
    parent_run_id: str | None = None
    tracking_uri: str = ""
    workspace: str = ""
    pid: int = 0


def scheduled_run_key() -> str | None:
    """A deployment run's key (its deployment and scheduled start), None for an ad-hoc run."""
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    if run is None or run.deployment_id is None or run.expected_start_time is None:
        return None
    return f"{run.deployment_id}@{run.expected_start_time.isoformat()}"


@flow(name="continue_rounds", log_prints=True)
def continue_rounds(config: dict[str, Any], run_key: str | None = None) -> ContinueResult:
    """``config``: ``model.source`` names the policy in (``models:/<registered model>@production``).
    ``run_key``: default the scheduled run's key (see the module docstring).

    Raises:
        LineageBusyError: another run holds the lineage's lock.
        ValueError / LookupError: ``model.source`` names no registered lineage version.
    """
    cfg = PipelineConfig.model_validate(config)
    warn_unused_settings(cfg)
    named = registry.parse_model_uri(cfg.model.source)
    if named is None:
        raise ValueError(f"model.source='{cfg.model.source}': a continuing round starts from a registered version, "
                         f"e.g. model.source=models:/{cfg.tracking.registered_model}@production")
    config = cfg.model_dump(mode="json")
    run_key = run_key or scheduled_run_key()
    key = cfg.content_hash()
    workspace = Path(cfg.workspace).resolve() / key
    checkpoints = Path(cfg.state_dir).resolve() / "checkpoints" / key
    metric = promotion_metric(cfg)
    context = FlowRunContext.get()
    holder = f"prefect flow run {context.flow_run.id}" if context is not None and context.flow_run else ""
    with lineage_guard(cfg, named[0], holder):
        state = lineage_state_task(config, run_key)
        summary = ContinueResult(status="started", message="", lineage_id=state.lineage_id,
                                 registered_model=state.registered_model, policy_in=state.policy_uri,
                                 round_index=state.round_index, metric=metric, workspace=str(workspace),
                                 pid=os.getpid())
        if state.finished_version is not None and state.finished_gated:
            verdict = "promoted" if state.finished_passed else "blocked by its gate"
            print(f"run {run_key} already registered {state.registered_model} v{state.finished_version} "
                  f"({verdict}): nothing to train")
            return summary.model_copy(update=dict(
                status="already_done", version=state.finished_version,
                round_index=state.finished_round or state.round_index,
                policy_in=state.finished_parent or state.policy_uri,
                message=f"{run_key} already registered v{state.finished_version} ({verdict})"))
        if state.finished_version is not None:  # registered, then crashed before its gate: gate it now
            version = state.finished_version
            with tracked_flow(cfg, workspace, f"{state.lineage_id}-gate-v{version}",
                              {"alignflow.kind": "continue", "config_hash": key, TAG_ID: state.lineage_id,
                               TAG_ROUND: state.finished_round or state.round_index, "promotion_metric": metric,
                               "lineage.run_key": run_key or ""},
                              params=pipeline_params(cfg)) as ctx:
                decision = promote_task(ctx, config, version, str(workspace / "promotion"))
            verdict = "promoted" if decision["passed"] else "blocked (stays candidate)"
            print(f"run {run_key} had registered v{version} but not gated it: {verdict}")
            return summary.model_copy(update=dict(
                status="gated", version=version, promotion=decision, parent_run_id=ctx.parent_run_id,
                round_index=state.finished_round or state.round_index,
                tracking_uri=ctx.tracking_uri,
                message=f"{run_key} had registered v{version} ungated; now {verdict}: {decision['reason']}"))
        r = state.round_index
        tags = {"alignflow.kind": "continue", "config_hash": key, "model_source": cfg.model.source,
                "promotion_metric": metric, TAG_ID: state.lineage_id, TAG_ROUND: r, TAG_PARENT: state.policy_uri,
                "reference": state.reference_uri, **({"lineage.run_key": run_key} if run_key else {})}
        with tracked_flow(cfg, workspace, f"{state.lineage_id}-round-{r}", tags,
                          params=pipeline_params(cfg)) as ctx:
            round_dir = workspace / f"round-{r}"
            policy = resolve_version_task(config, state.policy_uri)
            # the data stage reads the policy's tokenizer (token-length profiles): from its local copy
            data = prepare_data_task({**config, "model": {**config["model"], "source": policy.path}},
                                     str(workspace / "data"), ctx)
            sliced = slice_prompts_task(config, data.role("prompts"), state.consumed, str(round_dir / "prompts"), ctx)
            if sliced.prompts is None:
                print(f"lineage {state.lineage_id}: {sliced.exhausted}")
                log_metrics_task(ctx, ctx.parent_run_id, {}, tags={"continue.status": "exhausted"})
                return summary.model_copy(update=dict(status="exhausted", message=str(sliced.exhausted),
                                                      parent_run_id=ctx.parent_run_id, tracking_uri=ctx.tracking_uri))
            reference = (policy if state.reference_uri == state.policy_uri
                         else resolve_version_task(config, state.reference_uri))
            baseline = evaluate_task(config, policy, None, data.eval, str(workspace / f"eval-v{state.policy_version}"),
                                     cfg.seed, "policy-in", ctx)
            log_metrics_task(ctx, ctx.parent_run_id, {f"policy_in/{k.removeprefix('eval/')}": v
                                                      for k, v in baseline.metrics.items()}, step=r - 1)
            layout = RoundLayout(round_dir=str(round_dir), checkpoint_dir=str(checkpoints / f"round-{r}"),
                                 ref_cache_dir=str(Path(cfg.state_dir).resolve() / "reference-logps"))
            named_models: dict[str, Checkpoint] = {"policy_in": policy}
            done = alignment_round(config, r, cfg.rounds.kind, policy, reference,
                                   data.model_copy(update={"prompts": sliced.prompts}), layout, ctx, named_models,
                                   run_tags={TAG_ID: state.lineage_id, TAG_PARENT: state.policy_uri})
            log_metrics_task(ctx, ctx.parent_run_id, {k: v for k, v in done.metrics.items()
                                                      if k.startswith("eval/")}, step=r)
            cursor = state.cursor.extended(r, sliced.ids, state.consumed)
            record_cursor_task(ctx, cursor, str(round_dir / "lineage"))
            final = done.metrics
            version = register_task(
                ctx, config, done.policy, metric, done.metric(metric), data.eval.md5, state.base_model,
                baseline.metrics[metric], step=r,
                extra_tags={**lineage_tags(cursor, state.policy_uri, state.reference_uri, state.sft_uri, run_key,
                                           len(sliced.ids)),
                            "eval_kl": final.get("eval/kl_to_reference", float("nan")),
                            "eval_mean_length": final["eval/mean_length"],
                            **({"eval_accuracy": final["eval/accuracy"]} if "eval/accuracy" in final else {})})
            decision = promote_task(ctx, config, version, str(workspace / "promotion"))
            log_metrics_task(ctx, ctx.parent_run_id, {"lineage/round": r, "lineage/metric": done.metric(metric),
                                                      "lineage/policy_in_metric": baseline.metrics[metric]}, step=r)
    verdict = "promoted" if decision["passed"] else "blocked (stays candidate)"
    return summary.model_copy(update=dict(
        status="trained", version=version, promotion=decision, prompt_ids=sliced.ids,
        baseline_metric=baseline.metrics[metric], metric_value=done.metric(metric),
        message=f"round {r}: v{version} {verdict}: {decision['reason']}", parent_run_id=ctx.parent_run_id,
        tracking_uri=ctx.tracking_uri))
