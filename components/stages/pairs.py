"""Stage ``pairs``: scored on-policy samples → preference pairs with per-pair lineage."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.collection.pairs import build_pairs
from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.prompts import render_prompt
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.modeling.checkpoints import load_tokenizer, materialize_base
from alignflow.components.scoring.verifiers import SCORER_ID
from alignflow.components.stages.common import elapsed
from alignflow.components.stages.results import Artifact, PairsResult


def make_pairs(config: PipelineConfig, scored: Artifact, policy_model_id: str, round_index: int, seed: int,
               out_dir: Path) -> PairsResult:
    """``pairs.jsonl`` by ``pairs.strategy``; each pair names the policy that sampled it, the scorer,
    the round, the sampling seed and settings."""
    start = time.perf_counter()
    rows = read_rows(scored.file, CompletionRow)
    tokenizer = load_tokenizer(materialize_base(config.model, config.seed, config.state_dir))
    prompts = {r.problem_id: render_prompt(tokenizer, r.question, config.data.system_prompt) for r in rows}
    lineage = {"source": "verifier", "policy_model_id": policy_model_id, "scorer": SCORER_ID, "round": round_index,
               "sampling_seed": seed, "temperature": config.sampling.temperature, "top_p": config.sampling.top_p,
               "scored_md5": scored.md5}
    pairs = build_pairs(rows, prompts, config.pairs.strategy, config.pairs.max_pairs_per_prompt, seed, lineage)
    path = write_rows(Path(out_dir) / "pairs.jsonl", pairs)
    return PairsResult(pairs=Artifact.of(path), n_pairs=len(pairs), seconds=elapsed(start))
