"""Seeded arithmetic word problems with worked solutions: the verifiable task.

A verifier that knows the answer lets a round measure improvement without human labels. The
difficulty is the number of operations (1–3); each problem is a small story built from one of
several templates, and its solution walks through one equation per line, ending with
"The answer is N." — the format the answer extractor reads.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from alignflow.components.data.prompts import INSTRUCTION
from alignflow.components.data.schemas import ProblemRow

NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kira", "Liam"]


@dataclass(frozen=True)
class Template:
    """A story frame: what is counted and how each operation is told."""

    name: str
    item: str
    start: str  # "{name} has {n} {item}."
    add: str
    sub: str
    mul: str
    div: str
    question: str


TEMPLATES = [
    Template(
        "apples", "apples",
        "{name} has {n} apples.",
        "{pron} picks {n} more apples.",
        "{pron} eats {n} of them.",
        "Then the number of apples becomes {n} times as large.",
        "{pron} splits the apples into {n} equal bags and keeps one bag.",
        "How many apples does {name} have now?",
    ),
    Template(
        "coins", "coins",
        "{name} starts with {n} coins.",
        "{pron} finds {n} more coins.",
        "{pron} spends {n} coins.",
        "{pron} then gets {n} times as many coins as {pron_l} has.",
        "{pron} shares the coins equally among {n} friends and keeps one share.",
        "How many coins does {name} end up with?",
    ),
    Template(
        "books", "books",
        "A shelf holds {n} books.",
        "{name} adds {n} books to the shelf.",
        "{name} lends {n} books to a friend.",
        "The library fills {n} shelves exactly like this one and puts them all together.",
        "The books are divided into {n} equal piles and one pile is kept.",
        "How many books are there at the end?",
    ),
    Template(
        "marbles", "marbles",
        "There are {n} marbles in a jar.",
        "{name} puts in {n} more marbles.",
        "{name} takes out {n} marbles.",
        "The number of marbles is multiplied by {n}.",
        "The marbles are split into {n} equal groups and one group stays in the jar.",
        "How many marbles are in the jar?",
    ),
]

_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _pronoun(name: str) -> str:
    return "She" if name in {"Ava", "Chloe", "Emma", "Grace", "Isla", "Kira"} else "He"


def _pick_operation(rng: random.Random, value: int, max_operand: int) -> tuple[str, int]:
    """Pick an operation that keeps every intermediate value a small non-negative integer."""
    options = ["add", "mul"]
    if value >= 2:
        options.append("sub")
    divisors = [d for d in range(2, min(value, 9) + 1) if value % d == 0]
    if divisors:
        options.append("div")
    if value > 60:  # keep numbers small enough for a 135M model to have a chance
        options = [o for o in options if o != "mul"]
    op = rng.choice(options)
    if op == "add":
        return op, rng.randint(2, max_operand)
    if op == "sub":
        return op, rng.randint(1, value - 1)
    if op == "mul":
        return op, rng.randint(2, 4)
    return op, rng.choice(divisors)


def _apply(op: str, value: int, operand: int) -> int:
    if op == "add":
        return value + operand
    if op == "sub":
        return value - operand
    if op == "mul":
        return value * operand
    return value // operand


def make_problem(rng: random.Random, difficulty: int, max_operand: int, index: int, split: str) -> ProblemRow:
    template = rng.choice(TEMPLATES)
    name = rng.choice(NAMES)
    pron = _pronoun(name)
    fill = {"name": name, "pron": pron, "pron_l": pron.lower()}
    value = rng.randint(2, max_operand)
    sentences = [template.start.format(n=value, **fill)]
    steps = [f"Start with {value} {template.item}."]
    for _ in range(difficulty):
        op, operand = _pick_operation(rng, value, max_operand)
        new_value = _apply(op, value, operand)
        sentences.append(getattr(template, op).format(n=operand, **fill))
        steps.append(f"{value} {_SYMBOL[op]} {operand} = {new_value}.")
        value = new_value
    sentences.append(template.question.format(**fill))
    steps.append(f"The answer is {value}.")
    question = " ".join(sentences)
    digest = hashlib.sha1(f"{split}:{index}:{question}".encode()).hexdigest()[:10]
    return ProblemRow(
        id=f"{split}-{index:05d}-{digest}",
        question=question,
        solution="\n".join(steps),
        answer=value,
        difficulty=difficulty,
        template=template.name,
    )


def generate_split(n: int, seed: int, difficulties: list[int], max_operand: int, split: str) -> list[ProblemRow]:
    """Deterministic for (n, seed, difficulties, max_operand, split); splits never share a question."""
    split_salt = int(hashlib.sha1(split.encode()).hexdigest()[:8], 16)
    rng = random.Random(seed * 1_000_003 + split_salt)
    return [make_problem(rng, difficulties[i % len(difficulties)], max_operand, i, split) for i in range(n)]


def generate_dataset(
    seed: int, n_sft: int, n_train_prompts: int, n_eval: int, difficulties: list[int], max_operand: int
) -> dict[str, list[ProblemRow]]:
    """SFT, on-policy training prompts and held-out eval, with eval questions removed elsewhere."""
    eval_rows = generate_split(n_eval, seed, difficulties, max_operand, "eval")
    held_out = {row.question for row in eval_rows}
    splits = {"eval": eval_rows}
    for split, n in (("sft", n_sft), ("train", n_train_prompts)):
        rows: list[ProblemRow] = []
        attempt_seed = seed
        while len(rows) < n:
            candidates = generate_split(n * 2, attempt_seed, difficulties, max_operand, split)
            rows.extend(r for r in candidates if r.question not in held_out)
            attempt_seed += 7919
        splits[split] = rows[:n]
    return splits


ROLE_SPLITS = {"sft": "sft", "prompts": "train", "eval": "eval"}


def task_row(problem: ProblemRow) -> dict[str, Any]:
    """A problem as a data-source row (prompt/completion, standard format): the prompt carries the
    answer-format instruction, the worked solution is the completion, and the gold answer, the
    bare question, difficulty and template stay as columns (what verifiers and eval groups read)."""
    return {"prompt": f"{problem.question}\n{INSTRUCTION}", "completion": problem.solution, "answer": problem.answer,
            "question": problem.question, "difficulty": problem.difficulty, "template": problem.template,
            "problem_id": problem.id}


def arithmetic_source(role: str, seed: int, n_sft: int, n_train_prompts: int, n_eval: int, difficulties: list[int],
                      max_operand: int) -> list[dict[str, Any]]:
    """``builtin:arithmetic`` for one role: that role's split of ``generate_dataset`` (eval questions
    never occur in the other splits), as ``task_row``s.

    Raises:
        ValueError: the role has no arithmetic split (``preferences``).
    """
    if role not in ROLE_SPLITS:
        raise ValueError(f"builtin:arithmetic has no rows for the '{role}' role (it has {', '.join(ROLE_SPLITS)})")
    splits = generate_dataset(seed, n_sft, n_train_prompts, n_eval, difficulties, max_operand)
    return [task_row(p) for p in splits[ROLE_SPLITS[role]]]


def problem_of(columns: dict[str, Any], prompt_id: str, completion: str | None) -> ProblemRow:
    """A row of the arithmetic task back as a ProblemRow (the judge loop's labelled data needs the
    gold answer and the worked solution).

    Raises:
        ValueError: the row has no integer ``answer`` or no worked solution (another task's row).
    """
    answer = columns.get("answer")
    if not isinstance(answer, int) or isinstance(answer, bool) or not completion:
        raise ValueError(f"row {prompt_id}: the judge loop's labelled data needs an arithmetic row (an integer "
                         f"'answer' column and a worked solution as its completion)")
    return ProblemRow(id=str(columns.get("problem_id", prompt_id)), question=str(columns.get("question", "")),
                      solution=completion, answer=answer, difficulty=int(columns.get("difficulty", 1)),
                      template=str(columns.get("template", "-")))
