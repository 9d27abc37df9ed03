"""Registered models, aliases and the promotion gate.

A version enters as ``candidate``; only a passing gate moves it on to ``staging`` and (when
the target is production) ``production``. MLflow stages are deprecated, so aliases carry the
state. The gate compares like with like: the same eval set (by DVC hash) or it refuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from components.promotion import GateResult, evaluate_gates, gate_table
from components.tracking import Tracker

ALIASES = ("candidate", "staging", "production")


@dataclass
class GateDecision:
    passed: bool
    reason: str
    candidate_version: str
    candidate_accuracy: float
    baseline_accuracy: float
    baseline_source: str  # "production vN" or "pipeline baseline"
    min_delta: float
    eval_dataset: str
    # the promotion section's other gates as the pipeline applies them
    other_gates: list[GateResult] = field(default_factory=list)
    # how far a passing candidate may move: "production", or "staging" when production needs `alignflow promote`
    ceiling: str = "production"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_markdown(self) -> str:
        verdict = "PASSED" if self.passed else "BLOCKED"
        return (f"# Promotion gate: {verdict}\n\n{self.reason}\n\n"
                f"| quantity | value |\n|---|---|\n"
                f"| candidate version | {self.candidate_version} |\n"
                f"| candidate eval accuracy | {self.candidate_accuracy:.4f} |\n"
                f"| compared with | {self.baseline_source} |\n"
                f"| its eval accuracy | {self.baseline_accuracy:.4f} |\n"
                f"| required delta | {self.min_delta:+.4f} |\n"
                f"| eval dataset (DVC md5) | {self.eval_dataset} |\n"
                f"| furthest alias | {self.ceiling} |\n"
                + (f"\n{gate_table(self.other_gates)}" if self.other_gates else ""))


def ensure_registered_model(tracker: Tracker, name: str) -> None:
    try:
        tracker.client.get_registered_model(name)
    except MlflowException:
        tracker.client.create_registered_model(name, description="Models produced by alignflow (a policy family or a judge family).")


def register_checkpoint(tracker: Tracker, name: str, run_id: str, checkpoint_dir: Path, tags: dict[str, Any]) -> str:
    """Log the checkpoint under the run and register it; returns the new version number."""
    ensure_registered_model(tracker, name)
    tracker.log_artifacts(run_id, checkpoint_dir, "model")
    source = f"{tracker.client.get_run(run_id).info.artifact_uri}/model"
    version = tracker.client.create_model_version(name, source=source, run_id=run_id,
                                                  tags={k: str(v) for k, v in tags.items()})
    tracker.client.set_registered_model_alias(name, "candidate", version.version)
    return str(version.version)


def version_for_alias(tracker: Tracker, name: str, alias: str) -> Any | None:
    try:
        return tracker.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def decide_gate(candidate_version: str, candidate_accuracy: float, eval_dataset: str, production: Any | None,
                pipeline_baseline: float, min_delta: float) -> GateDecision:
    """Pass when candidate ≥ production + min_delta (or ≥ the pipeline's pre-round baseline + min_delta
    when nothing is in production yet). A production model scored on another eval set is not comparable."""
    if production is not None:
        prod_tags = production.tags or {}
        prod_dataset = prod_tags.get("eval_dataset", "")
        baseline_source = f"production v{production.version}"
        if prod_dataset != eval_dataset:
            return GateDecision(False, f"not comparable: production was evaluated on eval set '{prod_dataset}', "
                                       f"the candidate on '{eval_dataset}'", candidate_version, candidate_accuracy,
                                float("nan"), baseline_source, min_delta, eval_dataset)
        baseline = float(prod_tags.get("eval_accuracy", "nan"))
    else:
        baseline, baseline_source = pipeline_baseline, "pipeline baseline (no production model yet)"
    passed = candidate_accuracy >= baseline + min_delta
    relation = "≥" if passed else "<"
    reason = (f"candidate accuracy {candidate_accuracy:.4f} {relation} {baseline_source} accuracy "
              f"{baseline:.4f} + min_delta {min_delta:+.4f}")
    return GateDecision(passed, reason, candidate_version, candidate_accuracy, baseline, baseline_source, min_delta,
                        eval_dataset)


def decide_pipeline_promotion(candidate_version: str, candidate_tags: dict[str, str], production: Any | None,
                              pipeline_baseline: float, limits: Any) -> GateDecision:
    """The pipeline's own gate: accuracy (``decide_gate``) and the promotion section's KL budget and
    length drift, exactly as `alignflow promote` evaluates them. The judge win-rate and human approval
    only `alignflow promote` can give: when either is configured the pipeline stops at staging."""
    decision = decide_gate(candidate_version, float(candidate_tags["eval_accuracy"]), candidate_tags["eval_dataset"],
                           production, pipeline_baseline, limits.min_delta)
    report = evaluate_gates("", candidate_version, candidate_tags, production.version if production else None,
                            (production.tags or {}) if production else None, limits)
    others = [g for g in report.gates if g.gate in ("kl_budget", "length_drift")]
    failed = [f"{g.gate} failed ({g.detail}: {'n/a' if g.value is None else f'{g.value:.4f}'} vs limit {g.limit})"
              for g in others if g.status == "failed"]
    ceiling, why = limits.target_alias, ""
    if ceiling == "production" and (limits.require_approval or limits.min_judge_win_rate is not None):
        ceiling = "staging"
        why = ("; production needs `alignflow promote` (promotion.require_approval or min_judge_win_rate is set: "
               "a human or the judge decides there)")
    return replace(decision, passed=decision.passed and not failed,
                   reason="; ".join([decision.reason, *failed]) + why, ceiling=ceiling,
                   other_gates=others)


def apply_promotion(tracker: Tracker, name: str, decision: GateDecision, target_alias: str) -> list[str]:
    """Move aliases for a passing decision, no further than its ceiling; returns the aliases set
    (empty when blocked)."""
    if not decision.passed:
        return []
    moved = ["staging"] + (["production"] if target_alias == "production" and decision.ceiling == "production" else [])
    for alias in moved:
        current = version_for_alias(tracker, name, alias)
        if current is not None and alias == "production":
            tracker.client.set_registered_model_alias(name, "previous-production", current.version)
        tracker.client.set_registered_model_alias(name, alias, decision.candidate_version)
    return moved


def download_version(tracker: Tracker, name: str, alias: str, cache_root: Path, version: Any | None = None
                     ) -> tuple[Path, str]:
    """The checkpoint of ``name@alias`` (or of ``version``), downloaded once per version into
    ``cache_root``; returns (directory, "name/vN"). Complete or absent: the download lands in a
    temp dir first."""
    import mlflow.artifacts

    from components.atomic import atomic_directory

    version = version or version_for_alias(tracker, name, alias)
    if version is None:
        raise LookupError(f"no version of registered model '{name}' has alias '{alias}' at {tracker.tracking_uri}: "
                          f"run `alignflow judge-loop` first (it registers and gates the judge), or point "
                          f"synthesis.judge at a checkpoint directory")
    target = Path(cache_root) / f"{name}-v{version.version}"
    if not target.exists():
        with atomic_directory(target) as tmp:
            mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp),
                                                tracking_uri=tracker.tracking_uri)
    return target / "model", f"{name}/v{version.version}"


def parse_model_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name@alias`` → (name, alias); anything else (a directory) → None."""
    if not uri.startswith("models:/"):
        return None
    body = uri.removeprefix("models:/")
    if "@" not in body or not all(body.split("@", 1)):
        raise ValueError(f"model URI '{uri}': expected models:/<registered model>@<alias>")
    name, alias = body.split("@", 1)
    return name, alias


def promote_version(tracker: Tracker, name: str, version: str, target_alias: str) -> list[str]:
    """staging (and production) → ``version``; the production version it replaces keeps the
    ``previous-production`` alias, which is what ``rollback`` restores."""
    moved = ["staging"] + (["production"] if target_alias == "production" else [])
    for alias in moved:
        current = version_for_alias(tracker, name, alias)
        if alias == "production" and current is not None and str(current.version) != str(version):
            tracker.client.set_registered_model_alias(name, "previous-production", current.version)
        tracker.client.set_registered_model_alias(name, alias, version)
    return moved


def rollback(tracker: Tracker, name: str) -> tuple[str, str]:
    """production → the previous production version; returns (from, to). The version rolled back
    from is tagged, so the registry shows why it left production."""
    current = version_for_alias(tracker, name, "production")
    previous = version_for_alias(tracker, name, "previous-production")
    if current is None or previous is None:
        raise LookupError(f"'{name}' has no {'production' if current is None else 'previous-production'} version: "
                          f"nothing to roll back to")
    tracker.client.set_registered_model_alias(name, "production", previous.version)
    tracker.client.delete_registered_model_alias(name, "previous-production")
    tracker.client.set_model_version_tag(name, current.version, "rolled_back_to", str(previous.version))
    return str(current.version), str(previous.version)
