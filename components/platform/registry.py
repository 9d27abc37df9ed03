"""Registered models and their aliases.

A version enters as ``candidate``; a passing gate (``evaluation/gates.py``) moves it on to ``staging``
and, when the target and its ceiling allow, ``production``; the production version it replaces keeps
``previous-production``, which ``rollback`` restores. MLflow stages are deprecated, so aliases carry
the state. Every call goes through the ``Tracker`` (redacted writes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignflow.components.platform.atomic import atomic_directory
from alignflow.components.platform.tracking import Tracker

ALIASES = ("candidate", "staging", "production")
FAMILY_DESCRIPTION = "Models produced by alignflow (a policy family or a judge family)."


def register_checkpoint(tracker: Tracker, name: str, run_id: str, checkpoint_dir: Path, tags: dict[str, Any]) -> str:
    """Log the checkpoint under the run and register it as ``candidate``; returns the new version number."""
    tracker.ensure_registered_model(name, FAMILY_DESCRIPTION)
    tracker.log_artifacts(run_id, checkpoint_dir, "model")
    version = tracker.create_model_version(name, f"{tracker.artifact_uri(run_id)}/model", run_id, tags)
    tracker.set_alias(name, "candidate", version)
    return version


def version_for_alias(tracker: Tracker, name: str, alias: str) -> Any | None:
    return tracker.version_for_alias(name, alias)


def promote_version(tracker: Tracker, name: str, version: str, target_alias: str,
                    ceiling: str = "production") -> list[str]:
    """staging (and production, when both ``target_alias`` and ``ceiling`` are production) → ``version``.
    The production version it replaces — never the version itself — keeps ``previous-production``.
    Returns the aliases set."""
    moved = ["staging"] + (["production"] if target_alias == "production" and ceiling == "production" else [])
    for alias in moved:
        current = version_for_alias(tracker, name, alias)
        if alias == "production" and current is not None and str(current.version) != str(version):
            tracker.set_alias(name, "previous-production", str(current.version))
        tracker.set_alias(name, alias, str(version))
    return moved


def apply_promotion(tracker: Tracker, name: str, report: Any, target_alias: str) -> list[str]:
    """Move aliases for a passing gate report (``GateReport``), no further than its ceiling; returns
    the aliases set (empty when blocked)."""
    if not report.passed:
        return []
    return promote_version(tracker, name, report.candidate_version, target_alias, report.ceiling)


def download_version(tracker: Tracker, name: str, alias: str, cache_root: Path, version: Any | None = None
                     ) -> tuple[Path, str]:
    """The checkpoint of ``name@alias`` (or of ``version``), downloaded once per version into
    ``cache_root``; returns (directory, "name/vN"). Complete or absent: the download lands in a
    temp dir first.

    Raises:
        LookupError: no version has that alias.
    """
    import mlflow.artifacts

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
    """``models:/name@alias`` → (name, alias); anything else (a directory) → None.

    Raises:
        ValueError: a ``models:/`` URI without a name and an alias.
    """
    if not uri.startswith("models:/"):
        return None
    body = uri.removeprefix("models:/")
    if "@" not in body or not all(body.split("@", 1)):
        raise ValueError(f"model URI '{uri}': expected models:/<registered model>@<alias>")
    name, alias = body.split("@", 1)
    return name, alias


def rollback(tracker: Tracker, name: str) -> tuple[str, str]:
    """production → the previous production version; returns (from, to). The version rolled back
    from is tagged, so the registry shows why it left production.

    Raises:
        LookupError: there is no production or no previous-production version.
    """
    current = version_for_alias(tracker, name, "production")
    previous = version_for_alias(tracker, name, "previous-production")
    if current is None or previous is None:
        raise LookupError(f"'{name}' has no {'production' if current is None else 'previous-production'} version: "
                          f"nothing to roll back to")
    tracker.set_alias(name, "production", str(previous.version))
    tracker.delete_alias(name, "previous-production")
    tracker.set_version_tags(name, str(current.version), {"rolled_back_to": str(previous.version)})
    return str(current.version), str(previous.version)
