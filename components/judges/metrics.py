"""How good a judge is on labelled judgments (ALGORITHMS.md §3, step 3).

- exact-score accuracy: the predicted score equals gold; a malformed judgment counts as wrong;
- mean absolute error over the well-formed judgments (and the malformed rate beside it, so a
  judge cannot improve its MAE by refusing to score the hard ones);
- pairwise agreement: over every two responses to the same problem with different gold scores,
  how often the judge orders them the same way. A tie or a malformed judgment is not agreement.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations


def judge_metrics(gold: list[int], predicted: list[int | None], groups: list[str]) -> dict[str, float]:
    if not (len(gold) == len(predicted) == len(groups)) or not gold:
        raise ValueError(f"judge metrics need equal, non-empty gold/predicted/groups "
                         f"(got {len(gold)}, {len(predicted)}, {len(groups)})")
    scored = [(g, p) for g, p in zip(gold, predicted, strict=True) if p is not None]
    by_group: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        by_group[group].append(index)
    agree = total = 0
    for members in by_group.values():
        for i, j in combinations(members, 2):
            if gold[i] == gold[j]:
                continue
            total += 1
            pi, pj = predicted[i], predicted[j]
            agree += pi is not None and pj is not None and (pi - pj) * (gold[i] - gold[j]) > 0
    return {
        "judge/exact_accuracy": sum(g == p for g, p in scored) / len(gold),
        "judge/mae": sum(abs(g - p) for g, p in scored) / len(scored) if scored else float("nan"),
        "judge/malformed_rate": (len(gold) - len(scored)) / len(gold),
        "judge/pairwise_agreement": agree / total if total else float("nan"),
        "judge/n": float(len(gold)),
        "judge/n_pairs_compared": float(total),
    }
