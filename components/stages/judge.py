"""The self-rationalization judge loop's stages (ALGORITHMS.md §3): files in, a typed result back —
the ``judge_loop`` flow wraps each in a task.

1. ``build_judge_data``: labelled (context, response, rubric, gold score, gold judgment) rows from
   the verifiable task — perturbed worked solutions and the SFT policy's own samples — split into
   train and held-out by problem;
2. ``train_seed_judge``: SFT the base model on (judge prompt → gold rationale + score);
3. per iteration: ``sample_judgments`` (N per training input, temperature > 0), ``curate_judge_pairs``
   (from the judge's own judgments, rules from ``judge.curation``), ``train_judge`` (DPO against
   the previous judge or the seed), ``evaluate_judge`` (greedy, on the held-out rows).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from alignflow.components.config import PipelineConfig
from alignflow.components.data.arithmetic import problem_of
from alignflow.components.data.io import read_jsonl, read_rows, write_rows
from alignflow.components.data.schemas import JudgeRow, PairRow
from alignflow.components.judges.curation import CurationRules, judge_pair_rows
from alignflow.components.judges.judge import JudgeInput, judge_from_config
from alignflow.components.judges.labelled import labelled_rows
from alignflow.components.judges.metrics import judge_metrics
from alignflow.components.judges.parsing import Judgment
from alignflow.components.modeling.checkpoints import load_checkpoint, save_checkpoint
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.platform.atomic import write_json_atomic, write_jsonl_atomic
from alignflow.components.platform.progress import progress_bar
from alignflow.components.stages.common import (
    StepHook,
    base_path_of,
    checkpoint_metadata,
    elapsed,
    read_examples,
    render,
    report_fit,
    stage_model_id,
    trainable_policy,
    training_progress,
)
from alignflow.components.stages.reference import cached_reference_logprobs
from alignflow.components.stages.results import (
    Artifact,
    Checkpoint,
    EvalResult,
    JudgeDataResult,
    JudgePairsResult,
    JudgeTrainResult,
    JudgmentsResult,
    SFTResult,
)
from alignflow.components.stages.train import preference_examples
from alignflow.components.trainers.preference import train_preference
from alignflow.components.trainers.sft import train_sft


def judge_input(row: JudgeRow) -> JudgeInput:
    return JudgeInput(context=row.context, response=row.response, rubric=row.rubric, gold=row.answer)


def build_judge_data(config: PipelineConfig, policy: Checkpoint, train: Artifact, out_dir: Path) -> JudgeDataResult:
    """``judge-train.jsonl`` and ``judge-heldout.jsonl`` (JudgeRow) from the first ``judge.n_problems``
    training problems.

    Raises:
        ValueError: a split came out empty (names the settings to change).
    """
    start = time.perf_counter()
    j = config.judge
    examples = read_examples(train)[: j.n_problems]
    problems = [problem_of(e.columns, e.id, e.completion if isinstance(e.completion, str) else None)
                for e in examples]
    sampled: dict[str, list[str]] = {}
    policy_id = None
    if j.sampled_per_problem:
        loaded = load_checkpoint(policy.dir, merge=True)
        policy_id = loaded.model_id
        prompts = [render(config, loaded.tokenizer, e) for e in examples]
        with progress_bar("judge data: policy samples", len(prompts)) as advance:
            outs = generate_completions(loaded.model, loaded.tokenizer, prompts, k=j.sampled_per_problem,
                                        do_sample=True, temperature=0.7, max_new_tokens=config.sampling.max_new_tokens,
                                        batch_size=config.sampling.batch_size, seed=config.seed, on_batch=advance)
        for out in outs:
            sampled.setdefault(problems[out.prompt_index].id, []).append(out.text)
    rows = labelled_rows(problems, sampled, seed=config.seed, heldout_fraction=j.heldout_fraction)
    train_rows = [r for r in rows if r.split == "train"]
    heldout = [r for r in rows if r.split == "heldout"]
    if not train_rows or not heldout:
        raise ValueError(f"judge data from {train.path}: {len(train_rows)} train and {len(heldout)} held-out rows; "
                         f"raise judge.n_problems or move judge.heldout_fraction away from 0/1")
    out_dir = Path(out_dir)
    grades = {f"gold_{g}": sum(r.gold_score == g for r in rows) for g in sorted({r.gold_score for r in rows})}
    return JudgeDataResult(train=Artifact.of(write_rows(out_dir / "judge-train.jsonl", train_rows)),
                           heldout=Artifact.of(write_rows(out_dir / "judge-heldout.jsonl", heldout)),
                           counts={"n_train": len(train_rows), "n_heldout": len(heldout), **grades},
                           policy_model_id=policy_id, seconds=elapsed(start))


def _judge_metadata(config: PipelineConfig, model_id: str, parent_id: str, produced_by: str, base_path: str,
                    inputs: dict[str, Any], seed: int) -> dict[str, Any]:
    return checkpoint_metadata(config.judge_hash(), model_id, parent_id, produced_by, base_path, inputs, seed,
                               role="judge")


def train_seed_judge(config: PipelineConfig, base: Checkpoint, train: Artifact, out_dir: Path,
                     on_step: StepHook | None = None) -> SFTResult:
    """SFT of the base model on (judge prompt with its tool results → gold judgment + EOS)."""
    start = time.perf_counter()
    rows = read_rows(train.file, JudgeRow)
    model = trainable_policy(config, base.dir)
    judge = judge_from_config(config, model)
    prompts = [judge.prompt_for(judge_input(r), judge.tool_calls(judge_input(r))) for r in rows]
    targets = [(r.gold_judgment or "") + cast(str, model.tokenizer.eos_token) for r in rows]
    sft = config.judge.sft
    total = len(range(0, len(rows), sft.batch_size)) * sft.epochs
    with training_progress("judge SFT", total, on_step, metric_prefix="judge_") as hook:
        result = train_sft(model, prompts, targets, sft, seed=config.seed, on_step=hook)
    model_id = stage_model_id("judge-seed", config.judge_hash(), __name__)
    save_checkpoint(model, out_dir, _judge_metadata(config, model_id, model.model_id, "judge-sft", base.path,
                                                    {"judge_train": train.ref()}, config.seed))
    fit = report_fit(result.fit, train.path, "judge.sft", sft.max_length, sft.max_truncation_rate_warning)
    return SFTResult(checkpoint=Checkpoint(path=str(out_dir), model_id=model_id), steps=result.steps,
                     first_loss=result.first_loss, final_loss=result.final_loss, fit=fit, seconds=elapsed(start))


def _judgment_record(j: Judgment, cached: bool) -> dict[str, Any]:
    return {**asdict(j), "cached": cached}


def sample_judgments(config: PipelineConfig, judge: Checkpoint, rows_file: Artifact, iteration: int, out_dir: Path,
                     cache_path: Path | None) -> JudgmentsResult:
    """``judgments.jsonl``: N judgments per training input from the current judge, with its tool calls."""
    start = time.perf_counter()
    j = config.judge
    rows = read_rows(rows_file.file, JudgeRow)
    model = judge_from_config(config, load_checkpoint(judge.dir, merge=True), cache_path)
    seed = config.seed * 1000 + iteration
    with progress_bar(f"judge iteration {iteration}: sampling {j.n_samples} judgments per input",
                      len(rows)) as advance:
        recorded = model.judge([judge_input(r) for r in rows], n=j.n_samples, temperature=j.temperature, seed=seed,
                               on_batch=advance)
    lines = []
    for row, samples in zip(rows, recorded, strict=True):
        lines.append({"problem_id": row.problem_id, "gold": row.gold_score, "prompt": model.prompt_for(
            judge_input(row), samples[0].tool_calls), "tool_calls": [asdict(c) for c in samples[0].tool_calls],
            "judgments": [_judgment_record(s.judgment, s.cached) for s in samples]})
    path = write_jsonl_atomic(Path(out_dir) / "judgments.jsonl", lines)
    flat = [s for samples in recorded for s in samples]
    return JudgmentsResult(judgments=Artifact.of(path), judge_model_id=model.model_id,
                           template_hash=model.template.hash, seed=seed, n_inputs=len(rows), n_judgments=len(flat),
                           malformed_rate=sum(s.judgment.status == "malformed" for s in flat) / max(1, len(flat)),
                           cache_hits=sum(s.cached for s in flat), seconds=elapsed(start))


def curate_judge_pairs(config: PipelineConfig, judgments: Artifact, judge_model_id: str, iteration: int,
                       seed: int, out_dir: Path) -> JudgePairsResult:
    """``judge-pairs.jsonl``: chosen/rejected judgments of one input, by ``judge.curation``'s rules."""
    start = time.perf_counter()
    lines = [line for _, line in read_jsonl(judgments.file)]
    inputs = [(line["problem_id"], line["prompt"], line["gold"]) for line in lines]
    parsed = [[Judgment(**{k: v for k, v in j.items() if k != "cached"}) for j in line["judgments"]]
              for line in lines]
    rules = CurationRules(**config.judge.curation.model_dump())
    lineage = {"source": "judge-self", "judge_model_id": judge_model_id, "iteration": iteration,
               "sampling_seed": seed, "temperature": config.judge.temperature, "judgments_md5": judgments.md5}
    pairs = judge_pair_rows(inputs, parsed, rules, seed, lineage)
    path = write_rows(Path(out_dir) / "judge-pairs.jsonl", pairs)
    return JudgePairsResult(pairs=Artifact.of(path), n_pairs=len(pairs), n_inputs=len(lines), seconds=elapsed(start))


def train_judge(config: PipelineConfig, judge: Checkpoint, reference: Checkpoint, pairs: Artifact, iteration: int,
                out_dir: Path, ref_cache_dir: Path, on_step: StepHook | None = None) -> JudgeTrainResult:
    """DPO the judge on its curated pairs; reference log-probs once, from the reference judge (cached).

    Raises:
        ValueError: the pair file is empty.
    """
    start = time.perf_counter()
    rows = read_rows(pairs.file, PairRow)
    if not rows:
        raise ValueError(f"{pairs.path}: no judge pairs to train on")
    p = config.judge.preference
    model = trainable_policy(config, judge.dir)
    examples = preference_examples(rows, cast(str, model.tokenizer.eos_token))
    ref_logps, _ = cached_reference_logprobs(reference, examples, pairs, p, ref_cache_dir, config.judge_hash(),
                                             config.seed, f"judge iteration {iteration}")
    parent_id = model.model_id
    steps = len(range(0, len(examples), p.batch_size)) * p.epochs
    with training_progress(f"judge iteration {iteration}: DPO", steps, on_step) as hook:
        result = train_preference(model, examples, ref_logps, p, seed=config.seed + iteration, on_step=hook)
    model_id = stage_model_id(f"judge-t{iteration}", config.judge_hash(), __name__)
    save_checkpoint(model, out_dir, _judge_metadata(config, model_id, parent_id, f"judge-dpo:{p.loss_type}",
                                                    base_path_of(judge.dir),
                                                    {"pairs": pairs.ref(), "reference": reference.model_id},
                                                    config.seed + iteration))
    fit = report_fit(result.fit, pairs.path, "judge.preference", p.max_length, p.max_truncation_rate_warning)
    return JudgeTrainResult(checkpoint=Checkpoint(path=str(out_dir), model_id=model_id), n_pairs=len(rows),
                            steps=result.steps, final_metrics=result.history[-1],
                            reference_model_id=reference.model_id, fit=fit, seconds=elapsed(start))


def evaluate_judge(config: PipelineConfig, judge: Checkpoint, heldout: Artifact, out_dir: Path,
                   cache_path: Path | None) -> EvalResult:
    """Greedy judgments of the held-out rows: exact-score accuracy, MAE, pairwise agreement, malformed rate."""
    start = time.perf_counter()
    rows = read_rows(heldout.file, JudgeRow)
    model = judge_from_config(config, load_checkpoint(judge.dir, merge=True), cache_path)
    with progress_bar("judge eval", len(rows)) as advance:
        recorded = model.judge([judge_input(r) for r in rows], n=1, on_batch=advance)
    predicted = [samples[0].judgment.score for samples in recorded]
    metrics = judge_metrics([r.gold_score for r in rows], predicted, [r.problem_id for r in rows])
    out_dir = Path(out_dir)
    predictions = write_jsonl_atomic(out_dir / "judge-predictions.jsonl", [
        {"problem_id": r.problem_id, "source": r.source, "gold": r.gold_score, **asdict(s[0].judgment),
         "tool_calls": [asdict(c) for c in s[0].tool_calls]} for r, s in zip(rows, recorded, strict=True)])
    metrics_file = write_json_atomic(out_dir / "judge-metrics.json", {"model_id": model.model_id, "metrics": metrics,
                                                                       "heldout_md5": heldout.md5})
    return EvalResult(metrics=metrics, predictions=Artifact.of(predictions), metrics_file=Artifact.of(metrics_file),
                      model_id=model.model_id, seconds=elapsed(start))
