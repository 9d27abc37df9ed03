"""Read the final number out of free text, the way a grader would."""

from __future__ import annotations

import re

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?"
_ANSWER_PATTERNS = [
    re.compile(rf"answer\s*(?:is|:|=)?\s*\**\s*\$?\s*({_NUMBER})", re.IGNORECASE),
    re.compile(rf"\\boxed\{{\s*({_NUMBER})\s*\}}"),
    re.compile(rf"####\s*({_NUMBER})"),
]
_ANY_NUMBER = re.compile(_NUMBER)


def _to_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def extract_answer(text: str) -> float | None:
    """The last explicit "answer is N" (or \\boxed{N}, #### N); else the last number; else None.

    The last explicit statement wins because models often restate a corrected answer.
    """
    for pattern in _ANSWER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return _to_number(matches[-1])
    numbers = _ANY_NUMBER.findall(text)
    return _to_number(numbers[-1]) if numbers else None


def states_final_answer(text: str) -> bool:
    """True when the text gives an explicit final answer ("The answer is N", \\boxed{N}, #### N):
    a step search stops there. A bare number mid-solution does not count."""
    return any(pattern.search(text) for pattern in _ANSWER_PATTERNS)


def is_correct(text: str, gold: int | float) -> bool:
    value = extract_answer(text)
    return value is not None and abs(value - float(gold)) < 1e-6
