"""Preference synthesis's stages (ALGORITHMS.md §9): the pool answers, the judge rates every
completion per aspect, ratings are binarized into pairs, optionally with rationales (§4). The
rules live in ``collection/synthesis.py``; the synthesize flow and synthesized rounds run these."""

from __future__ import annotations

import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alignflow.components.collection.synthesis import PoolMember, Rated, binarize
from alignflow.components.config import PipelineConfig
from alignflow.components.data.formats import Example
from alignflow.components.data.io import read_jsonl, read_rows, write_rows
from alignflow.components.data.prompts import rationale_prompt
from alignflow.components.data.schemas import PairRow
from alignflow.components.judges.judge import JudgeInput, judge_from_config
from alignflow.components.judges.pairwise import model_position_bias
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.platform.atomic import write_jsonl_atomic
from alignflow.components.platform.progress import progress_bar
from alignflow.components.scoring.base import gold_value
from alignflow.components.stages.common import elapsed, read_examples, render, round_prompts
from alignflow.components.stages.results import (
    Artifact,
    Checkpoint,
    PoolSampleResult,
    PositionBiasResult,
    RatingsResult,
    SynthesisPairsResult,
)


def judge_context(row: Example) -> str:
    """What the judge is shown as the task: the row's bare question when it has one, else its prompt
    (a conversation's turns, joined)."""
    if row.columns.get("question"):
        return str(row.columns["question"])
    if isinstance(row.prompt, str):
        return row.prompt
    return "\n".join(m["content"] for m in row.prompt if m["role"] != "system")


def sample_pool(config: PipelineConfig, pool: list[PoolMember], problems: Artifact, round_index: int,
                out_dir: Path) -> PoolSampleResult:
    """``pool-completions.jsonl``: every pool member answers the round's prompts
    ``synthesis.samples_per_policy`` times each (member m seeded by seed + 100·m)."""
    start = time.perf_counter()
    s = config.synthesis
    items = round_prompts(read_examples(problems), round_index, config.sampling.prompts_per_round)
    seed = config.seed * 1000 + round_index
    gold_spec = config.scoring.scorers[0]
    rows = []
    for m, member in enumerate(pool):
        policy = load_checkpoint(Path(member.checkpoint), merge=True)
        prompts = [render(config, policy.tokenizer, p) for p in items]
        with progress_bar(f"synthesis: {member.label} @ T={member.temperature}", len(prompts)) as advance:
            outs = generate_completions(policy.model, policy.tokenizer, prompts, k=s.samples_per_policy, do_sample=True,
                                        temperature=member.temperature, max_new_tokens=config.sampling.max_new_tokens,
                                        batch_size=config.sampling.batch_size, seed=seed + 100 * m, on_batch=advance)
        for out in outs:
            p = items[out.prompt_index]
            rows.append({"problem_id": p.id, "question": judge_context(p), "answer": gold_value(gold_spec, p.columns),
                         "prompt": prompts[out.prompt_index], "completion": out.text, "n_tokens": out.n_tokens,
                         "model": policy.model_id, "pool_label": member.label, "temperature": member.temperature})
        del policy
    path = write_jsonl_atomic(Path(out_dir) / "pool-completions.jsonl", rows)
    return PoolSampleResult(completions=Artifact.of(path), n_completions=len(rows), n_prompts=len(items), seed=seed,
                            generated_tokens=sum(r["n_tokens"] for r in rows), seconds=elapsed(start))


def rate_completions(config: PipelineConfig, judge: Checkpoint, completions: Artifact, out_dir: Path,
                     cache_path: Path | None) -> RatingsResult:
    """``ratings.jsonl``: the judge's rating of each completion on each aspect (greedy, cached), with
    rationale and tool calls."""
    start = time.perf_counter()
    rows = [row for _, row in read_jsonl(completions.file)]
    model = judge_from_config(config, load_checkpoint(judge.dir, merge=True), cache_path)
    aspects = config.synthesis.aspects
    items = [JudgeInput(context=r["question"], response=r["completion"], rubric=rubric, gold=r["answer"])
             for r in rows for rubric in aspects.values()]
    with progress_bar(f"synthesis: judging {len(rows)} completions × {len(aspects)} aspects", len(items)) as advance:
        recorded = model.judge(items, n=1, on_batch=advance)
    out_rows = []
    for i, row in enumerate(rows):
        judged = recorded[i * len(aspects):(i + 1) * len(aspects)]
        ratings = {}
        for aspect, samples in zip(aspects, judged, strict=True):
            j = samples[0].judgment
            ratings[aspect] = {"score": j.score, "status": j.status, "rationale": j.rationale, "problem": j.problem}
        out_rows.append({**row, "ratings": ratings, "tool_calls": [asdict(c) for c in judged[0][0].tool_calls]})
    path = write_jsonl_atomic(Path(out_dir) / "ratings.jsonl", out_rows)
    flat = [a for r in out_rows for a in r["ratings"].values()]
    return RatingsResult(ratings=Artifact.of(path), judge_model_id=model.model_id, template_hash=model.template.hash,
                         n_judgments=len(flat),
                         malformed_rate=sum(a["status"] == "malformed" for a in flat) / max(1, len(flat)),
                         cache_hits=sum(s.cached for samples in recorded for s in samples), seconds=elapsed(start))


def binarize_ratings(config: PipelineConfig, ratings: Artifact, judge_model_id: str, seed: int, out_dir: Path,
                     extra_lineage: dict[str, Any] | None = None) -> SynthesisPairsResult:
    """``pairs.jsonl``: per prompt, chosen = the highest mean rating, rejected by ``rejected_strategy``."""
    start = time.perf_counter()
    s = config.synthesis
    rows = [row for _, row in read_jsonl(ratings.file)]
    by_prompt: dict[str, list[tuple[int, dict]]] = {}
    for index, row in enumerate(rows):
        by_prompt.setdefault(row["problem_id"], []).append((index, row))
    rng = random.Random(seed)
    pairs = []
    for problem_id, members in by_prompt.items():
        rated = [Rated(i, r["completion"], r["model"], r["temperature"],
                       {a: v["score"] for a, v in r["ratings"].items()}) for i, r in members]
        for chosen, rejected in binarize(rated, s.rejected_strategy, rng, s.max_pairs_per_prompt):
            first = members[0][1]
            pairs.append(PairRow(
                problem_id=problem_id, prompt=first["prompt"], chosen=chosen.text, rejected=rejected.text,
                score_chosen=chosen.rated_mean(), score_rejected=rejected.rated_mean(),
                lineage={"source": "synthesis", "question": first["question"], "judge_model_id": judge_model_id,
                         "chosen_model": chosen.model,
                         "rejected_model": rejected.model, "chosen_temperature": chosen.temperature,
                         "rejected_temperature": rejected.temperature, "chosen_ratings": chosen.ratings,
                         "rejected_ratings": rejected.ratings, "rejected_strategy": s.rejected_strategy,
                         "binarize_seed": seed, "ratings_md5": ratings.md5, **(extra_lineage or {})}))
    path = write_rows(Path(out_dir) / "pairs.jsonl", pairs)
    return SynthesisPairsResult(pairs=Artifact.of(path), n_pairs=len(pairs), n_prompts=len(by_prompt),
                                prompts_with_a_pair=len({p.problem_id for p in pairs}), seconds=elapsed(start))


def add_rationales(config: PipelineConfig, model_dir: Checkpoint, binarized: SynthesisPairsResult,
                   out_dir: Path) -> SynthesisPairsResult:
    """``pairs-rationale.jsonl``: the judge model says why chosen beats rejected (x_rat shows both,
    §4); rows keep x_rat so the trainer scores the rationale under exactly the prompt it was written for."""
    start = time.perf_counter()
    pairs = read_rows(binarized.pairs.file, PairRow)
    model = load_checkpoint(model_dir.dir, merge=True)
    prompts = [rationale_prompt(model.tokenizer, p.prompt, p.chosen, p.rejected) for p in pairs]
    with progress_bar("synthesis: rationales", len(prompts)) as advance:
        outs = generate_completions(model.model, model.tokenizer, prompts, k=1, do_sample=False,
                                    max_new_tokens=config.synthesis.rationale_max_new_tokens,
                                    batch_size=config.judge.batch_size, on_batch=advance)
    enriched = [p.model_copy(update={"rationale": o.text or None, "rationale_prompt": x,
                                     "lineage": {**p.lineage, "rationale_model": model.model_id,
                                                 "binarized_md5": binarized.pairs.md5}})
                for p, o, x in zip(pairs, outs, prompts, strict=True)]
    path = write_rows(Path(out_dir) / "pairs-rationale.jsonl", enriched)
    return binarized.model_copy(update={"pairs": Artifact.of(path),
                                        "n_with_rationale": sum(bool(p.rationale) for p in enriched),
                                        "seconds": binarized.seconds + elapsed(start)})


def position_bias(config: PipelineConfig, judge: Checkpoint, pairs: Artifact) -> PositionBiasResult:
    """The judge model asked about the first ``synthesis.position_bias_pairs`` pairs both ways round:
    how often its pick flips with the order, and how often it picks the first position."""
    start = time.perf_counter()
    rows = read_rows(pairs.file, PairRow)[: config.synthesis.position_bias_pairs]
    model = load_checkpoint(judge.dir, merge=True)
    bias = model_position_bias(model.model, model.tokenizer, rows, config.data.system_prompt, config.judge.batch_size)
    return PositionBiasResult(flip_rate=bias["flip_rate"], first_position_rate=bias["first_position_rate"],
                              probed_pairs=len(rows), seconds=elapsed(start))
