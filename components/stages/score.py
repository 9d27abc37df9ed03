"""Stage ``score``: the verifier's verdict on every sampled completion."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.scoring.verifiers import SCORER_ID, score_samples
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, ScoreResult


def score(samples: Artifact, out_dir: Path) -> ScoreResult:
    """``scored.jsonl``: the samples with extracted answer, correctness and graded reward."""
    start = time.perf_counter()
    scored = score_samples(read_rows(samples.file, CompletionRow))
    path = write_rows(Path(out_dir) / "scored.jsonl", scored)
    return ScoreResult(scored=Artifact.of(path), sample_accuracy=sum(r.correct for r in scored) / max(1, len(scored)),
                       prompts_with_a_correct_sample=len({r.problem_id for r in scored if r.correct}),
                       scorer=SCORER_ID, seconds=elapsed(start))
