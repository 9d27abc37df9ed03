"""Verifiers: scorers that check a completion against the row's gold value (``ground_truth`` or
``answer``, or the scorer's ``gold_column``) — or, for ``regex``, against a pattern. A row without
a gold value is not applicable (None). All share the number grammar of ``data/answers.py``.

- ``arithmetic``: 1 for a correct final answer; for a wrong one −min(1, |pred − gold| / (|gold| + 1))
  (closer is better); −1 when no number can be read. Passes at 1. The graded part lets
  ``best_vs_worst`` and ``all_pairs`` rank two wrong answers.
- ``gsm8k``: GSM8K's convention (the last ``#### N``, else the last number; a gold written as a
  GSM8K solution is read the same way): 1 or 0.
- ``math``: boxed/LaTeX answers compared symbolically by the ``math-verify`` package: 1 or 0
  (None when it times out or the gold cannot be parsed).
- ``exact_match``: the completion equals the gold text (stripped, case-folded, whitespace
  collapsed unless ``normalize: false``): 1 or 0.
- ``regex``: 1 when ``pattern`` matches the completion (``re.search``), else 0. No gold needed.
- ``numeric``: the extracted final number within ``tolerance`` of the gold number: 1 or 0.
- ``constraints``: the row's ``constraints`` column (or ``gold_column``: a list of ``{"kind", **params}``
  dicts, as ``builtin:constraints`` writes them; ``data/constraints.py`` has the checkers) — the
  fraction of the constraints the completion meets, in [0, 1]; passes (``all_met``) at 1. Its
  ``details`` give each constraint kind's verdict, which eval reports as
  ``eval/<id>/kind/<kind>`` (the pass rate of that kind over the rows that carry it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from alignflow.components.data.answers import extract_answer, gsm8k_answer, math_equal
from alignflow.components.data.constraints import CONSTRAINTS_COLUMN, Constraint, parse_constraints
from alignflow.components.scoring.base import Scorer, ScorerError, ScoringItem, gold_value


def verifier_reward(value: float | None, gold: float) -> tuple[bool, float]:
    """(correct, graded reward) of an extracted answer against the gold number."""
    if value is None:
        return False, -1.0
    if abs(value - gold) < 1e-6:
        return True, 1.0
    return False, -min(1.0, abs(value - gold) / (abs(gold) + 1.0))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    return extract_answer(str(value))


class _GoldVerifier(Scorer):
    default_pass_threshold = 1.0

    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        out: list[float | None] = []
        for item in items:
            gold = gold_value(self.spec, item.columns)
            out.append(None if gold is None else self.check(item.completion, gold))
        return out

    def check(self, completion: str, gold: Any) -> float | None:
        raise NotImplementedError


class ArithmeticVerifier(_GoldVerifier):
    REVISION = "3"

    def check(self, completion: str, gold: Any) -> float | None:
        target = _number(gold)
        return None if target is None else verifier_reward(extract_answer(completion), target)[1]


class GSM8KVerifier(_GoldVerifier):
    def check(self, completion: str, gold: Any) -> float | None:
        numeric = isinstance(gold, (int, float)) and not isinstance(gold, bool)
        target = float(gold) if numeric else gsm8k_answer(str(gold))
        if target is None:
            return None
        value = gsm8k_answer(completion)
        return float(value is not None and abs(value - target) < 1e-6)


class MathVerifier(_GoldVerifier):
    def check(self, completion: str, gold: Any) -> float | None:
        verdict = math_equal(completion, str(gold))
        return None if verdict is None else float(verdict)


class ExactMatch(_GoldVerifier):
    def check(self, completion: str, gold: Any) -> float | None:
        if self.spec.normalize:
            return float(" ".join(completion.split()).casefold() == " ".join(str(gold).split()).casefold())
        return float(completion == str(gold))


class NumericVerifier(_GoldVerifier):
    def check(self, completion: str, gold: Any) -> float | None:
        target = _number(gold)
        if target is None:
            return None
        value = extract_answer(completion)
        return float(value is not None and abs(value - target) <= self.spec.tolerance)


class RegexScorer(Scorer):
    default_pass_threshold = 1.0

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        try:
            self.pattern = re.compile(spec.pattern or "")
        except re.error as exc:
            raise ValueError(f"scoring.scorers '{spec.id}': pattern {spec.pattern!r} is not a regex: {exc}") from None

    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        return [float(self.pattern.search(item.completion) is not None) for item in items]


class ConstraintsVerifier(Scorer):
    """Fraction of the row's constraints met; passes when all are. Not applicable (None) to a row
    without a constraints column."""

    default_pass_threshold = 1.0

    def _constraints(self, item: ScoringItem) -> list[Constraint] | None:
        column = self.spec.gold_column or CONSTRAINTS_COLUMN
        value = item.columns.get(column)
        if value is None:
            return None
        try:  # the data stage checked the column already (check_constraints_columns); rows built elsewhere may not be
            return parse_constraints(value)
        except ValueError as exc:
            raise ScorerError(f"scorer '{self.id}': row {item.prompt_id}: field '{column}': {exc}") from None

    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        out: list[float | None] = []
        for item in items:
            constraints = self._constraints(item)
            if constraints is None:
                out.append(None)
            else:  # no constraints at all: vacuously met, as score_constraints counts it
                out.append(sum(c.check(item.completion) for c in constraints) / len(constraints) if constraints
                           else 1.0)
        return out

    def details(self, items: Sequence[ScoringItem]) -> list[dict[str, float]]:
        """``{"kind/<kind>": 1.0 or 0.0}`` per item: whether every constraint of that kind is met."""
        out: list[dict[str, float]] = []
        for item in items:
            verdicts: dict[str, float] = {}
            for constraint in self._constraints(item) or []:
                key = f"kind/{constraint.kind}"
                verdicts[key] = min(verdicts.get(key, 1.0), float(constraint.check(item.completion)))
            out.append(verdicts)
        return out


VERIFIERS: dict[str, type[Scorer]] = {"arithmetic": ArithmeticVerifier, "gsm8k": GSM8KVerifier, "math": MathVerifier,
                                      "exact_match": ExactMatch, "regex": RegexScorer, "numeric": NumericVerifier,
                                      "constraints": ConstraintsVerifier}
