"""Tasks of a continuing round (flow ``continue_rounds``) and of the lineage record a pipeline's version
starts: read the lineage from the registry, slice the prompts, resolve registered models, record the
prompt cursor with the version; and the lineage lock around a continuing run. Registry reads and writes
are never cached: each acts on the registry's current state."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.components.config import PipelineConfig
from alignflow.components.modeling.checkpoints import is_adapter
from alignflow.components.platform.lineage_cursor import (
    CURSOR_ARTIFACT_DIR,
    PromptCursor,
    lineage_tags,
    version_uri,
    write_cursor,
)
from alignflow.components.platform.lineage_lock import lineage_lock
from alignflow.components.platform.tracking import Tracker, resolve_tracking_uri
from alignflow.components.stages import continuing
from alignflow.components.stages.continuing import LineageState, PromptSlice
from alignflow.components.stages.register import Packaging, register_checkpoint
from alignflow.components.stages.results import Artifact, Checkpoint
from alignflow.tasks.context import TrackingContext, config_of

REGISTRY: dict[str, Any] = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)


def registry_tracker(cfg: PipelineConfig) -> Tracker:
    """The configured MLflow tracking server and registry."""
    return Tracker(resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.state_dir), cfg.tracking.experiment)


@contextmanager
def lineage_guard(cfg: PipelineConfig, registered_model: str, holder: str = "") -> Iterator[str]:
    """Hold the lineage's lock in the registry for the body (``continuing.lock_wait_s``,
    ``lock_heartbeat_s``, ``lock_stale_after_s``); ``holder`` names this run in the lock's tags.

    Raises:
        LineageBusyError: another run holds it.
    """
    c = cfg.continuing
    with lineage_lock(registry_tracker(cfg), registered_model, holder_run=holder, wait_s=c.lock_wait_s,
                      stale_after_s=c.lock_stale_after_s, heartbeat_s=c.lock_heartbeat_s) as token:
        yield token


@task(name="lineage-state", **REGISTRY)
def lineage_state_task(config: dict[str, Any], run_key: str | None) -> LineageState:
    """Where the lineage of ``model.source`` stands (``stages/continuing.lineage_state``)."""
    cfg = config_of(config)
    return continuing.lineage_state(registry_tracker(cfg), cfg, run_key)


@task(name="slice-prompts", cache_policy=NO_CACHE)
def slice_prompts_task(config: dict[str, Any], prompts: Artifact, consumed: dict[str, int], out_dir: str,
                       ctx: TrackingContext) -> PromptSlice:
    """The round's prompts: the next unused slice of the prompts role (its counts logged on the run)."""
    sliced = continuing.slice_prompts(config_of(config), prompts, consumed, Path(out_dir))
    ctx.tracker().log_metrics(ctx.parent_run_id, {"lineage/prompts_available": sliced.available,
                                                  "lineage/prompts_unused": sliced.unused,
                                                  "lineage/prompts_drawn": len(sliced.ids)})
    return sliced


@task(name="resolve-registered-model", **REGISTRY)
def resolve_version_task(config: dict[str, Any], uri: str) -> Checkpoint:
    """A registered version as a local checkpoint (downloaded once per version under the state directory)."""
    cfg = config_of(config)
    return continuing.resolve_version(registry_tracker(cfg), uri, Path(cfg.state_dir).resolve() / "registry")


@task(name="record-cursor", **REGISTRY)
def record_cursor_task(ctx: TrackingContext, cursor: PromptCursor, out_dir: str) -> str:
    """Write the cursor and log it as the run's ``lineage/prompt_cursor.json`` (what the version's
    ``lineage.cursor`` tag points at); returns the local file."""
    path = write_cursor(Path(out_dir), cursor)
    ctx.tracker().log_artifact(ctx.parent_run_id, path, CURSOR_ARTIFACT_DIR)
    return str(path)


def _sft_uri(tracker: Tracker, cfg: PipelineConfig, sft: Checkpoint, version: str, run_id: str) -> str:
    """The lineage's SFT model in the registry: the base's version when SFT did not run, else the SFT
    checkpoint as a version of ``<registered model>-sft`` (registered once per SFT model id; a LoRA SFT
    as an adapter over the registered base)."""
    name = cfg.tracking.registered_model
    tags = dict(tracker.get_model_version(name, version).tags or {})
    if sft.model_id == tags.get("base_model") and tags.get("base_model_uri"):
        return tags["base_model_uri"]
    family = f"{name}-sft"
    found = [v for v in tracker.search_model_versions(f"name = '{family}'")
             if (v.tags or {}).get("model_id") == sft.model_id]
    if found:
        return version_uri(family, min(int(v.version) for v in found))
    # a LoRA SFT is stored as its adapter over the registered base (MBs, not a second copy of the weights),
    # and in float32 whatever tracking.model_dtype says: it is a reference, its log-probs must be exact
    packaging = Packaging("adapter" if is_adapter(sft.dir) else "merged", "float32",
                          cfg.tracking.base_registered_model, cfg.eval.max_new_tokens)
    sft_version = register_checkpoint(tracker, family, run_id, sft.dir, {"model_id": sft.model_id, "role": "sft"},
                                      packaging)
    return version_uri(family, sft_version)


@task(name="start-lineage", **REGISTRY)
def start_lineage_task(ctx: TrackingContext, config: dict[str, Any], version: str, prompts: Artifact | None,
                       round_indices: list[int], sft: Checkpoint) -> dict[str, Any]:
    """Make a pipeline's registered ``version`` the first of a lineage: its prompt cursor (the prompts its
    rounds drew) logged with its run, the lineage's SFT model registered, the ``lineage.*`` version tags
    set. Returns the tags."""
    cfg = config_of(config)
    tracker = ctx.tracker()
    name = cfg.tracking.registered_model
    cursor = continuing.pipeline_cursor(cfg, prompts, round_indices, f"lineage-{cfg.content_hash()}", name)
    with tempfile.TemporaryDirectory(prefix="alignflow-lineage-") as tmp:
        path = write_cursor(Path(tmp), cursor)
        tracker.log_artifact(ctx.parent_run_id, path, CURSOR_ARTIFACT_DIR)
    sft_uri = _sft_uri(tracker, cfg, sft, version, ctx.parent_run_id)
    reference = sft_uri if cfg.preference.reference == "sft" else None  # previous_round: never registered
    tags = lineage_tags(cursor, None, reference, sft_uri, None, len(cursor.trained))
    tracker.set_version_tags(name, version, tags)
    tracker.set_tags(ctx.parent_run_id, {"lineage.id": cursor.lineage_id})  # `alignflow compare --lineage`
    return tags
