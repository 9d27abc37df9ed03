"""Judge outputs → judgments. Strict on purpose: a judge that states a score without a rationale,
before its rationale, twice with different values, or outside the scale produced a malformed
judgment, and that is what gets recorded (with the reason) — it is never scored by guessing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from alignflow.components.judges.template import SCORE_LABEL, JudgeTemplate

_SCORE = re.compile(rf"(?:\*\*)?{re.escape(SCORE_LABEL)}\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*\**", re.IGNORECASE)
_RATIONALE_LABEL = re.compile(r"^\s*rationale\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Judgment:
    raw: str
    status: Literal["ok", "malformed"]
    rationale: str | None = None
    score: int | None = None
    problem: str | None = None  # why a judgment is malformed


def _malformed(raw: str, problem: str) -> Judgment:
    return Judgment(raw=raw, status="malformed", problem=problem)


def parse_judgment(raw: str, template: JudgeTemplate) -> Judgment:
    matches = list(_SCORE.finditer(raw))
    if not matches:
        return _malformed(raw, f"no '{SCORE_LABEL} N' line")
    values = {m.group(1) for m in matches}
    if len(values) > 1:
        return _malformed(raw, f"conflicting scores {sorted(values)}")
    first = matches[0]
    rationale = _RATIONALE_LABEL.sub("", raw[: first.start()]).strip()
    if not rationale:
        return _malformed(raw, "score without a rationale before it")
    text = first.group(1)
    if "." in text:
        return _malformed(raw, f"score {text} is not an integer")
    score = int(text)
    if not template.low <= score <= template.high:
        return _malformed(raw, f"score {score} outside {template.low}..{template.high}")
    return Judgment(raw=raw, status="ok", rationale=rationale, score=score)
