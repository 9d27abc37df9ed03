"""The verifier scorer.

reward = 1 for a correct final answer; for a wrong one, −min(1, |pred − gold| / (|gold| + 1))
(closer is better); −1 when no number can be read. ``correct`` stays the exact check, and the
default ``correct_vs_incorrect`` pairing uses only it; the graded part lets ``best_vs_worst``
and ``all_pairs`` rank two wrong answers.
"""

from __future__ import annotations

from alignflow.components.data.answers import extract_answer
from alignflow.components.data.schemas import CompletionRow

SCORER_ID = "arithmetic-verifier@3"  # @3: components/data/answers.py reads the last explicit answer by position


def verifier_reward(value: float | None, gold: int) -> tuple[bool, float]:
    if value is None:
        return False, -1.0
    if abs(value - gold) < 1e-6:
        return True, 1.0
    return False, -min(1.0, abs(value - gold) / (abs(gold) + 1.0))


def score_samples(samples: list[CompletionRow]) -> list[CompletionRow]:
    """Each sample with the verifier's verdict filled in: the extracted answer, ``correct`` and
    ``reward`` (see the module docstring), compared with the sample's own gold ``answer``."""
    scored = []
    for row in samples:
        value = extract_answer(row.completion)
        correct, reward = verifier_reward(value, row.answer)
        scored.append(row.model_copy(update={"extracted": value, "correct": correct, "reward": reward}))
    return scored
