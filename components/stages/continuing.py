"""Stage pieces of a continuing round (flow ``continue_rounds``): where the lineage stands in the registry,
the next slice of prompts, the models it names resolved to local checkpoints, and the lineage record a
pipeline's first version starts (components/platform/lineage_cursor.py holds the cursor itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import write_rows
from alignflow.components.modeling.checkpoints import read_metadata
from alignflow.components.platform import registry
from alignflow.components.platform.lineage_cursor import (
    TAG_PARENT,
    TAG_REFERENCE,
    TAG_ROUND,
    TAG_RUN_KEY,
    TAG_SFT,
    PromptCursor,
    PromptsExhausted,
    consumed_counts,
    lineage_versions,
    next_round_index,
    read_cursor,
    select_prompts,
    version_uri,
)
from alignflow.components.platform.tracking import RegistryLookupError, Tracker
from alignflow.components.stages.common import read_examples, round_prompts
from alignflow.components.stages.results import Artifact, Checkpoint

# rounds.kind values whose rounds draw from the prompts role (round 0, offline, trains on preferences)
PROMPT_KINDS = ("on_policy", "mcts", "synthesized")


class LineageState(BaseModel):
    """Where a lineage stands when a continuing round starts, all read from the registry."""

    model_config = ConfigDict(frozen=True)

    registered_model: str
    source: str  # what model.source named (models:/name@alias or models:/name/N)
    policy_version: str  # the version it resolved to, pinned for the whole run
    lineage_id: str
    round_index: int  # the round this run trains (one past the lineage's highest)
    cursor: PromptCursor  # the policy's cursor
    consumed: dict[str, int]  # prompt id → how many rounds of the lineage drew it (every version)
    reference_uri: str  # models:/name/N of the reference (preference.reference, resolved)
    sft_uri: str  # models:/… of the lineage's SFT model ("none" when it has none)
    base_model: str  # the policy's base_model tag (the model the lineage started from)
    finished_version: str | None = None  # a version this run_key already registered (nothing to train)
    # whether that version was gated (its gate_passed tag): a run that crashed between registering and
    # gating left it ungated, and the re-run gates it
    finished_gated: bool = False
    finished_round: int | None = None  # that version's lineage.round
    finished_parent: str | None = None  # the models:/ URI that version was trained from
    finished_passed: bool | None = None  # its gate's verdict, when gated

    @property
    def policy_uri(self) -> str:
        return version_uri(self.registered_model, self.policy_version)


class PromptSlice(BaseModel):
    """The prompts a continuing round trains on (a file holding exactly them), or why there are none."""

    prompts: Artifact | None
    ids: list[str]
    available: int  # rows of the prompts role
    unused: int  # of them, rows no round of the lineage drew
    exhausted: str | None = None  # the message when none are left


def _registry_version(tracker: Tracker, uri: str, key: str) -> Any:
    """The version a ``models:/name@alias`` or ``models:/name/N`` URI names.

    Raises:
        ValueError: ``uri`` is not a ``models:/`` URI.
        LookupError: the model, alias or version does not exist (the message says which, and what does).
    """
    named = registry.parse_model_uri(uri)  # a pinned version comes back as (name, "N")
    if named is None:
        raise ValueError(f"{key}: '{uri}' is not a registered model; a continuing round starts from one, e.g. "
                         f"models:/alignflow-policy@production (run `alignflow run` once to register it)")
    name, ref = named
    found = registry.version_for_alias(tracker, name, ref)
    if found is None:
        versions = tracker.search_model_versions(f"name = '{name}'")
        what = f"version {ref}" if ref.isdigit() else f"alias '{ref}'"
        if not versions:
            raise RegistryLookupError(f"{key}: no registered model '{name}' at {tracker.tracking_uri}; run "
                                      f"`alignflow run` once (it registers and gates the lineage's first version)")
        aliases = sorted({f"@{a}" for v in versions for a in (getattr(v, "aliases", None) or [])})
        numbers = sorted(int(v.version) for v in versions)
        raise RegistryLookupError(f"{key}: '{name}' has no {what} at {tracker.tracking_uri} (it has versions "
                                  f"{numbers[0]}–{numbers[-1]}{', aliases ' + ', '.join(aliases) if aliases else ''})")
    return found


def lineage_state(tracker: Tracker, config: PipelineConfig, run_key: str | None = None) -> LineageState:
    """Where the lineage of ``model.source``'s version stands: its cursor, the prompts every version of the
    lineage consumed, the next round number, and the reference ``preference.reference`` names.

    Raises:
        ValueError: ``model.source`` is not a ``models:/`` URI.
        LookupError: the alias names no version, or the version is not part of a lineage, or the
            reference it asks for is not in the registry.
    """
    version = _registry_version(tracker, config.model.source, "model.source")
    name = str(version.name)
    cursor = read_cursor(tracker, version)
    versions = lineage_versions(tracker, name, cursor.lineage_id)
    cursors = [cursor] + [read_cursor(tracker, v) for v in versions if str(v.version) != str(version.version)]
    tags = dict(version.tags or {})
    done = [v for v in versions if run_key and (v.tags or {}).get(TAG_RUN_KEY) == run_key]
    sft = tags.get(TAG_SFT, "none")
    choice = config.preference.reference
    if choice == "sft":
        reference = sft if sft != "none" else tags.get(TAG_REFERENCE, "none")
        if reference == "none":
            raise RegistryLookupError(f"preference.reference=sft: {name} v{version.version} records no SFT model "
                                      f"of its lineage ({TAG_SFT}); use preference.reference=previous_round")
    elif choice == "production":
        production = registry.version_for_alias(tracker, name, "production")
        reference = version_uri(name, (production or version).version)
    else:
        reference = version_uri(name, version.version)
    return LineageState(registered_model=name, source=config.model.source, policy_version=str(version.version),
                        lineage_id=cursor.lineage_id, round_index=next_round_index(versions + [version]),
                        cursor=cursor, consumed=dict(consumed_counts(cursors)), reference_uri=reference,
                        sft_uri=sft, base_model=tags.get("base_model", cursor.lineage_id),
                        finished_version=str(done[-1].version) if done else None,
                        finished_gated=bool(done) and "gate_passed" in (done[-1].tags or {}),
                        finished_round=int((done[-1].tags or {}).get(TAG_ROUND, 0)) if done else None,
                        finished_parent=(done[-1].tags or {}).get(TAG_PARENT) if done else None,
                        finished_passed=(done[-1].tags or {}).get("gate_passed") == "True" if done else None)


def slice_prompts(config: PipelineConfig, prompts: Artifact, consumed: dict[str, int], out_dir: Path) -> PromptSlice:
    """``<out_dir>/prompts.jsonl``: the next ``sampling.prompts_per_round`` prompts of the prompts role that
    the lineage has not drawn (or the least-drawn, with ``continuing.recycle``). When none is left the
    slice says so (``exhausted``) and no file is written."""
    from collections import Counter

    rows = read_examples(prompts)
    ids = [r.id for r in rows]
    counts = Counter(consumed)
    unused = sum(1 for i in ids if counts.get(i, 0) == 0)
    try:
        chosen = select_prompts(rows, ids, counts, config.sampling.prompts_per_round, config.continuing.recycle)
    except PromptsExhausted as exc:
        return PromptSlice(prompts=None, ids=[], available=len(rows), unused=unused, exhausted=str(exc))
    path = write_rows(Path(out_dir) / "prompts.jsonl", chosen)
    return PromptSlice(prompts=Artifact.of(path), ids=[r.id for r in chosen], available=len(rows), unused=unused)


def resolve_version(tracker: Tracker, uri: str, cache_root: Path) -> Checkpoint:
    """A ``models:/name/N`` (or ``@alias``) version as a local checkpoint, downloaded once per version
    under ``cache_root`` (``registry.download_version``)."""
    version = _registry_version(tracker, uri, uri)
    path, label = registry.download_version(tracker, str(version.name), "", cache_root, version)
    return Checkpoint(path=str(path), model_id=str(read_metadata(path).get("model_id", label)))


def pipeline_cursor(config: PipelineConfig, prompts: Artifact | None, round_indices: list[int],
                    lineage_id: str, registered_model: str) -> PromptCursor:
    """The cursor of a pipeline's version: the prompts its rounds ``round_indices`` drew from the prompts
    role (``round_prompts``, as the rounds did)."""
    rounds: dict[str, list[str]] = {}
    if prompts is not None and config.rounds.kind in PROMPT_KINDS:
        rows = read_examples(prompts)
        for index in round_indices:
            rounds[str(index)] = [r.id for r in round_prompts(rows, index, config.sampling.prompts_per_round)]
    drawn = sorted({i for ids in rounds.values() for i in ids})
    return PromptCursor(lineage_id=lineage_id, registered_model=registered_model,
                        round=max(round_indices, default=0), rounds=rounds, trained=drawn, consumed=drawn)
