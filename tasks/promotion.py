"""Tasks of the ``promote`` flow: read the versions, measure the judge win rate, publish the gate
report where a user looks (MLflow artifacts + version tags, Prefect markdown + table artifacts),
move aliases. Never cached: each acts on the registry's current state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from alignflow.components.data.formats import Example
from alignflow.components.data.io import read_rows
from alignflow.components.evaluation import gates
from alignflow.components.evaluation.gates import GateReport
from alignflow.components.platform import registry
from alignflow.components.platform.atomic import write_json_atomic, write_text_atomic
from alignflow.components.platform.redaction import redact_json, redact_text
from alignflow.components.platform.tracking import RegistryLookupError, Tracker
from alignflow.components.stages.register import write_model_card
from alignflow.tasks.context import config_of

REGISTRY: dict[str, Any] = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)


def publish_gate_report(tracker: Tracker, report: GateReport, run_id: str, out_dir: Path,
                        aliases_set: list[str] | None = None) -> dict[str, str]:
    """The one place a gate report goes out: ``gate_report.md`` / ``.json`` written under ``out_dir`` and
    logged to ``run_id``'s ``promotion/`` artifacts, the verdict per gate as version tags, the version's
    model card (README.md and description) regenerated with it, and a Prefect markdown + table artifact.
    Every copy is redacted (a gate's detail may quote a judge URL or a path with credentials). Returns the
    two files' paths."""
    summary = redact_json({**report.as_dict(), "aliases_set": aliases_set})
    markdown = redact_text(report.as_markdown())
    md = write_text_atomic(Path(out_dir) / "gate_report.md", markdown)
    js = write_json_atomic(Path(out_dir) / "gate_report.json", summary)
    tracker.log_artifact(run_id, md, "promotion")
    tracker.log_artifact(run_id, js, "promotion")
    name, version = report.registered_model, report.candidate_version
    tracker.set_version_tags(name, version, {"gate_passed": str(report.passed),
                                             **{f"gate.{g.gate}": g.status for g in report.gates}})
    write_model_card(tracker, name, version, summary)  # the version's card now carries this report
    key = f"gate-{name}-v{version}".lower().replace("_", "-")
    create_markdown_artifact(markdown, key=key, description=f"promotion gates of {name} v{version}")
    create_table_artifact(redact_json(report.table()), key=f"{key}-table", description="gate, status, value, limit")
    return {"markdown": str(md), "json": str(js)}


def _version_info(version: Any | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"version": str(version.version), "run_id": version.run_id, "tags": dict(version.tags or {})}


@task(name="read-versions", **REGISTRY)
def read_versions_task(tracking_uri: str, experiment: str, name: str, version: str | None) -> dict[str, Any]:
    """The candidate (``version``, default the ``candidate`` alias) and the production version it is
    compared with (``previous-production`` when the candidate already is production).

    Raises:
        LookupError: there is no candidate.
    """
    tracker = Tracker(tracking_uri, experiment)
    candidate = (tracker.get_model_version(name, version) if version
                 else registry.version_for_alias(tracker, name, "candidate"))
    if candidate is None:
        raise RegistryLookupError(f"'{name}' has no candidate version to promote; run a pipeline first or pass "
                                  f"--version")
    production = registry.version_for_alias(tracker, name, "production")
    if production is not None and str(production.version) == str(candidate.version):
        production = registry.version_for_alias(tracker, name, "previous-production")
    return {"candidate": _version_info(candidate), "production": _version_info(production)}


@task(name="judge-win-rate", cache_policy=NO_CACHE, retries=0)
def judge_win_rate_task(config: dict[str, Any], tracking_uri: str, experiment: str, name: str, candidate: str,
                        production: str, eval_path: str) -> dict[str, Any]:
    cfg = config_of(config)
    tracker = Tracker(tracking_uri, experiment)
    cache = Path(cfg.state_dir).resolve() / "registry"
    dirs = [registry.download_version(tracker, name, "", cache, tracker.get_model_version(name, v))[0]
            for v in (candidate, production)]
    spec = cfg.promotion.judge
    parsed = registry.parse_model_uri(spec)
    judge_dir = Path(spec) if parsed is None else registry.download_version(tracker, *parsed, cache)[0]
    examples = read_rows(Path(eval_path), Example)[: cfg.promotion.judge_prompts]
    rate = gates.judge_win_rate(dirs[0], dirs[1], judge_dir, examples, cfg.eval.max_new_tokens, cfg.eval.batch_size,
                                cfg.data.prompt_template, cfg.data.system_prompt)
    return {"win_rate": rate, "judge": spec, "n_prompts": len(examples)}


@task(name="gate-report", **REGISTRY)
def gate_report_task(tracking_uri: str, experiment: str, report: GateReport, run_id: str,
                     out_dir: str) -> dict[str, str]:
    return publish_gate_report(Tracker(tracking_uri, experiment), report, run_id, Path(out_dir))


@task(name="move-aliases", **REGISTRY)
def move_aliases_task(tracking_uri: str, experiment: str, name: str, version: str, target_alias: str,
                      approver: str | None) -> list[str]:
    tracker = Tracker(tracking_uri, experiment)
    moved = registry.promote_version(tracker, name, version, target_alias)
    if approver:
        tracker.set_version_tags(name, version, {"approved_by": approver})
    return moved
