"""Stage ``data``: each role's rows from the configured sources (``data.sources``), normalized to
the canonical ``Example`` rows, validated, mixed by fraction, the eval split held out by a stable
hash when no eval source is given, contamination checked, profiled, written as JSONL."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from alignflow.components.config import PipelineConfig
from alignflow.components.data.arithmetic import arithmetic_source
from alignflow.components.data.constraints import CONSTRAINTS_COLUMN, constraints_source, parse_constraints
from alignflow.components.data.formats import DataFormatError, Example
from alignflow.components.data.io import write_rows
from alignflow.components.data.sources import BuiltinGenerator, contamination, load_role, profile, split_heldout
from alignflow.components.modeling.checkpoints import load_tokenizer, materialize_base
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, DataResult

logger = logging.getLogger("alignflow.stages.data")
ROLES = ("sft", "prompts", "preferences", "eval")
TRAINING_ROLES = ("sft", "prompts", "preferences")


def builtin_sources(config: PipelineConfig, role: str) -> dict[str, BuiltinGenerator]:
    """``builtin:<name>`` generators for one role; a source entry's ``params`` override the task's
    config section (``data.arithmetic``, ``data.constraints``)."""
    arithmetic_defaults = config.data.arithmetic.model_dump()
    constraints_defaults = config.data.constraints.model_dump()

    def arithmetic(seed: int, **params: Any) -> list[dict[str, Any]]:
        return arithmetic_source(role, seed, **{**arithmetic_defaults, **params})

    def constraints(seed: int, **params: Any) -> list[dict[str, Any]]:
        return constraints_source(role, seed, **{**constraints_defaults, **params})

    return {"arithmetic": arithmetic, "constraints": constraints}


def contamination_message(found: list[str]) -> str:
    """What to tell a user whose eval prompts (ids ``found``) also occur in a training role."""
    return (f"{len(found)} eval prompt(s) also occur in a training role (first: {', '.join(found[:5])}); "
            f"they measure memory, not generalization")


def check_constraints_columns(config: PipelineConfig, roles: dict[str, list[Example]]) -> None:
    """Every row's constraints column that a ``constraints`` scorer or labeller will read parses: a bad kind
    or param fails here, naming the file, row and field — not after SFT, in the first round's scoring.

    Raises:
        DataFormatError: the first row whose column ``parse_constraints`` refuses.
    """
    specs = [*config.scoring.scorers, config.reward.labeller]
    columns = sorted({s.gold_column or CONSTRAINTS_COLUMN for s in specs if s is not None and s.type == "constraints"})
    for role, rows in roles.items():
        for example in rows:
            for column in columns:
                value = example.columns.get(column)
                if value is None:
                    continue
                try:
                    parse_constraints(value)
                except ValueError as exc:
                    file, _, row = example.origin.rpartition(":row ")
                    raise DataFormatError(file or example.origin, f"{exc} ({role} role, read by the constraints "
                                          f"scorer)", row=int(row) if row.isdigit() else None, field=column) from None


def load_roles(config: PipelineConfig) -> tuple[dict[str, list[Example]], list[str]]:
    """Every role's validated rows, and the contaminated prompt ids (in a training role and in eval).

    Raises:
        DataFormatError: a bad row (file, row, field) or source (config key); a constraints column a
        constraints scorer cannot read; no eval rows at all; or contamination with ``data.fail_on_contamination``.
    """
    d = config.data
    cache_dir = Path(config.state_dir) / "datasets"
    roles = {role: load_role(getattr(d.sources, role), role, d.seed, builtin_sources(config, role),
                             cache_dir=cache_dir) for role in ROLES}
    if not d.sources.eval:
        if not roles["prompts"]:
            raise DataFormatError("data.sources.eval", "no eval source and no prompts to hold an eval split out "
                                  "from: set data.sources.eval or data.sources.prompts")
        roles["prompts"], roles["eval"] = split_heldout(roles["prompts"], d.eval_fraction, d.seed)
        if not roles["eval"]:
            raise DataFormatError("data.eval_fraction", f"holding out {d.eval_fraction} of "
                                  f"{len(roles['prompts'])} prompts left no eval rows: raise it or give an eval source")
    check_constraints_columns(config, roles)
    found = contamination([e for role in TRAINING_ROLES for e in roles[role]], roles["eval"])
    if found:
        message = contamination_message(found)
        if d.fail_on_contamination:
            raise DataFormatError("data.sources", message + ": remove them, or set data.fail_on_contamination: false")
        logger.warning(message)
    return roles, found


def prepare_data(config: PipelineConfig, out_dir: Path) -> DataResult:
    """Write ``<role>.jsonl`` (Example rows) for every role that has rows, with a token profile of
    each (rows, mean prompt/response tokens, truncation rate at ``preference.max_length``)."""
    start = time.perf_counter()
    roles, contaminated = load_roles(config)
    tokenizer = load_tokenizer(materialize_base(config.model, config.seed, config.state_dir))
    files: dict[str, Artifact | None] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for role, rows in roles.items():
        if not rows:
            files[role] = None
            continue
        files[role] = Artifact.of(write_rows(Path(out_dir) / f"{role}.jsonl", rows))
        profiles[role] = profile(rows, tokenizer, config.preference.max_length,
                                 prompt_template=config.data.prompt_template, system_prompt=config.data.system_prompt)
    eval_file = files["eval"]
    assert eval_file is not None  # load_roles guarantees eval rows
    return DataResult(sft=files["sft"], prompts=files["prompts"], preferences=files["preferences"], eval=eval_file,
                      counts={role: len(rows) for role, rows in roles.items()}, profiles=profiles,
                      contaminated=contaminated, seconds=elapsed(start))
