"""Stage ``pairs``: scored on-policy samples → preference pairs with per-pair lineage."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.collection.pairs import build_pairs
from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.scoring.verifiers import VERIFIERS
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, PairsResult, ScoreResult


def make_pairs(config: PipelineConfig, scored: ScoreResult, policy_model_id: str, round_index: int, seed: int,
               out_dir: Path) -> PairsResult:
    """``pairs.jsonl`` by ``pairs.strategy``; each pair names the policy that sampled it, the scorers
    (id and version; a reward model or judge also by the model id it loaded), the round, the sampling
    seed and settings."""
    start = time.perf_counter()
    rows = read_rows(scored.scored.file, CompletionRow)
    types = sorted({version.split("@", 1)[0] for version in scored.scorers.values()})
    source = "verifier" if set(types) <= set(VERIFIERS) else "+".join(types)
    lineage = {"source": source, "policy_model_id": policy_model_id, "scorers": scored.scorers,
               **({"scorer_models": scored.scorer_models} if scored.scorer_models else {}),
               "round": round_index, "sampling_seed": seed, "temperature": config.sampling.temperature,
               "top_p": config.sampling.top_p, "scored_md5": scored.scored.md5}
    pairs = build_pairs(rows, config.pairs.strategy, config.pairs.max_pairs_per_prompt, seed, lineage,
                        config.pairs.min_margin)
    path = write_rows(Path(out_dir) / "pairs.jsonl", pairs)
    return PairsResult(pairs=Artifact.of(path), n_pairs=len(pairs), seconds=elapsed(start))
