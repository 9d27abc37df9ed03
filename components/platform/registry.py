"""Registered models and their aliases.

A version (``stages/register.py`` makes one) enters as ``candidate``; a passing gate
(``evaluation/gates.py``) moves it on to ``staging`` and, when the target and its ceiling allow,
``production``; the production version it replaces keeps ``previous-production``, which ``rollback``
restores. MLflow stages are deprecated, so aliases carry
the state. Every call goes through the ``Tracker`` (redacted writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignflow.components.platform.atomic import atomic_directory, write_json_atomic
from alignflow.components.platform.mlflow_models import download_logged_model, logged_model_id_of
from alignflow.components.platform.model_uri import parse_model_uri, parse_version_uri  # noqa: F401 (re-exported)
from alignflow.components.platform.tracking import RegistryLookupError, Tracker
from alignflow.components.platform.versioning import weights_sha256

ALIASES = ("candidate", "staging", "production")
FAMILY_DESCRIPTION = "Models produced by alignflow (a policy family or a judge family)."
HF_DIR = "artifacts/hf_model"  # a logged-model version's Hugging Face directory, inside the version
REWARD_DIR = "artifacts/reward_model"  # a reward model version's alignflow directory (stages/register.py)
METADATA_FILE = "alignflow_model.json"  # modeling.checkpoints.METADATA_FILE


def version_for_alias(tracker: Tracker, name: str, alias: str) -> Any | None:
    """The version ``alias`` points at, or None."""
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
    """The checkpoint of ``name@alias`` (or of ``version``) as a local directory ``load_checkpoint`` reads,
    downloaded once per version into ``cache_root``; returns (directory, "name/vN"). Complete or absent:
    the download lands in a temp dir first.

    A logged-model version is downloaded whole (its Hugging Face directory is ``artifacts/hf_model``); an
    adapter version's base is downloaded too — the registry version its metadata names by ``models:/``
    URI, its weights checked against the recorded sha256 — and the local copy's metadata points at it
    (``base_path``: this machine's cache, never the registry's). A version registered from run artifacts
    (before logged models) is read as it was.

    Raises:
        LookupError: no version has that alias.
        ValueError: an adapter's base in the registry is not the content it was trained on.
    """
    import mlflow.artifacts

    version = version or version_for_alias(tracker, name, alias)
    if version is None:
        what = f"no version {alias}" if alias.isdigit() else f"no version with alias '{alias}'"
        raise RegistryLookupError(f"registered model '{name}' has {what} at {tracker.tracking_uri}: register one "
                                  f"first (the pipeline registers policies and reward models, `alignflow judge-loop` "
                                  f"judges), or name a checkpoint directory instead")
    target = Path(cache_root) / f"{name}-v{version.version}"
    model_id = logged_model_id_of(version)
    if not target.exists():
        with atomic_directory(target) as tmp:
            if model_id is None:
                mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(tmp),
                                                    tracking_uri=tracker.tracking_uri)
            else:
                download_logged_model(tracker, model_id, tmp)
                _resolve_base(tracker, tmp / HF_DIR, cache_root)
    if model_id is None:
        return target / "model", f"{name}/v{version.version}"
    # a reward model's version holds alignflow's reward-model directory instead of a Hugging Face one
    found = target / REWARD_DIR if (target / REWARD_DIR).is_dir() else target / HF_DIR
    return found, f"{name}/v{version.version}"


def _resolve_base(tracker: Tracker, hf_dir: Path, cache_root: Path) -> None:
    """An adapter's base, downloaded by its models:/ URI and hash-checked; its local path recorded in the
    downloaded copy's metadata (what ``load_checkpoint`` follows)."""
    if not (hf_dir / "adapter_config.json").exists():
        return
    meta_file = hf_dir / METADATA_FILE
    meta = json.loads(meta_file.read_text())
    base = meta.get("base") or {}
    named = parse_version_uri(base.get("uri", ""))
    if named is None:
        raise ValueError(f"{hf_dir}: an adapter whose {METADATA_FILE} names no base models:/<name>/<version>")
    base_dir, _ = download_version(tracker, named[0], "", cache_root, tracker.get_model_version(*named))
    got = weights_sha256(base_dir)
    if base.get("sha256") and got != base["sha256"]:
        raise ValueError(f"base {base['uri']}: its weights hash to {got}, the adapter was trained on {base['sha256']}")
    write_json_atomic(meta_file, {**meta, "base_path": str(base_dir.resolve())})


def rollback(tracker: Tracker, name: str) -> tuple[str, str]:
    """production → the previous production version; returns (from, to). The version rolled back
    from is tagged, so the registry shows why it left production.

    Raises:
        LookupError: there is no production or no previous-production version.
    """
    current = version_for_alias(tracker, name, "production")
    previous = version_for_alias(tracker, name, "previous-production")
    if current is None or previous is None:
        missing = "production" if current is None else "previous-production"
        raise RegistryLookupError(f"'{name}' has no {missing} version: nothing to roll back to")
    tracker.set_alias(name, "production", str(previous.version))
    tracker.delete_alias(name, "previous-production")
    tracker.set_version_tags(name, str(current.version), {"rolled_back_to": str(previous.version)})
    return str(current.version), str(previous.version)
