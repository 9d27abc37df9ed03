"""Stage ``sample``: k completions per round prompt from the current policy (ALGORITHMS.md §8)."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import write_rows
from alignflow.components.data.schemas import CompletionRow
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.modeling.sampler import collect_stats
from alignflow.components.platform.progress import progress_bar
from alignflow.components.stages.common import elapsed, read_examples, render, round_prompts
from alignflow.components.stages.results import Artifact, Checkpoint, SampleResult


def sample(config: PipelineConfig, policy: Checkpoint, prompts: Artifact, round_index: int,
           out_dir: Path) -> SampleResult:
    """``samples.jsonl``: ``sampling.k`` completions for each of the round's prompts (the next
    ``sampling.prompts_per_round`` of the prompts role), seeded by (config seed, round)."""
    start = time.perf_counter()
    s = config.sampling
    rows = round_prompts(read_examples(prompts), round_index, s.prompts_per_round)
    loaded = load_checkpoint(policy.dir, merge=True)
    rendered = [render(config, loaded.tokenizer, r) for r in rows]
    seed = config.seed * 1000 + round_index
    with progress_bar(f"round {round_index}: sampling", len(rendered)) as advance, collect_stats() as stats:
        completions = generate_completions(loaded.model, loaded.tokenizer, rendered, k=s.k, do_sample=True,
                                           temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                           batch_size=s.batch_size, seed=seed, on_batch=advance, backend=s.backend,
                                           compile=s.compile)
    samples = [CompletionRow(prompt_id=rows[c.prompt_index].id, prompt=rendered[c.prompt_index],
                             source_prompt=rows[c.prompt_index].prompt, columns=rows[c.prompt_index].columns,
                             sample_index=c.sample_index, completion=c.text, n_tokens=c.n_tokens)
               for c in completions]
    path = write_rows(Path(out_dir) / "samples.jsonl", samples)
    return SampleResult(samples=Artifact.of(path), n_samples=len(samples), n_prompts=len(rows),
                        generated_tokens=sum(r.n_tokens for r in samples), policy_model_id=loaded.model_id, seed=seed,
                        seconds=elapsed(start), stall_seconds=round(stats.stall_s, 3))
