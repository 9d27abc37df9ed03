"""Registered models, aliases and the promotion gate.

A version enters as ``candidate``; only a passing gate moves it on to ``staging`` and (when
the target is production) ``production``. MLflow stages are deprecated, so aliases carry the
state. The gate compares like with like: the same eval set (by DVC hash) or it refuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from alignflow.components.evaluation.gates import GateResult, accuracy_reference, evaluate_gates, gate_table
from alignflow.components.platform.tracking import Tracker

ALIASES = ("candidate", "staging", "production")


@dataclass
class GateDecision:
    passed: bool
    reason: str
    candidate_version: str
    candidate_accuracy: float
    baseline_accuracy: float  # what the candidate was compared with (nan: nothing to compare with)
    baseline_source: str  # "production vN", "its pre-round baseline …" or "nothing …"
    min_delta: float
    eval_dataset: str
    # every gate applied, the accuracy delta first (the promote flow's GateResult rows)
    gates: list[GateResult] = field(default_factory=list)
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
                f"| furthest alias | {self.ceiling} |\n\n"
                f"{gate_table(self.gates)}")


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


def decide_promotion(candidate_version: str, candidate_tags: dict[str, str], production: Any | None,
                     limits: Any, policy_gates: bool = True) -> GateDecision:
    """The gate a pipeline or judge loop applies to the version it just registered: the accuracy rule
    of `alignflow promote` (``promotion.accuracy_gate``) and, for a policy (``policy_gates``), the
    promotion section's KL budget and length drift. The judge win-rate and human approval only
    `alignflow promote` can give: when either is configured the pipeline stops at staging. A judge
    is gated on its held-out accuracy alone."""
    prod_version = str(production.version) if production is not None else None
    prod_tags = (production.tags or {}) if production is not None else None
    report = evaluate_gates("", candidate_version, candidate_tags, prod_version, prod_tags, limits)
    accuracy = report.gates[0]
    gates = [accuracy] + ([g for g in report.gates if g.gate in ("kl_budget", "length_drift")] if policy_gates else [])
    failed = [f"{g.gate} failed ({g.detail}: {'n/a' if g.value is None else f'{g.value:.4f}'} vs limit {g.limit})"
              for g in gates[1:] if g.status == "failed"]
    ceiling, why = limits.target_alias, ""
    if policy_gates and ceiling == "production" and (limits.require_approval or limits.min_judge_win_rate is not None):
        ceiling = "staging"
        why = ("; production needs `alignflow promote` (promotion.require_approval or min_judge_win_rate is set: "
               "a human or the judge decides there)")
    reference, source = accuracy_reference(candidate_tags, prod_version, prod_tags)
    verdict = "passed" if accuracy.status == "passed" else "FAILED"
    reason = f"accuracy gate {verdict}: {accuracy.detail} (min_delta {limits.min_delta:+.4f})"
    return GateDecision(passed=not any(g.status == "failed" for g in gates), reason="; ".join([reason, *failed]) + why,
                        candidate_version=candidate_version,
                        candidate_accuracy=float(candidate_tags.get("eval_accuracy", "nan")),
                        baseline_accuracy=float("nan") if reference is None else reference, baseline_source=source,
                        min_delta=limits.min_delta, eval_dataset=candidate_tags.get("eval_dataset", ""),
                        gates=gates, ceiling=ceiling)


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

    from alignflow.components.platform.atomic import atomic_directory

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
