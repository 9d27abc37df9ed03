"""Row schemas for every file the platform reads or writes.

Validation happens at the boundary (reading a file), so a bad row fails with its file, row
number and field before any work is done on it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemRow(_Row):
    """A verifiable task item: the question, its worked solution and the gold answer."""

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    solution: str = Field(min_length=1)
    answer: int
    difficulty: int = Field(ge=1, le=3)
    template: str


class CompletionRow(_Row):
    """One on-policy sample and, once scored, every scorer's verdict on it."""

    prompt_id: str
    prompt: str  # the rendered prompt text the policy saw
    source_prompt: str | list[dict[str, Any]]  # the row's prompt as given (what user scorers see)
    columns: dict[str, Any] = Field(default_factory=dict)  # the row's other columns (gold answers, …)
    sample_index: int = Field(ge=0)
    completion: str
    n_tokens: int = Field(ge=0)
    scores: dict[str, float | None] = Field(default_factory=dict)  # scorer id → score (None: not applicable)
    score: float | None = None  # the weighted combination of the applicable scores
    passed: bool | None = None  # the primary scorer's pass rule (None: it has none, or did not apply)


class PairRow(_Row):
    """A pairwise preference with per-pair lineage (who sampled, who scored, which seed)."""

    problem_id: str
    prompt: str
    chosen: str
    rejected: str
    score_chosen: float
    score_rejected: float
    lineage: dict[str, Any] = Field(default_factory=dict)
    # Written back by an ensemble of reward models (components.preference_strength): the mean and
    # spread of r_m(chosen) − r_m(rejected), and what curation did with them.
    strength_mean: float | None = None
    strength_std: float | None = None
    flipped: bool = False
    label_smoothing: float | None = Field(default=None, ge=0, lt=0.5)
    margin: float | None = None
    # True: chosen/rejected are whole responses and the trainer closes them with EOS. False:
    # step-level rows (MCTS) — the prompt holds the earlier steps and chosen/rejected are the
    # exact next-step continuations (with their newline, or EOS where the step ended the answer).
    complete_responses: bool = True
    # Why chosen beats rejected (ALGORITHMS.md §4): with it, the trainer adds the rationale term.
    rationale: str | None = None
    rationale_prompt: str | None = None  # x_rat the rationale was written for (the trainer scores it there)
    # what the pair's prompt is about, for per-category reward-model accuracy (a constraints row: its constraint kinds)
    categories: list[str] = Field(default_factory=list)


class JudgeRow(_Row):
    """A labelled judgment target (ALGORITHMS.md §3): grade ``response`` to ``context`` by ``rubric``."""

    problem_id: str
    context: str = Field(min_length=1)
    response: str
    rubric: str = Field(min_length=1)
    gold_score: int
    split: Literal["train", "heldout"]
    source: Literal["perturbed", "sampled"]
    answer: int | float | None = None  # the task's answer: the verifier tool needs it
    gold_judgment: str | None = None  # the seed judge's SFT target: rationale, then the score


class PredictionRow(_Row):
    """One evaluation prediction, kept so a metric can be audited row by row."""

    prompt_id: str
    completion: str
    n_tokens: int
    scores: dict[str, float | None] = Field(default_factory=dict)
    passed: bool | None = None
    groups: dict[str, Any] = Field(default_factory=dict)  # the eval.group_by columns of the row
    # scorers' finer verdicts ("<scorer id>/<name>" → value, Scorer.details): e.g. "constraints/kind/title" → 1.0
    details: dict[str, float] = Field(default_factory=dict)
