"""A lineage of registered policy versions and its prompt cursor, kept in the MLflow registry.

A *lineage* is the chain of policy versions that started with one ``alignflow run`` (its first version)
and grew one round per ``alignflow continue`` (or scheduled ``nightly-round``). Every version of it
carries tags (``LINEAGE_TAGS``): the lineage id, the last round its policy went through, the version it
was trained from, the reference it was trained against and the lineage's SFT model (both as
``models:/<name>/<version>`` URIs), and where its *prompt cursor* is: a JSON artifact
(``lineage/prompt_cursor.json``) of the run that registered it, listing by content hash (``prompt_id``,
data/formats.py) the prompts each round drew. Two machines that share the registry therefore agree on
which prompts a lineage has used; nothing of it lives in a local state directory.

Two notions per cursor: ``trained`` — the prompts in the ancestry of this version's policy (what a
version that stays in production has "trained on"); ``consumed`` — every prompt any round of the lineage
drew as known when this version was made, including rounds whose version failed its gate. The next round
takes prompts no version of the lineage has consumed, so a night whose gate failed is retried from
production with *fresh* prompts, and production's own ``trained`` set is untouched by the failure.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from alignflow.components.platform.atomic import write_text_atomic
from alignflow.components.platform.tracking import RegistryLookupError, Tracker

CURSOR_ARTIFACT_DIR = "lineage"
CURSOR_FILE = "prompt_cursor.json"
TAG_ID = "lineage.id"
TAG_ROUND = "lineage.round"
TAG_PARENT = "lineage.parent_version"
TAG_REFERENCE = "lineage.reference"
TAG_SFT = "lineage.sft"
TAG_CURSOR = "lineage.cursor"
TAG_RUN_KEY = "lineage.run_key"
TAG_DRAWN = "lineage.prompts_drawn"
LINEAGE_TAGS = (TAG_ID, TAG_ROUND, TAG_PARENT, TAG_REFERENCE, TAG_SFT, TAG_CURSOR, TAG_RUN_KEY, TAG_DRAWN)

T = TypeVar("T")


class PromptsExhausted(RuntimeError):
    """Every prompt of the prompt sources was already used by this lineage (and recycling is off)."""


class PromptCursor(BaseModel):
    """What a lineage version knows about the prompts its lineage used (by ``prompt_id``)."""

    model_config = ConfigDict(extra="forbid")

    lineage_id: str
    registered_model: str
    round: int  # the last round this version's policy went through
    rounds: dict[str, list[str]] = {}  # round index → the prompt ids that round drew (this version's ancestry)
    trained: list[str] = []  # prompt ids in this version's ancestry, sorted
    consumed: list[str] = []  # prompt ids any round of the lineage drew (as known then), sorted

    def extended(self, round_index: int, drawn: Sequence[str], consumed_elsewhere: Iterable[str]) -> PromptCursor:
        """The cursor of a version trained from this one in round ``round_index`` on ``drawn``;
        ``consumed_elsewhere``: what other versions of the lineage consumed (failed rounds)."""
        return PromptCursor(lineage_id=self.lineage_id, registered_model=self.registered_model, round=round_index,
                            rounds={**self.rounds, str(round_index): list(drawn)},
                            trained=sorted(set(self.trained) | set(drawn)),
                            consumed=sorted(set(self.consumed) | set(consumed_elsewhere) | set(drawn)))


def version_uri(name: str, version: Any) -> str:
    """``models:/<name>/<version>``: how lineage names a version (never a local path)."""
    return f"models:/{name}/{version}"


def lineage_tags(cursor: PromptCursor, parent: str | None, reference: str | None, sft: str | None,
                 run_key: str | None, drawn: int) -> dict[str, Any]:
    """The version tags of a lineage version (the cursor itself is the registering run's artifact)."""
    return {TAG_ID: cursor.lineage_id, TAG_ROUND: cursor.round, TAG_PARENT: parent or "none",
            TAG_REFERENCE: reference or "none", TAG_SFT: sft or "none",
            TAG_CURSOR: f"{CURSOR_ARTIFACT_DIR}/{CURSOR_FILE}", TAG_RUN_KEY: run_key or "none", TAG_DRAWN: drawn}


def write_cursor(directory: Path, cursor: PromptCursor) -> Path:
    """``<directory>/prompt_cursor.json``, written atomically; returns the file."""
    return write_text_atomic(Path(directory) / CURSOR_FILE, cursor.model_dump_json(indent=1))


def read_cursor(tracker: Tracker, version: Any) -> PromptCursor:
    """The prompt cursor of a registered lineage version (downloaded from its run's artifacts).

    Raises:
        LookupError: the version is not part of a lineage (no ``lineage.*`` tags: registered before
            scheduled rounds existed, or by hand) or its run has no cursor artifact.
    """
    tags = dict(version.tags or {})
    name = f"{version.name} v{version.version}"
    if TAG_ID not in tags or TAG_CURSOR not in tags:
        raise RegistryLookupError(f"{name} is not part of a lineage (no {TAG_ID} / {TAG_CURSOR} tags): start "
                                  f"one with `alignflow run` (its registered version carries the lineage's prompt "
                                  f"cursor)")
    if not version.run_id:
        raise RegistryLookupError(f"{name}: no run produced it, so it has no prompt cursor")
    with tempfile.TemporaryDirectory(prefix="alignflow-cursor-") as tmp:
        try:
            local = tracker.download_run_artifact(version.run_id, tags[TAG_CURSOR], Path(tmp))
        except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            raise RegistryLookupError(f"{name}: its run {version.run_id} has no {tags[TAG_CURSOR]} artifact "
                                      f"({exc})") from exc
        return PromptCursor.model_validate(json.loads(Path(local).read_text()))


def lineage_versions(tracker: Tracker, name: str, lineage_id: str) -> list[Any]:
    """Every version of ``name`` in lineage ``lineage_id``, oldest first."""
    found = tracker.search_model_versions(f"name = '{name}'")
    return sorted((v for v in found if (v.tags or {}).get(TAG_ID) == lineage_id), key=lambda v: int(v.version))


def next_round_index(versions: Iterable[Any]) -> int:
    """One past the highest round any version of the lineage went through (a failed round keeps its number)."""
    rounds = [int((v.tags or {}).get(TAG_ROUND, 0)) for v in versions]
    return max(rounds, default=0) + 1


def consumed_counts(cursors: Iterable[PromptCursor]) -> Counter[str]:
    """How many rounds of the lineage drew each prompt, over every version's cursor (a prompt a
    round drew counts once, however many later cursors repeat that round)."""
    rounds: dict[str, set[str]] = {}
    for cursor in cursors:
        for index, ids in cursor.rounds.items():
            rounds.setdefault(index, set()).update(ids)
    counts: Counter[str] = Counter()
    for ids in rounds.values():
        counts.update(ids)
    for cursor in cursors:  # consumed ids without a round record (a cursor written by hand) count once
        for prompt in cursor.consumed:
            counts.setdefault(prompt, 1)
    return counts


def select_prompts(rows: Sequence[T], ids: Sequence[str], counts: Counter[str], per_round: int,
                   recycle: bool, source: str = "data.sources.prompts") -> list[T]:
    """The next round's prompts: the first ``per_round`` rows (in source order) that no round of the
    lineage drew — rows appended to a source since are picked up in their turn. With ``recycle``, when
    fewer than ``per_round`` unused rows remain, the least-used rows fill the slice (ties in source
    order). ``ids[i]`` is ``rows[i]``'s prompt id.

    Raises:
        PromptsExhausted: no unused row is left and ``recycle`` is off (names the source key).
    """
    if len(rows) != len(ids):
        raise ValueError(f"select_prompts: {len(rows)} rows but {len(ids)} ids")
    fresh = [i for i, prompt in enumerate(ids) if counts.get(prompt, 0) == 0]
    if not recycle:
        if not fresh:
            raise PromptsExhausted(
                f"{source}: all {len(rows)} prompts were already used by this lineage; append new rows to a "
                f"source, or set continuing.recycle=true to train on used prompts again")
        return [rows[i] for i in fresh[:per_round]]
    if not rows:
        raise PromptsExhausted(f"{source}: no prompts")
    order = sorted(range(len(rows)), key=lambda i: (counts.get(ids[i], 0), i))
    chosen = sorted(order[:per_round])
    return [rows[i] for i in chosen]
