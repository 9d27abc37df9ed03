"""UltraFeedback-style preference synthesis (ALGORITHMS.md §9), with tool-assisted judging.

A pool of policies (checkpoints × temperatures) answers each prompt; the judge rates every
completion on each aspect (instruction-following, truthfulness, honesty, helpfulness by default)
with a rationale — its tools (equation checker, verifier) run first, as in the judge loop; the
ratings are binarized: chosen = highest mean rating, ties dropped, rejected by
``rejected_strategy`` (random_lower | lowest | all_pairs). Optionally the judge model explains why
chosen beats rejected, and the rows become rationale-enriched DPO rows (§4).

Stages are plain functions (files in, files out); ``flows/synthesize.py`` and the synthesized
round wrap them in tasks.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from alignflow.components.platform.atomic import write_jsonl_atomic
from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import PairRow, ProblemRow
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.judges.judge import JudgeInput
from alignflow.components.judges.loop import make_judge
from alignflow.components.platform.lineage import lineage_record
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.platform.progress import progress_bar
from alignflow.components.data.prompts import rationale_prompt, render_prompt
from alignflow.components.stages.steps import round_prompts
from alignflow.components.platform.versioning import content_md5

StepResult = dict[str, Any]


def _timed(start: float) -> float:
    return round(time.perf_counter() - start, 3)


@dataclass(frozen=True)
class PoolMember:
    checkpoint: str  # a resolved checkpoint directory
    label: str  # what the config called it: current, sft, base, or the path
    temperature: float


@dataclass(frozen=True)
class Rated:
    """One completion with its per-aspect ratings (None: that judgment was malformed)."""

    index: int
    text: str
    model: str
    temperature: float
    ratings: dict[str, int | None]

    @property
    def mean(self) -> float | None:
        scores = [s for s in self.ratings.values() if s is not None]
        return statistics.fmean(scores) if scores else None


Strategy = Literal["random_lower", "lowest", "all_pairs"]


def binarize(completions: list[Rated], strategy: Strategy, rng: random.Random, max_pairs: int
             ) -> list[tuple[Rated, Rated]]:
    """(chosen, rejected) pairs of one prompt's completions. A completion with no well-formed rating
    takes no part; equal means never make a pair; chosen is a highest-mean completion (the first of
    equals, deterministic) except under all_pairs, which takes every strictly ordered pair, largest
    margin first, up to ``max_pairs``."""
    rated = [c for c in completions if c.mean is not None]
    if len(rated) < 2:
        return []
    if strategy == "all_pairs":
        ordered = [(a, b) for a in rated for b in rated if a.mean > b.mean]
        ordered.sort(key=lambda ab: (-(ab[0].mean - ab[1].mean), ab[0].index, ab[1].index))
        return ordered[:max_pairs]
    best = max(rated, key=lambda c: (c.mean, -c.index))
    lower = [c for c in rated if c.mean < best.mean]
    if not lower:
        return []  # every completion ties with the best
    if strategy == "lowest":
        return [(best, min(lower, key=lambda c: (c.mean, c.index)))]
    return [(best, rng.choice(lower))]


def resolve_pool(config: PipelineConfig, named: dict[str, str]) -> list[PoolMember]:
    """``synthesis.policies`` → checkpoint directories: names from ``named`` (current, sft, base),
    anything else must be a checkpoint directory."""
    pool = []
    for member in config.synthesis.policies:
        path = named.get(member.checkpoint, member.checkpoint)
        if not Path(path).is_dir():
            known = ", ".join(sorted(named)) or "none here"
            raise ValueError(f"synthesis.policies: '{member.checkpoint}' is neither a known name ({known}) "
                             f"nor a checkpoint directory")
        pool.append(PoolMember(str(path), member.checkpoint, member.temperature))
    return pool


def sample_pool(config: PipelineConfig, pool: list[PoolMember], problems_path: Path, round_index: int,
                out_dir: Path) -> StepResult:
    """Every pool member answers the round's prompts ``samples_per_policy`` times each."""
    start = time.perf_counter()
    s = config.synthesis
    problems = round_prompts(read_rows(problems_path, ProblemRow), round_index, config.sampling.prompts_per_round)
    seed = config.seed * 1000 + round_index
    rows = []
    for m, member in enumerate(pool):
        policy = load_checkpoint(Path(member.checkpoint), merge=True)
        prompts = [render_prompt(policy.tokenizer, p.question, config.data.system_prompt) for p in problems]
        with progress_bar(f"synthesis: {member.label} @ T={member.temperature}", len(prompts)) as advance:
            outs = generate_completions(policy.model, policy.tokenizer, prompts, k=s.samples_per_policy, do_sample=True,
                                        temperature=member.temperature, max_new_tokens=config.sampling.max_new_tokens,
                                        batch_size=config.sampling.batch_size, seed=seed + 100 * m, on_batch=advance)
        for out in outs:
            p = problems[out.prompt_index]
            rows.append({"problem_id": p.id, "question": p.question, "answer": p.answer,
                         "prompt": prompts[out.prompt_index], "completion": out.text, "n_tokens": out.n_tokens,
                         "model": policy.model_id, "pool_label": member.label, "temperature": member.temperature})
        del policy
    path = write_jsonl_atomic(Path(out_dir) / "pool-completions.jsonl", rows)
    return {"path": str(path), "n_completions": len(rows), "n_prompts": len(problems),
            "pool": [asdict(m) for m in pool], "problems": str(problems_path), "seed": seed,
            "generated_tokens": sum(r["n_tokens"] for r in rows), "seconds": _timed(start)}


def rate_completions(config: PipelineConfig, judge_dir: Path, completions_path: Path, out_dir: Path,
                     cache_path: Path | None) -> StepResult:
    """The judge's rating of each completion on each aspect (greedy, cached), with rationale and tool calls."""
    start = time.perf_counter()
    rows = _read_jsonl(completions_path)
    judge = make_judge(config, load_checkpoint(Path(judge_dir), merge=True), cache_path)
    aspects = config.synthesis.aspects
    items = [JudgeInput(context=r["question"], response=r["completion"], rubric=rubric, gold=r["answer"])
             for r in rows for rubric in aspects.values()]
    with progress_bar(f"synthesis: judging {len(rows)} completions × {len(aspects)} aspects", len(items)) as advance:
        recorded = judge.judge(items, n=1, on_batch=advance)
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
    return {"path": str(path), "judge_model_id": judge.model_id, "template_hash": judge.template.hash,
            "n_judgments": len(flat), "malformed_rate": sum(a["status"] == "malformed" for a in flat) / max(1, len(flat)),
            "cache_hits": sum(s.cached for samples in recorded for s in samples), "seconds": _timed(start)}


def binarize_ratings(config: PipelineConfig, ratings_path: Path, judge_model_id: str, seed: int, out_dir: Path,
                     extra_lineage: dict[str, Any] | None = None) -> StepResult:
    start = time.perf_counter()
    s = config.synthesis
    rows = _read_jsonl(ratings_path)
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
                score_chosen=chosen.mean, score_rejected=rejected.mean,
                lineage={"source": "synthesis", "question": first["question"], "judge_model_id": judge_model_id,
                         "chosen_model": chosen.model,
                         "rejected_model": rejected.model, "chosen_temperature": chosen.temperature,
                         "rejected_temperature": rejected.temperature, "chosen_ratings": chosen.ratings,
                         "rejected_ratings": rejected.ratings, "rejected_strategy": s.rejected_strategy,
                         "binarize_seed": seed, "ratings_md5": content_md5(Path(ratings_path)),
                         **(extra_lineage or {})}))
    path = write_rows(Path(out_dir) / "pairs.jsonl", pairs)
    return {"path": str(path), "n_pairs": len(pairs), "n_prompts": len(by_prompt),
            "prompts_with_a_pair": len({p.problem_id for p in pairs}), "seconds": _timed(start)}


def add_rationales(config: PipelineConfig, model_dir: Path, pairs_path: Path, out_dir: Path) -> StepResult:
    """Ask the judge model why chosen beats rejected (x_rat shows both, §4); rows keep x_rat so the
    trainer scores the rationale under exactly the prompt it was written for."""
    start = time.perf_counter()
    pairs = read_rows(pairs_path, PairRow)
    model = load_checkpoint(Path(model_dir), merge=True)
    prompts = [rationale_prompt(model.tokenizer, p.prompt, p.chosen, p.rejected) for p in pairs]
    with progress_bar("synthesis: rationales", len(prompts)) as advance:
        outs = generate_completions(model.model, model.tokenizer, prompts, k=1, do_sample=False,
                                    max_new_tokens=config.synthesis.rationale_max_new_tokens,
                                    batch_size=config.judge.batch_size, on_batch=advance)
    enriched = [p.model_copy(update={"rationale": o.text or None, "rationale_prompt": x,
                                     "lineage": {**p.lineage, "rationale_model": model.model_id}})
                for p, o, x in zip(pairs, outs, prompts, strict=True)]
    path = write_rows(Path(out_dir) / "pairs-rationale.jsonl", enriched)
    return {"path": str(path), "n_pairs": len(enriched), "n_with_rationale": sum(bool(p.rationale) for p in enriched),
            "rationale_model": model.model_id, "lineage": lineage_record(
                "rationales", config.content_hash(), config.seed, model.model_id,
                {"pairs": str(pairs_path), "pairs_md5": content_md5(pairs_path)}),
            "seconds": _timed(start)}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: row {number}: not JSON ({err.msg})") from None
    return rows
