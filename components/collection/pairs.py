"""Turn scored on-policy samples into preference pairs (ALGORITHMS.md §8).

Strategies:
- ``best_vs_worst``: the highest- vs the lowest-reward sample of a prompt (ties skipped).
- ``correct_vs_incorrect``: each correct sample paired with an incorrect one, round-robin.
- ``all_pairs``: every (higher, lower) reward combination.
Duplicated texts are never paired with themselves; ``max_pairs_per_prompt`` caps each prompt.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any

from alignflow.components.data.schemas import CompletionRow, PairRow

STRATEGIES = ("best_vs_worst", "correct_vs_incorrect", "all_pairs")


def _candidate_pairs(samples: list[CompletionRow], strategy: str) -> list[tuple[CompletionRow, CompletionRow]]:
    if strategy == "best_vs_worst":
        ranked = sorted(samples, key=lambda r: (-r.reward, r.sample_index))
        best, worst = ranked[0], ranked[-1]
        return [(best, worst)] if best.reward > worst.reward else []
    if strategy == "correct_vs_incorrect":
        good = [s for s in samples if s.correct]
        bad = [s for s in samples if not s.correct]
        if not good or not bad:
            return []
        count = max(len(good), len(bad))
        return [(good[i % len(good)], bad[i % len(bad)]) for i in range(count)]
    if strategy == "all_pairs":
        return [(a, b) if a.reward > b.reward else (b, a)
                for a, b in itertools.combinations(samples, 2) if a.reward != b.reward]
    raise ValueError(f"unknown pair strategy '{strategy}'; expected one of {STRATEGIES}")


def build_pairs(scored: list[CompletionRow], prompts: dict[str, str], strategy: str, max_pairs_per_prompt: int,
                seed: int, lineage: dict[str, Any]) -> list[PairRow]:
    """``prompts`` maps problem id → the rendered prompt the policy saw."""
    by_problem: dict[str, list[CompletionRow]] = defaultdict(list)
    for row in scored:
        by_problem[row.problem_id].append(row)
    rng = random.Random(seed)
    pairs: list[PairRow] = []
    for problem_id in sorted(by_problem):
        candidates = [(c, r) for c, r in _candidate_pairs(by_problem[problem_id], strategy)
                      if c.completion.strip() != r.completion.strip()]
        if len(candidates) > max_pairs_per_prompt:
            candidates = rng.sample(candidates, max_pairs_per_prompt)
        for chosen, rejected in candidates:
            pairs.append(PairRow(
                problem_id=problem_id, prompt=prompts[problem_id],
                chosen=chosen.completion, rejected=rejected.completion,
                score_chosen=chosen.reward, score_rejected=rejected.reward,
                lineage={**lineage, "chosen_sample": chosen.sample_index, "rejected_sample": rejected.sample_index,
                         "strategy": strategy},
            ))
    return pairs
