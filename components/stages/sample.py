"""Stage ``sample``: k completions per round prompt from the current policy (ALGORITHMS.md §8)."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.prompts import render_prompt
from alignflow.components.data.schemas import CompletionRow, ProblemRow
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.modeling.sampler import collect_stats
from alignflow.components.platform.progress import progress_bar
from alignflow.components.stages.common import elapsed, round_prompts
from alignflow.components.stages.results import Artifact, Checkpoint, SampleResult


def sample(config: PipelineConfig, policy: Checkpoint, train: Artifact, round_index: int,
           out_dir: Path) -> SampleResult:
    """``samples.jsonl``: ``sampling.k`` completions for each of the round's prompts, seeded by
    (config seed, round)."""
    start = time.perf_counter()
    s = config.sampling
    problems = round_prompts(read_rows(train.file, ProblemRow), round_index, s.prompts_per_round)
    loaded = load_checkpoint(policy.dir, merge=True)
    prompts = [render_prompt(loaded.tokenizer, p.question, config.data.system_prompt) for p in problems]
    seed = config.seed * 1000 + round_index
    with progress_bar(f"round {round_index}: sampling", len(prompts)) as advance, collect_stats() as stats:
        completions = generate_completions(loaded.model, loaded.tokenizer, prompts, k=s.k, do_sample=True,
                                           temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                           batch_size=s.batch_size, seed=seed, on_batch=advance, backend=s.backend,
                                           compile=s.compile)
    rows = [CompletionRow(problem_id=problems[c.prompt_index].id, question=problems[c.prompt_index].question,
                          answer=problems[c.prompt_index].answer, sample_index=c.sample_index, completion=c.text,
                          n_tokens=c.n_tokens) for c in completions]
    path = write_rows(Path(out_dir) / "samples.jsonl", rows)
    return SampleResult(samples=Artifact.of(path), n_samples=len(rows), n_prompts=len(problems),
                        generated_tokens=sum(r.n_tokens for r in rows), policy_model_id=loaded.model_id, seed=seed,
                        seconds=elapsed(start), stall_seconds=round(stats.stall_s, 3))
