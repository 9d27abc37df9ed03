"""The verifier scorer.

reward = 1 for a correct final answer; for a wrong one, −min(1, |pred − gold| / (|gold| + 1))
(closer is better); −1 when no number can be read. ``correct`` stays the exact check, and the
default ``correct_vs_incorrect`` pairing uses only it; the graded part lets ``best_vs_worst``
and ``all_pairs`` rank two wrong answers.
"""

from __future__ import annotations

from alignflow.components.data.answers import extract_answer
from alignflow.components.data.schemas import CompletionRow, ProblemRow
from alignflow.components.modeling.generation import Completion

SCORER_ID = "arithmetic-verifier@2"


def verifier_reward(value: float | None, gold: int) -> tuple[bool, float]:
    if value is None:
        return False, -1.0
    if abs(value - gold) < 1e-6:
        return True, 1.0
    return False, -min(1.0, abs(value - gold) / (abs(gold) + 1.0))


def score_completions(problems: list[ProblemRow], completions: list[Completion]) -> list[CompletionRow]:
    rows = []
    for completion in completions:
        problem = problems[completion.prompt_index]
        value = extract_answer(completion.text)
        correct, reward = verifier_reward(value, problem.answer)
        rows.append(CompletionRow(
            problem_id=problem.id, question=problem.question, answer=problem.answer,
            sample_index=completion.sample_index, completion=completion.text, n_tokens=completion.n_tokens,
            extracted=value, correct=correct, reward=reward,
        ))
    return rows
