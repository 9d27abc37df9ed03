"""promote: gate a registered policy version and move it staging → production.

Composition only. Gates (components/promotion.py): accuracy delta vs production, KL budget,
length drift, judge win-rate when configured. The report goes to MLflow (the candidate's run and
version tags) and Prefect (markdown + table artifacts). With ``promotion.require_approval`` the
flow waits for a human: ``suspend_flow_run`` when it runs from a deployment (the worker's process
exits and the run resumes later), ``pause_flow_run`` in-process otherwise — either way with a
typed ``Approval`` input, answered in the Prefect UI or with ``alignflow approve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput

from alignflow.components.config import PipelineConfig
from alignflow.components.evaluation.gates import evaluate_gates
from alignflow.components.platform.tracking import resolve_tracking_uri
from alignflow.tasks.promotion import gate_report_task, judge_win_rate_task, move_aliases_task, read_versions_task


class Approval(RunInput):
    approved: bool
    reviewer: str
    comment: str = ""


def _wait_for_approval(timeout: int) -> Approval:
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None  # the engine sets it for every flow run
    if flow_run is not None and flow_run.deployment_id is not None:
        return suspend_flow_run(wait_for_input=Approval, timeout=timeout)
    return pause_flow_run(wait_for_input=Approval, timeout=timeout)


@flow(name="promote", log_prints=True)
def promote(config: dict[str, Any], version: str | None = None, eval_path: str | None = None) -> dict[str, Any]:
    """``version``: default the ``candidate`` alias. ``eval_path``: held-out problems for the
    judge win-rate gate (the pipeline's eval.jsonl)."""
    cfg = PipelineConfig.model_validate(config)
    p = cfg.promotion
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir)
    exp, name = cfg.tracking.experiment, cfg.tracking.registered_model
    versions = read_versions_task(uri, exp, name, version)
    candidate, production = versions["candidate"], versions["production"]
    win = None
    if p.min_judge_win_rate is not None and production is not None:
        if eval_path is None:
            raise ValueError("promotion.min_judge_win_rate is set: pass eval_path (held-out problems) to compare on")
        win = judge_win_rate_task(config, uri, exp, name, candidate["version"], production["version"],
                                  eval_path)["win_rate"]
    report = evaluate_gates(name, candidate["version"], candidate["tags"],
                            production and production["version"], production and production["tags"], p, win)
    summary = {"registered_model": name, "candidate_version": candidate["version"],
               "candidate_run_id": candidate["run_id"], "production_version": production and production["version"],
               "passed": report.passed, "gates": report.table()}
    files = gate_report_task(uri, exp, report, candidate["run_id"],
                             str(Path(cfg.workspace).resolve() / "promotion" / f"{name}-v{candidate['version']}"))
    print(report.as_markdown())
    approver, moved, decision = None, [], "blocked"
    if report.passed:
        decision = "promoted"
        if p.require_approval:
            answer = _wait_for_approval(p.approval_timeout_s)
            approver = f"{answer.reviewer}: {answer.comment}".rstrip(": ")
            if not answer.approved:
                decision = f"rejected by {answer.reviewer}"
        if decision == "promoted":
            moved = move_aliases_task(uri, exp, name, candidate["version"], p.target_alias, approver)
    return {**summary, "decision": decision, "aliases_set": moved, "approved_by": approver, "report": files}
