"""The self-rationalization judge loop's stages (ALGORITHMS.md §3) as plain functions: files in,
files out, a result dict back — the ``judge_loop`` flow wraps each in a task.

1. ``build_judge_data``: labelled (context, response, rubric, gold score, gold judgment) rows from
   the verifiable task — perturbed worked solutions and the SFT policy's own samples — split into
   train and held-out by problem;
2. ``train_seed_judge``: SFT the base model on (judge prompt → gold rationale + score);
3. per iteration: ``sample_judgments`` (N per training input, temperature > 0), ``curate_judge_pairs``
   (from the judge's own judgments, rules from ``judge.curation``), ``train_judge`` (DPO against
   the previous judge or the seed), ``evaluate_judge`` (greedy, on the held-out rows).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from alignflow.components.platform.atomic import write_json_atomic, write_jsonl_atomic
from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import JudgeRow, PairRow, ProblemRow
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.judges.cache import JudgmentCache
from alignflow.components.judges.curation import CurationRules, judge_pair_rows
from alignflow.components.judges.judge import Judge, JudgeInput
from alignflow.components.judges.labelled import labelled_rows
from alignflow.components.judges.metrics import judge_metrics
from alignflow.components.judges.parsing import Judgment
from alignflow.components.platform.lineage import lineage_record
from alignflow.components.modeling.checkpoints import LoadedModel, attach_lora, is_adapter, load_checkpoint, read_metadata, save_checkpoint
from alignflow.components.platform.progress import progress_bar
from alignflow.components.data.prompts import render_prompt
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference
from alignflow.components.trainers.sft import train_sft
from alignflow.components.platform.versioning import content_md5

StepResult = dict[str, Any]


def _timed(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def judge_input(row: JudgeRow) -> JudgeInput:
    return JudgeInput(context=row.context, response=row.response, rubric=row.rubric, gold=row.answer)


def make_judge(config: PipelineConfig, loaded: LoadedModel, cache_path: Path | None = None) -> Judge:
    j = config.judge
    return Judge(loaded.model, loaded.tokenizer, loaded.model_id, cache=JudgmentCache(cache_path) if cache_path else None,
                 use_tools=j.use_tools, max_new_tokens=j.max_new_tokens, batch_size=j.batch_size,
                 system_prompt=config.data.system_prompt)


def judgment_cache_path(config: PipelineConfig) -> Path:
    """One cache per state directory, shared by every loop and round (the key holds the judge's id)."""
    return Path(config.state_dir) / "judgments.sqlite"


def build_judge_data(config: PipelineConfig, policy_dir: Path, train_path: Path, out_dir: Path) -> StepResult:
    start = time.perf_counter()
    j = config.judge
    problems = read_rows(train_path, ProblemRow)[: j.n_problems]
    sampled: dict[str, list[str]] = {}
    policy_id = None
    if j.sampled_per_problem:
        policy = load_checkpoint(policy_dir, merge=True)
        policy_id = policy.model_id
        prompts = [render_prompt(policy.tokenizer, p.question, config.data.system_prompt) for p in problems]
        with progress_bar("judge data: policy samples", len(prompts)) as advance:
            outs = generate_completions(policy.model, policy.tokenizer, prompts, k=j.sampled_per_problem,
                                        do_sample=True, temperature=0.7, max_new_tokens=config.sampling.max_new_tokens,
                                        batch_size=config.sampling.batch_size, seed=config.seed, on_batch=advance)
        for out in outs:
            sampled.setdefault(problems[out.prompt_index].id, []).append(out.text)
    rows = labelled_rows(problems, sampled, seed=config.seed, heldout_fraction=j.heldout_fraction)
    train = [r for r in rows if r.split == "train"]
    heldout = [r for r in rows if r.split == "heldout"]
    if not train or not heldout:
        raise ValueError(f"judge data from {train_path}: {len(train)} train and {len(heldout)} held-out rows; "
                         f"raise judge.n_problems or move judge.heldout_fraction away from 0/1")
    out_dir = Path(out_dir)
    paths = {"train": str(write_rows(out_dir / "judge-train.jsonl", train)),
             "heldout": str(write_rows(out_dir / "judge-heldout.jsonl", heldout))}
    grades = {f"judge_data/gold_{g}": sum(r.gold_score == g for r in rows) for g in sorted({r.gold_score for r in rows})}
    return {"paths": paths, "counts": {"train": len(train), "heldout": len(heldout), **grades},
            "policy_model_id": policy_id, "seconds": _timed(start)}


def _trainable(config: PipelineConfig, path: Path) -> LoadedModel:
    if is_adapter(path):
        return load_checkpoint(path, trainable=True)
    loaded = load_checkpoint(path, trainable=not config.lora.enabled)
    return attach_lora(loaded, config.lora, seed=config.seed) if config.lora.enabled else loaded


def _metadata(config: PipelineConfig, model_id: str, parent_id: str, produced_by: str, base_path: str,
              inputs: dict[str, str], seed: int) -> dict[str, Any]:
    return {"model_id": model_id, "base_path": base_path, "parent": parent_id, "role": "judge",
            **lineage_record(produced_by, config.judge_hash(), seed, parent_id, inputs)}


def train_seed_judge(config: PipelineConfig, base_dir: Path, train_path: Path, out_dir: Path,
                     on_step: Callable[[int, dict[str, float]], None] | None = None) -> StepResult:
    start = time.perf_counter()
    rows = read_rows(train_path, JudgeRow)
    model = _trainable(config, Path(base_dir))
    judge = make_judge(config, model)
    prompts = [judge.prompt_for(judge_input(r), judge.tool_calls(judge_input(r))) for r in rows]
    targets = [r.gold_judgment + model.tokenizer.eos_token for r in rows]
    sft = config.judge.sft
    with progress_bar("judge SFT", len(range(0, len(rows), sft.batch_size)) * sft.epochs) as advance:
        def hook(step: int, metrics: dict[str, float]) -> None:
            advance(1)
            if on_step:
                on_step(step, {f"judge_{k}": v for k, v in metrics.items()})
        result = train_sft(model, prompts, targets, sft, seed=config.seed, on_step=hook)
    model_id = f"judge-seed@{config.judge_hash()}"
    save_checkpoint(model, out_dir, _metadata(config, model_id, model.model_id, "judge-sft", str(base_dir),
                                              {"judge_train": str(train_path), "judge_train_md5": content_md5(train_path)},
                                              config.seed))
    return {"path": str(out_dir), "model_id": model_id, "steps": result.steps, "first_loss": result.first_loss,
            "final_loss": result.final_loss, "seconds": _timed(start)}


def _judgment_record(j: Judgment, cached: bool) -> dict[str, Any]:
    return {**asdict(j), "cached": cached}


def sample_judgments(config: PipelineConfig, judge_dir: Path, rows_path: Path, iteration: int, out_dir: Path,
                     cache_path: Path | None) -> StepResult:
    """N judgments per training input from the current judge, kept with their tool calls."""
    start = time.perf_counter()
    j = config.judge
    rows = read_rows(rows_path, JudgeRow)
    judge = make_judge(config, load_checkpoint(judge_dir, merge=True), cache_path)
    seed = config.seed * 1000 + iteration
    with progress_bar(f"judge iteration {iteration}: sampling {j.n_samples} judgments per input",
                      len(rows)) as advance:
        recorded = judge.judge([judge_input(r) for r in rows], n=j.n_samples, temperature=j.temperature, seed=seed,
                               on_batch=advance)
    lines = []
    for row, samples in zip(rows, recorded, strict=True):
        lines.append({"problem_id": row.problem_id, "gold": row.gold_score, "prompt": judge.prompt_for(
            judge_input(row), samples[0].tool_calls), "tool_calls": [asdict(c) for c in samples[0].tool_calls],
            "judgments": [_judgment_record(s.judgment, s.cached) for s in samples]})
    path = write_jsonl_atomic(Path(out_dir) / "judgments.jsonl", lines)
    flat = [s for samples in recorded for s in samples]
    return {"path": str(path), "judge_model_id": judge.model_id, "template_hash": judge.template.hash, "seed": seed,
            "n_inputs": len(rows), "n_judgments": len(flat),
            "malformed_rate": sum(s.judgment.status == "malformed" for s in flat) / max(1, len(flat)),
            "cache_hits": sum(s.cached for s in flat), "seconds": _timed(start)}


def curate_judge_pairs(config: PipelineConfig, judgments_path: Path, judge_model_id: str, iteration: int,
                       seed: int, out_dir: Path) -> StepResult:
    start = time.perf_counter()
    lines = [json.loads(line) for line in Path(judgments_path).read_text().splitlines() if line.strip()]
    inputs = [(line["problem_id"], line["prompt"], line["gold"]) for line in lines]
    judgments = [[Judgment(**{k: v for k, v in j.items() if k != "cached"}) for j in line["judgments"]]
                 for line in lines]
    rules = CurationRules(**config.judge.curation.model_dump())
    lineage = {"source": "judge-self", "judge_model_id": judge_model_id, "iteration": iteration,
               "sampling_seed": seed, "temperature": config.judge.temperature,
               "judgments_md5": content_md5(Path(judgments_path))}
    pairs = judge_pair_rows(inputs, judgments, rules, seed, lineage)
    path = write_rows(Path(out_dir) / "judge-pairs.jsonl", pairs)
    return {"path": str(path), "n_pairs": len(pairs), "n_inputs": len(lines), "seconds": _timed(start)}


def train_judge(config: PipelineConfig, judge_dir: Path, reference_dir: Path, pairs_path: Path, iteration: int,
                out_dir: Path, on_step: Callable[[int, dict[str, float]], None] | None = None) -> StepResult:
    """DPO the judge on its curated pairs; reference log-probs once, from the reference judge."""
    start = time.perf_counter()
    pairs = read_rows(pairs_path, PairRow)
    if not pairs:
        raise ValueError(f"{pairs_path}: no judge pairs to train on")
    p = config.judge.preference
    reference = load_checkpoint(reference_dir, merge=True)
    eos = reference.tokenizer.eos_token
    examples = [PreferenceExample(r.prompt, r.chosen + eos, r.rejected + eos) for r in pairs]
    with progress_bar(f"judge iteration {iteration}: reference log-probs", len(examples)) as advance:
        ref_logps = reference_logprobs(reference, examples, p, on_batch=advance)
    reference_id = reference.model_id
    del reference
    judge = _trainable(config, Path(judge_dir))
    parent_id = judge.model_id
    steps = len(range(0, len(examples), p.batch_size)) * p.epochs
    with progress_bar(f"judge iteration {iteration}: DPO", steps) as advance:
        def hook(step: int, metrics: dict[str, float]) -> None:
            advance(1)
            if on_step:
                on_step(step, metrics)
        result = train_preference(judge, examples, ref_logps, p, seed=config.seed + iteration, on_step=hook)
    model_id = f"judge-t{iteration}@{config.judge_hash()}"
    base_path = read_metadata(Path(judge_dir)).get("base_path") or str(judge_dir)
    save_checkpoint(judge, out_dir, _metadata(config, model_id, parent_id, f"judge-dpo:{p.loss_type}", base_path,
                                              {"pairs": str(pairs_path), "pairs_md5": content_md5(pairs_path),
                                               "reference": reference_id}, config.seed + iteration))
    return {"path": str(out_dir), "model_id": model_id, "n_pairs": len(pairs), "steps": result.steps,
            "final_metrics": result.history[-1], "reference_model_id": reference_id, "seconds": _timed(start)}


def evaluate_judge(config: PipelineConfig, judge_dir: Path, heldout_path: Path, out_dir: Path,
                   cache_path: Path | None) -> StepResult:
    """Greedy judgments of the held-out rows: exact-score accuracy, MAE, pairwise agreement."""
    start = time.perf_counter()
    rows = read_rows(heldout_path, JudgeRow)
    judge = make_judge(config, load_checkpoint(judge_dir, merge=True), cache_path)
    with progress_bar("judge eval", len(rows)) as advance:
        recorded = judge.judge([judge_input(r) for r in rows], n=1, on_batch=advance)
    predicted = [samples[0].judgment.score for samples in recorded]
    metrics = judge_metrics([r.gold_score for r in rows], predicted, [r.problem_id for r in rows])
    out_dir = Path(out_dir)
    predictions = write_jsonl_atomic(out_dir / "judge-predictions.jsonl", [
        {"problem_id": r.problem_id, "source": r.source, "gold": r.gold_score, **asdict(s[0].judgment),
         "tool_calls": [asdict(c) for c in s[0].tool_calls]} for r, s in zip(rows, recorded, strict=True)])
    metrics_file = write_json_atomic(out_dir / "judge-metrics.json", {"model_id": judge.model_id, "metrics": metrics,
                                                                       "heldout_md5": content_md5(heldout_path)})
    return {"metrics": metrics, "predictions": str(predictions), "metrics_file": str(metrics_file),
            "model_id": judge.model_id, "seconds": _timed(start)}
