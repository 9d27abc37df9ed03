"""A model the config names — a checkpoint directory or ``models:/name@alias`` in the MLflow registry —
resolved to a local checkpoint (registry versions are downloaded once per version)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from alignflow.components.modeling.checkpoints import ModelSourceError, read_metadata
from alignflow.components.platform import registry
from alignflow.components.platform.tracking import Tracker
from alignflow.components.stages.results import Checkpoint, ResolvedModel

if TYPE_CHECKING:
    from alignflow.components.config import PipelineConfig


def resolve_model(spec: str, key: str, tracker: Tracker | None, cache_root: Path) -> ResolvedModel:
    """``key``: the config key that holds ``spec``, for the error message.

    Raises:
        ModelSourceError: ``spec`` is neither a directory nor a ``models:/`` URI (not retried: a retry
            repeats it).
        LookupError: the registry has no version with that alias.
    """
    named = registry.parse_model_uri(spec)
    if named is None:
        if not Path(spec).is_dir():
            hint = f" (a registered model is written models:/{spec})" if "@" in spec and "/" not in spec else ""
            raise ModelSourceError(f"{key}: '{spec}' is not a checkpoint directory or models:/name@alias{hint}")
        path = Path(spec).resolve()
        return ResolvedModel(checkpoint=Checkpoint(path=str(path), model_id=read_metadata(path).get(
            "model_id", f"local:{spec}")), source=spec)
    if tracker is None:
        raise ValueError(f"{key}: '{spec}' names a registered model, but no MLflow registry was given to resolve it")
    name, alias = named
    found = registry.version_for_alias(tracker, name, alias)
    path, version = registry.download_version(tracker, name, alias, cache_root, found)
    return ResolvedModel(checkpoint=Checkpoint(path=str(path), model_id=read_metadata(path).get("model_id", version)),
                         source=f"{spec} = {version}", version=None if found is None else str(found.version))


def resolve_alias(tracker: Tracker, name: str, alias: str, cache_root: Path) -> ResolvedModel | None:
    """The version of registered model ``name`` with ``alias`` (downloaded once per version), or None
    when no version has it (or the model is not registered yet)."""
    if registry.version_for_alias(tracker, name, alias) is None:
        return None
    return resolve_model(f"models:/{name}@{alias}", f"{name}@{alias}", tracker, cache_root)


def model_resolver(config: PipelineConfig) -> Callable[[str, str], tuple[Path, str]]:
    """What scorers use to find a model the config names: a directory as it is, ``models:/name@alias``
    through the configured MLflow registry (downloaded once per version under the state directory)."""
    from alignflow.components.platform.tracking import resolve_tracking_uri

    cache = Path(config.state_dir).resolve() / "registry"

    def resolve(spec: str, key: str) -> tuple[Path, str]:
        if registry.parse_model_uri(spec) is None:
            resolved = resolve_model(spec, key, None, cache)
        else:
            tracker = Tracker(resolve_tracking_uri(config.tracking.tracking_uri, config.state_dir),
                              config.tracking.experiment)
            resolved = resolve_model(spec, key, tracker, cache)
        return resolved.checkpoint.dir, resolved.checkpoint.model_id

    return resolve
