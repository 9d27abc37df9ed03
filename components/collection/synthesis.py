"""UltraFeedback-style preference synthesis (ALGORITHMS.md §9), with tool-assisted judging.

A pool of policies (checkpoints × temperatures) answers each prompt; the judge rates every
completion on each aspect (instruction-following, truthfulness, honesty, helpfulness by default)
with a rationale — its tools (equation checker, verifier) run first, as in the judge loop; the
ratings are binarized: chosen = highest mean rating, ties dropped, rejected by
``rejected_strategy`` (random_lower | lowest | all_pairs). Optionally the judge model explains why
chosen beats rejected, and the rows become rationale-enriched DPO rows (§4).

This module holds the rules (the pool, binarization); the stages that run them are in
``stages/synthesis.py``.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from alignflow.components.config import PipelineConfig


class PoolMember(BaseModel):
    """One policy of the synthesis pool, resolved (a pydantic record: it is a task input)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str  # a resolved checkpoint directory
    label: str  # what the config called it: current, sft, base, or the path
    temperature: float


@dataclass(frozen=True)
class Rated:
    """One completion with its per-aspect ratings (None: that judgment was malformed)."""

    index: int
    text: str
    model: str
    temperature: float
    ratings: dict[str, int | None]

    @property
    def mean(self) -> float | None:
        scores = [s for s in self.ratings.values() if s is not None]
        return statistics.fmean(scores) if scores else None

    def rated_mean(self) -> float:
        """``mean`` of a completion known to have a well-formed rating (every one ``binarize`` pairs)."""
        mean = self.mean
        assert mean is not None, f"completion {self.index} has no well-formed rating"
        return mean


Strategy = Literal["random_lower", "lowest", "all_pairs"]


def binarize(completions: list[Rated], strategy: Strategy, rng: random.Random, max_pairs: int
             ) -> list[tuple[Rated, Rated]]:
    """(chosen, rejected) pairs of one prompt's completions. A completion with no well-formed rating
    takes no part; equal means never make a pair; chosen is a highest-mean completion (the first of
    equals, deterministic) except under all_pairs, which takes every strictly ordered pair, largest
    margin first, up to ``max_pairs``."""
    rated = [c for c in completions if c.mean is not None]
    if len(rated) < 2:
        return []
    if strategy == "all_pairs":
        ordered = [(a, b) for a in rated for b in rated if a.rated_mean() > b.rated_mean()]
        ordered.sort(key=lambda ab: (-(ab[0].rated_mean() - ab[1].rated_mean()), ab[0].index, ab[1].index))
        return ordered[:max_pairs]
    best = max(rated, key=lambda c: (c.rated_mean(), -c.index))
    lower = [c for c in rated if c.rated_mean() < best.rated_mean()]
    if not lower:
        return []  # every completion ties with the best
    if strategy == "lowest":
        return [(best, min(lower, key=lambda c: (c.rated_mean(), c.index)))]
    return [(best, rng.choice(lower))]


def resolve_pool(config: PipelineConfig, named: dict[str, str]) -> list[PoolMember]:
    """``synthesis.policies`` → checkpoint directories: names from ``named`` (current, sft, base),
    anything else must be a checkpoint directory."""
    pool = []
    for member in config.synthesis.policies:
        path = named.get(member.checkpoint, member.checkpoint)
        if not Path(path).is_dir():
            known = ", ".join(sorted(named)) or "none here"
            raise ValueError(f"synthesis.policies: '{member.checkpoint}' is neither a known name ({known}) "
                             f"nor a checkpoint directory")
        pool.append(PoolMember(checkpoint=str(path), label=member.checkpoint, temperature=member.temperature))
    return pool
