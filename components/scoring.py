"""The verifier scorer: reward 1 for a correct final answer, 0 otherwise."""

from __future__ import annotations

from components.data.answers import extract_answer
from components.data.schemas import CompletionRow, ProblemRow
from components.generation import Completion

SCORER_ID = "arithmetic-verifier@1"


def score_completions(problems: list[ProblemRow], completions: list[Completion]) -> list[CompletionRow]:
    rows = []
    for completion in completions:
        problem = problems[completion.prompt_index]
        value = extract_answer(completion.text)
        correct = value is not None and abs(value - problem.answer) < 1e-6
        rows.append(CompletionRow(
            problem_id=problem.id, question=problem.question, answer=problem.answer,
            sample_index=completion.sample_index, completion=completion.text, n_tokens=completion.n_tokens,
            extracted=value, correct=correct, reward=1.0 if correct else 0.0,
        ))
    return rows
