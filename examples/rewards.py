"""A reward function as users write them for TRL (``reward_funcs``): ``fn(prompts, completions,
**columns) -> list[float | None]``. alignflow calls it unchanged (``scoring.scorers: [{type: python,
function: examples/rewards.py:correct_answer}]``); ``answer`` is a column of the data files."""

from __future__ import annotations

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> float | None:
    """The number after the last "answer is", else the last number in the text."""
    tail = text.lower().rsplit("answer is", 1)[-1]
    found = NUMBER.findall(tail) or NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def correct_answer(prompts, completions, answer, **kwargs):
    """1.0 when the completion's final number is the row's answer, 0.0 otherwise; None for a row
    without an answer (the scorer does not apply to it)."""
    scores = []
    for completion, gold in zip(completions, answer):
        text = completion if isinstance(completion, str) else completion[0]["content"]
        if gold is None:
            scores.append(None)
            continue
        value = final_number(text)
        scores.append(1.0 if value is not None and abs(value - float(gold)) < 1e-6 else 0.0)
    return scores
