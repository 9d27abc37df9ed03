"""A model the config names — a checkpoint directory or ``models:/name@alias`` in the MLflow registry —
resolved to a local checkpoint (registry versions are downloaded once per version)."""

from __future__ import annotations

from pathlib import Path

from alignflow.components.modeling.checkpoints import read_metadata
from alignflow.components.platform import registry
from alignflow.components.platform.tracking import Tracker
from alignflow.components.stages.results import Checkpoint, ResolvedModel


def resolve_model(spec: str, key: str, tracker: Tracker, cache_root: Path) -> ResolvedModel:
    """``key``: the config key that holds ``spec``, for the error message.

    Raises:
        FileNotFoundError: ``spec`` is neither a directory nor a ``models:/`` URI.
        LookupError: the registry has no version with that alias.
    """
    named = registry.parse_model_uri(spec)
    if named is None:
        if not Path(spec).is_dir():
            raise FileNotFoundError(f"{key}: '{spec}' is not a checkpoint directory or models:/name@alias")
        path = Path(spec).resolve()
        return ResolvedModel(checkpoint=Checkpoint(path=str(path), model_id=read_metadata(path).get(
            "model_id", f"local:{spec}")), source=spec)
    path, version = registry.download_version(tracker, *named, cache_root)
    return ResolvedModel(checkpoint=Checkpoint(path=str(path), model_id=read_metadata(path).get("model_id", version)),
                         source=f"{spec} = {version}")
