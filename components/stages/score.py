"""Stage ``score``: every configured scorer's verdict on every sampled completion (cached by
completion and scorer version), combined into each sample's score."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.scoring.base import Scorer, ScoringItem, score_all
from alignflow.components.stages.common import elapsed, open_scorers
from alignflow.components.stages.results import Artifact, ScoreResult


def scorer_models(scorers: list[Scorer]) -> dict[str, str]:
    """Scorer id → the model id of each model-backed scorer (a reward model, a judge): what pair lineage
    names, and what a registered version's ``model_id`` tag matches."""
    return {s.id: str(model_id) for s in scorers if (model_id := getattr(s, "model_id", None))}


def score(config: PipelineConfig, samples: Artifact, out_dir: Path) -> ScoreResult:
    """``scored.jsonl``: the samples with per-scorer scores, the combined score and the primary pass."""
    start = time.perf_counter()
    rows = read_rows(samples.file, CompletionRow)
    scorers, cache = open_scorers(config)
    run = score_all(scorers, [ScoringItem(r.prompt_id, r.source_prompt, r.completion, r.columns) for r in rows], cache)
    scored = [r.model_copy(update={"scores": s.scores, "score": s.score, "passed": s.passed})
              for r, s in zip(rows, run.scored, strict=True)]
    path = write_rows(Path(out_dir) / "scored.jsonl", scored)
    judged = [r for r in scored if r.passed is not None]
    means = {}
    for scorer in scorers:
        values = [v for r in scored if (v := r.scores.get(scorer.id)) is not None]
        means[scorer.id] = sum(values) / len(values) if values else float("nan")
    return ScoreResult(scored=Artifact.of(path),
                       sample_accuracy=sum(bool(r.passed) for r in judged) / len(judged) if judged else float("nan"),
                       prompts_with_a_correct_sample=len({r.prompt_id for r in scored if r.passed}),
                       scorers={s.id: s.version for s in scorers}, score_means=means, cache_hits=run.cache_hits,
                       scorer_seconds=run.seconds, scorer_models=scorer_models(scorers), seconds=elapsed(start))
