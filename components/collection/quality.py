"""Data-quality report for a pair file (pairs from rounds, MCTS or a judge alike): is the
preference signal there, and is it the one intended?

- score margins (chosen − rejected): a pair file of near-zero margins teaches noise;
- length bias: how often chosen is longer than rejected — a judge or verifier that prefers long
  answers shows up here before the policy learns to ramble;
- near-duplicates: the same (prompt, chosen, rejected) twice up to case and spacing, and
  degenerate pairs whose chosen and rejected are the same text;
- contamination: pair prompts that are held-out evaluation questions;
- per-source counts (``lineage.source``);
- position bias of a judge: ask it twice with the two responses swapped and count flips.

Thresholds can fail a round, naming the measure, its value and the limit.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignflow.components.data.io import read_jsonl
from alignflow.components.data.schemas import PairRow
from alignflow.components.platform.figures import write_png_atomic


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


@dataclass(frozen=True)
class PairQuality:
    n_pairs: int
    margin_mean: float
    margin_min: float
    margin_median: float
    margin_max: float
    chosen_longer_rate: float  # by characters; ties count as not longer
    duplicate_pairs: int  # pairs repeating an earlier one
    degenerate_pairs: int  # chosen == rejected
    contaminated_pairs: int  # prompt contains a held-out question
    per_source: dict[str, int]

    def as_metrics(self, prefix: str = "quality/") -> dict[str, float]:
        out = {f"{prefix}{k}": float(v) for k, v in asdict(self).items() if k != "per_source"}
        out.update({f"{prefix}source/{k}": float(v) for k, v in self.per_source.items()})
        return out


def pair_quality(pairs: list[PairRow], heldout_questions: Iterable[str] = ()) -> PairQuality:
    if not pairs:
        raise ValueError("an empty pair file has no quality to report")
    margins = [p.score_chosen - p.score_rejected for p in pairs]
    seen: set[tuple[str, str, str]] = set()
    duplicates = 0
    for p in pairs:
        key = (_norm(p.prompt), _norm(p.chosen), _norm(p.rejected))
        duplicates += key in seen
        seen.add(key)
    questions = [_norm(q) for q in heldout_questions if q.strip()]
    contaminated = sum(any(q in _norm(p.prompt) for q in questions) for p in pairs)
    return PairQuality(
        n_pairs=len(pairs), margin_mean=statistics.fmean(margins), margin_min=min(margins),
        margin_median=statistics.median(margins), margin_max=max(margins),
        chosen_longer_rate=sum(len(p.chosen) > len(p.rejected) for p in pairs) / len(pairs),
        duplicate_pairs=duplicates, degenerate_pairs=sum(_norm(p.chosen) == _norm(p.rejected) for p in pairs),
        contaminated_pairs=contaminated,
        per_source=dict(Counter(str(p.lineage.get("source", "unknown")) for p in pairs)))


# a judge that, shown a prompt and responses A then B, says which is better: "A" or "B"
PairwiseJudge = Callable[[str, str, str], str]


def position_bias(judge: PairwiseJudge, pairs: list[PairRow]) -> dict[str, float]:
    """Ask twice per pair, chosen first then second. A consistent judge names the same response
    both times; ``flip_rate`` is how often it does not, ``first_position_rate`` how often it
    picks whatever is shown first (0.5 for an unbiased judge)."""
    if not pairs:
        raise ValueError("no pairs to probe")
    flips = first = 0
    for p in pairs:
        straight = judge(p.prompt, p.chosen, p.rejected)
        swapped = judge(p.prompt, p.rejected, p.chosen)
        for answer in (straight, swapped):
            if answer not in ("A", "B"):
                raise ValueError(f"a pairwise judge must answer 'A' or 'B', got {answer!r}")
        flips += (straight == "A") != (swapped == "B")
        first += (straight == "A") + (swapped == "A")
    return {"flip_rate": flips / len(pairs), "first_position_rate": first / (2 * len(pairs))}


@dataclass(frozen=True)
class QualityThresholds:
    min_pairs: int = 1
    min_margin_mean: float | None = None
    max_chosen_longer_rate: float | None = None
    max_duplicate_rate: float | None = None
    max_contaminated_pairs: int | None = 0


class PairQualityError(ValueError):
    pass


def check_position_bias(flip_rate: float, limit: float | None, source: str) -> None:
    if limit is not None and flip_rate > limit:
        raise PairQualityError(f"{source}: pair quality gate failed: judge flip_rate {flip_rate:.3f} > "
                               f"max_judge_flip_rate {limit} (the judge's pick follows the position)")


def quality_failures(report: PairQuality, limits: QualityThresholds) -> list[str]:
    """Every measure outside its limit, with its value and the limit (empty: the file passes)."""
    failures = []
    if report.n_pairs < limits.min_pairs:
        failures.append(f"n_pairs {report.n_pairs} < min_pairs {limits.min_pairs}")
    if limits.min_margin_mean is not None and report.margin_mean < limits.min_margin_mean:
        failures.append(f"margin_mean {report.margin_mean:.3f} < min_margin_mean {limits.min_margin_mean}")
    if limits.max_chosen_longer_rate is not None and report.chosen_longer_rate > limits.max_chosen_longer_rate:
        failures.append(f"chosen_longer_rate {report.chosen_longer_rate:.3f} > max_chosen_longer_rate "
                        f"{limits.max_chosen_longer_rate} (length bias)")
    duplicate_rate = report.duplicate_pairs / report.n_pairs
    if limits.max_duplicate_rate is not None and duplicate_rate > limits.max_duplicate_rate:
        failures.append(f"duplicate rate {duplicate_rate:.3f} > max_duplicate_rate {limits.max_duplicate_rate}")
    if limits.max_contaminated_pairs is not None and report.contaminated_pairs > limits.max_contaminated_pairs:
        failures.append(f"contaminated_pairs {report.contaminated_pairs} > max_contaminated_pairs "
                        f"{limits.max_contaminated_pairs} (held-out questions in training prompts)")
    return failures


def check_quality(report: PairQuality, limits: QualityThresholds, source: str) -> None:
    """Raise naming every failed measure, with its value and the limit."""
    raise_on_failures(quality_failures(report, limits), source)


def raise_on_failures(failures: list[str], source: str) -> None:
    """Raises:
        PairQualityError: naming ``source`` and every failure."""
    if failures:
        raise PairQualityError(f"{source}: pair quality gate failed: " + "; ".join(failures))


def heldout_questions(path: Path) -> list[str]:
    """The held-out texts of an evaluation file, to find in training prompts: eval rows' prompts (a
    standard prompt; a conversation's user turns) or held-out judge rows' contexts (a judge trained
    on a held-out row's task would be graded on something it has seen)."""
    out = []
    for number, row in read_jsonl(path):
        if row.get("columns", {}).get("question"):  # a built-in task row: its bare question
            text = row["columns"]["question"]
        elif isinstance(row.get("prompt"), list):
            text = "\n".join(m.get("content", "") for m in row["prompt"] if m.get("role") == "user")
        else:
            text = row.get("prompt") or row.get("question") or row.get("context")
        if not text:
            raise ValueError(f"{path}: row {number}: no prompt, question or context to check contamination against")
        out.append(text)
    return out


def thresholds_from(config: Any) -> QualityThresholds:
    """``QualityConfig`` → the limits ``check_quality`` applies."""
    return QualityThresholds(min_pairs=config.min_pairs, min_margin_mean=config.min_margin_mean,
                             max_chosen_longer_rate=config.max_chosen_longer_rate,
                             max_duplicate_rate=config.max_duplicate_rate,
                             max_contaminated_pairs=config.max_contaminated_pairs)


def plot_pair_quality(pairs: list[PairRow], out, title: str):
    """Two panels for the MLflow artifact: the margin histogram, and chosen vs rejected length
    (points above the diagonal: chosen longer — length bias at a glance). Written atomically."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (margins, lengths) = plt.subplots(1, 2, figsize=(10, 4))
    margins.hist([p.score_chosen - p.score_rejected for p in pairs], bins=20, color="tab:blue")
    margins.set_xlabel("score margin (chosen − rejected)")
    margins.set_ylabel("pairs")
    xs, ys = [len(p.rejected) for p in pairs], [len(p.chosen) for p in pairs]
    lengths.scatter(xs, ys, s=10, alpha=0.6)
    top = max(xs + ys + [1])
    lengths.plot([0, top], [0, top], color="grey", lw=1)
    lengths.set_xlabel("rejected length (characters)")
    lengths.set_ylabel("chosen length (characters)")
    fig.suptitle(title)
    fig.tight_layout()
    return write_png_atomic(fig, out)
