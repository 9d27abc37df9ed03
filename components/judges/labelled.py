"""Labelled judge data without humans: on the verifiable task the right grade follows from two
facts a program can check — is the final answer correct, and is every calculation on the way
right — so (problem, response, rubric, gold score) rows come for free, with a held-out split.

Responses come from the policy's own samples and, so that every grade is represented, from
perturbations of the worked solution (a wrong intermediate result, a wrong final answer)."""

from __future__ import annotations

import hashlib
import random
import re
from typing import Literal

from alignflow.components.data.answers import extract_answer, is_correct
from alignflow.components.data.schemas import JudgeRow, ProblemRow
from alignflow.components.judges.template import SCORE_LABEL
from alignflow.components.judges.tools import check_equations

RUBRIC = ("5: the final answer is correct and every calculation is right. "
          "4: the final answer is correct but a calculation on the way is wrong. "
          "2: the final answer is wrong or missing, but every calculation is right. "
          "1: the final answer is wrong or missing and a calculation is wrong.")


def gold_score(response: str, answer: int | float) -> int:
    correct = is_correct(response, answer)
    steps_valid = all(c.valid for c in check_equations(response))
    if correct:
        return 5 if steps_valid else 4
    return 2 if steps_valid else 1


def gold_judgment(response: str, answer: int | float) -> str:
    """The judgment a careful grader writes: each calculation checked, the final answer checked,
    then the score — what the seed judge is fine-tuned to produce (rationale before score)."""
    checks = check_equations(response)
    parts = []
    for check in checks:  # terse on purpose: every token of it is generated N times per input
        if check.valid:
            parts.append(f"{check.text} ok.")
        elif check.actual is None:
            parts.append(f"{check.text} unreadable.")
        else:
            parts.append(f"{check.text} wrong ({check.actual:g}).")
    if not checks:
        parts.append("No calculations.")
    extracted = extract_answer(response)
    if extracted is None:
        parts.append("No final answer.")
    else:
        parts.append(f"Final answer {extracted:g} {'correct' if is_correct(response, answer) else 'wrong'}.")
    return f"Rationale: {' '.join(parts)}\n{SCORE_LABEL} {gold_score(response, answer)}"


def is_heldout(question: str, fraction: float) -> bool:
    """A problem is held out by the hash of its question text: stable across runs, and two
    problems that happen to ask the same question land on the same side (ids would split them)."""
    return int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def perturbed_solutions(problem: ProblemRow, rng: random.Random) -> list[str]:
    """The worked solution and two corruptions of it: one wrong intermediate result with the
    right final answer (grade 4, when there is an intermediate step), and a wrong final answer
    with right calculations (grade 2)."""
    lines = problem.solution.split("\n")
    out = [problem.solution]
    equation_lines = [i for i, line in enumerate(lines) if check_equations(line)]
    if len(equation_lines) >= 2:  # corrupt a non-final result: the final answer stays right
        i = equation_lines[0]
        claimed = check_equations(lines[i])[0]
        wrong = int(claimed.claimed) + rng.choice([-2, -1, 1, 2])
        lines_bad = list(lines)
        lines_bad[i] = re.sub(r"=\s*-?\d+", f"= {wrong}", lines[i], count=1)
        out.append("\n".join(lines_bad))
    final = extract_answer(problem.solution)
    if final is None:  # nothing to corrupt: a worked solution ends with its final answer
        raise ValueError(f"problem {problem.id}: its solution states no final answer ('The answer is N')")
    wrong_final = int(final) + rng.choice([-3, -1, 1, 3])
    out.append(re.sub(r"The answer is -?\d+", f"The answer is {wrong_final}", problem.solution))
    return out


def labelled_rows(problems: list[ProblemRow], sampled: dict[str, list[str]] | None = None, seed: int = 0,
                  heldout_fraction: float = 0.2, context_of=lambda p: p.question) -> list[JudgeRow]:
    """Judge rows for each problem: its perturbed solutions plus any sampled responses."""
    rng = random.Random(seed)
    rows = []
    for problem in problems:
        split = "heldout" if is_heldout(problem.question, heldout_fraction) else "train"
        sources: list[tuple[Literal["perturbed", "sampled"], str]]
        sources = [("perturbed", r) for r in perturbed_solutions(problem, rng)]
        sources.extend(("sampled", r) for r in (sampled or {}).get(problem.id, []))
        for source, response in sources:
            rows.append(JudgeRow(problem_id=problem.id, context=context_of(problem), response=response, rubric=RUBRIC,
                                 gold_score=gold_score(response, problem.answer), split=split, source=source,
                                 answer=problem.answer, gold_judgment=gold_judgment(response, problem.answer)))
    return rows
