"""Turn scored on-policy samples into preference pairs (ALGORITHMS.md §8).

Strategies (``pairs.strategy``), over one prompt's samples that have a score:
- ``best_vs_worst``: the highest- vs the lowest-scored sample;
- ``best_vs_random``: the highest-scored sample vs a random lower-scored one;
- ``all_pairs``: every (higher, lower) combination, largest margin first;
- ``min_margin``: every (higher, lower) combination whose margin is at least ``pairs.min_margin``;
- ``correct_vs_incorrect``: each passing sample (the primary scorer's pass rule) with a failing
  one, round-robin — for binary scorers.
Ties never pair; a pair below ``min_margin`` is dropped (every strategy); duplicated texts are never
paired with themselves; ``max_pairs_per_prompt`` caps each prompt (a seeded random subset).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any, get_args

from alignflow.components.config import PairStrategy
from alignflow.components.data.schemas import CompletionRow, PairRow

STRATEGIES: tuple[str, ...] = get_args(PairStrategy)


def _score(row: CompletionRow) -> float:
    assert row.score is not None  # build_pairs keeps scored rows only
    return row.score


def _ordered(a: CompletionRow, b: CompletionRow) -> tuple[CompletionRow, CompletionRow]:
    return (a, b) if _score(a) > _score(b) else (b, a)


def candidate_pairs(samples: list[CompletionRow], strategy: str, rng: random.Random,
                    min_margin: float = 0.0) -> list[tuple[CompletionRow, CompletionRow]]:
    """(chosen, rejected) candidates of one prompt's scored samples, before the per-prompt cap.

    Raises:
        ValueError: an unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy '{strategy}'; expected one of {STRATEGIES}")
    if strategy == "correct_vs_incorrect":
        good = [s for s in samples if s.passed]
        bad = [s for s in samples if s.passed is False]
        count = max(len(good), len(bad)) if good and bad else 0
        pairs = [(good[i % len(good)], bad[i % len(bad)]) for i in range(count)]
    else:
        ranked = sorted(samples, key=lambda r: (-_score(r), r.sample_index))
        if strategy == "best_vs_worst":
            pairs = [(ranked[0], ranked[-1])] if ranked else []
        elif strategy == "best_vs_random":
            lower = [r for r in ranked if _score(r) < _score(ranked[0])] if ranked else []
            pairs = [(ranked[0], rng.choice(lower))] if lower else []
        else:  # all_pairs, min_margin
            pairs = sorted((_ordered(a, b) for a, b in itertools.combinations(ranked, 2)),
                           key=lambda p: (-(_score(p[0]) - _score(p[1])), p[0].sample_index, p[1].sample_index))
    return [(c, r) for c, r in pairs
            if _score(c) > _score(r) and _score(c) - _score(r) >= min_margin]


def build_pairs(scored: list[CompletionRow], strategy: str, max_pairs_per_prompt: int, seed: int,
                lineage: dict[str, Any], min_margin: float = 0.0) -> list[PairRow]:
    """Pairs of every prompt's scored samples; each pair keeps the prompt the policy saw, both
    scores (and every scorer's), and ``lineage`` plus which samples it came from."""
    by_prompt: dict[str, list[CompletionRow]] = defaultdict(list)
    for row in scored:
        if row.score is not None:
            by_prompt[row.prompt_id].append(row)
    rng = random.Random(seed)
    pairs: list[PairRow] = []
    for prompt_id in sorted(by_prompt):
        candidates = [(c, r) for c, r in candidate_pairs(by_prompt[prompt_id], strategy, rng, min_margin)
                      if c.completion.strip() != r.completion.strip()]
        if len(candidates) > max_pairs_per_prompt:
            candidates = rng.sample(candidates, max_pairs_per_prompt)
        for chosen, rejected in candidates:
            pairs.append(PairRow(
                problem_id=prompt_id, prompt=chosen.prompt, chosen=chosen.completion, rejected=rejected.completion,
                score_chosen=_score(chosen), score_rejected=_score(rejected),
                lineage={**lineage, "chosen_sample": chosen.sample_index, "rejected_sample": rejected.sample_index,
                         "strategy": strategy, "chosen_scores": chosen.scores, "rejected_scores": rejected.scores}))
    return pairs
