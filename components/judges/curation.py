"""Self-rationalization curation (ALGORITHMS.md §3): preference pairs from the judge's own
sampled judgments of one input. The published rules are unverified, so each choice is a field of
``CurationRules`` (logged as params by the loop):

- chosen: a well-formed judgment whose score equals the gold score (``chosen_tie_break``: the
  first such, or one at random, when several agree — a meta-judge can replace this later);
- rejected: the well-formed judgment whose score deviates most from gold (``max_deviation``) or
  a random mismatching one (``random_mismatch``); a malformed judgment counts as the worst
  rejected candidate when ``malformed_as_rejected`` (it teaches the format);
- inputs where every sample gives the same score, or none matches gold, give no pair.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

from alignflow.components.data.schemas import PairRow
from alignflow.components.judges.parsing import Judgment


@dataclass(frozen=True)
class CurationRules:
    chosen_tie_break: Literal["first", "random"] = "first"
    rejected_rule: Literal["max_deviation", "random_mismatch"] = "max_deviation"
    malformed_as_rejected: bool = True


def _ok_score(judgment: Judgment) -> int:
    """The score of a well-formed judgment: ``parse_judgment`` sets one whenever the status is ok."""
    assert judgment.status == "ok" and judgment.score is not None, judgment
    return judgment.score


def curate_pair(judgments: list[Judgment], gold: int, rules: CurationRules, rng: random.Random
                ) -> tuple[Judgment, Judgment] | None:
    ok = [j for j in judgments if j.status == "ok"]
    if len({j.score for j in ok}) <= 1 and not (rules.malformed_as_rejected and len(ok) < len(judgments)):
        return None  # all samples agree: nothing to learn from the contrast
    matching = [j for j in ok if j.score == gold]
    if not matching:
        return None
    chosen = matching[0] if rules.chosen_tie_break == "first" else rng.choice(matching)
    mismatched = [j for j in ok if j.score != gold]
    malformed = [j for j in judgments if j.status == "malformed"] if rules.malformed_as_rejected else []
    if rules.rejected_rule == "max_deviation":
        if malformed:
            return chosen, malformed[0]
        if not mismatched:
            return None
        return chosen, max(mismatched, key=lambda j: abs(_ok_score(j) - gold))
    pool = mismatched + malformed
    return (chosen, rng.choice(pool)) if pool else None


def judge_pair_rows(inputs: list[tuple[str, str, int]], judgments: list[list[Judgment]], rules: CurationRules,
                    seed: int, lineage: dict) -> list[PairRow]:
    """``inputs``: (problem id, rendered judge prompt, gold score) per input, aligned with
    ``judgments``. Scores of a malformed rejected judgment are recorded as 0."""
    rng = random.Random(seed)
    rows = []
    for (problem_id, prompt, gold), samples in zip(inputs, judgments, strict=True):
        pair = curate_pair(samples, gold, rules, rng)
        if pair is None:
            continue
        chosen, rejected = pair
        rows.append(PairRow(problem_id=problem_id, prompt=prompt, chosen=chosen.raw, rejected=rejected.raw,
                            score_chosen=float(_ok_score(chosen)), score_rejected=float(rejected.score or 0),
                            lineage={**lineage, "gold_score": gold, "rejected_status": rejected.status,
                                     "rules": asdict(rules)}))
    return rows
