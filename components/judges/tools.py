"""Tools a judge calls before it scores, so arithmetic claims are checked rather than guessed:
a calculator (a safe arithmetic evaluator — never ``eval``), an equation checker built on it,
and the task's verifier. Every call is recorded as a ``ToolCall`` and kept with the judgment."""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass

from alignflow.components.data.answers import extract_answer, is_correct

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
# "a op b [op c …] = d", with × ÷ and thousands separators as models write them
_EQUATION = re.compile(r"(-?\d[\d,]*(?:\.\d+)?(?:\s*[-+*/×÷x]\s*-?\d[\d,]*(?:\.\d+)?)+)\s*=\s*(-?\d[\d,]*(?:\.\d+)?)")


@dataclass(frozen=True)
class ToolCall:
    tool: str
    input: str
    output: str


def calculate(expression: str) -> float:
    """Value of an arithmetic expression: numbers, + − × ÷ (also * / // %), parentheses.
    Anything else (names, calls, powers) is refused with ValueError."""
    text = expression.replace("×", "*").replace("÷", "/").replace(",", "")
    text = re.sub(r"(?<=\d)\s*x\s*(?=[\d(-])", "*", text)  # "3 x 4"
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from err

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        raise ValueError(f"not an arithmetic expression: {expression!r}")

    try:
        return value(tree)
    except ZeroDivisionError as err:
        raise ValueError(f"division by zero in {expression!r}") from err


@dataclass(frozen=True)
class EquationCheck:
    text: str
    claimed: float
    actual: float | None  # None: the left side could not be evaluated

    @property
    def valid(self) -> bool:
        return self.actual is not None and abs(self.actual - self.claimed) < 1e-6


def check_equations(text: str) -> list[EquationCheck]:
    """Every "left = right" claim in a solution, recomputed with the calculator."""
    checks = []
    for match in _EQUATION.finditer(text):
        left, right = match.group(1), match.group(2)
        try:
            actual = calculate(left)
        except ValueError:
            actual = None
        checks.append(EquationCheck(match.group(0), float(right.replace(",", "")), actual))
    return checks


def _verdict(check: EquationCheck) -> str:
    if check.actual is None:
        return "unreadable"
    return "ok" if check.valid else f"wrong, left side is {check.actual:g}"


def equation_tool(response: str) -> ToolCall:
    summary = "; ".join(f"{c.text} -> {_verdict(c)}" for c in check_equations(response)) or "no equations found"
    return ToolCall("check_equations", response, summary)


def verifier_tool(response: str, gold: int | float) -> ToolCall:
    extracted = extract_answer(response)
    verdict = "no final answer" if extracted is None else ("correct" if is_correct(response, gold) else "incorrect")
    shown = "-" if extracted is None else f"{extracted:g}"
    return ToolCall("verify_answer", response, f"final answer {shown}: {verdict}")
