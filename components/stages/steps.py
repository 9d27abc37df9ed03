"""The pipeline's stages as plain functions: files in, files out, a result dict back.

Prefect tasks wrap these (adding retries, caching, MLflow child runs and DVC tracking) and the
CLI calls them directly for ``dvc repro``. Each stage writes its outputs atomically into its
own directory, so a crash leaves nothing half-written and a re-run simply redoes the stage.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import torch

from alignflow.components.platform.atomic import write_bytes_atomic, write_json_atomic, write_jsonl_atomic
from alignflow.components.config import PipelineConfig
from alignflow.components.data.arithmetic import generate_dataset
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import CompletionRow, PairRow, ProblemRow
from alignflow.components.evaluation.policy import evaluate_policy, kl_estimate
from alignflow.components.platform.distributed import check_local_ranks, current_world, torchrun_command
from alignflow.components.platform.faults import kill_at_train_step
from alignflow.components.modeling.generation import Completion, generate_completions
from alignflow.components.platform.lineage import lineage_record
from alignflow.components.collection.mcts.pairs import step_pair_rows
from alignflow.components.collection.mcts.policy import StepPolicy
from alignflow.components.collection.mcts.render import render_tree_html
from alignflow.components.collection.mcts.search import SearchProblem, search
from alignflow.components.collection.mcts.tree import number_nodes, to_dict, walk
from alignflow.components.modeling.checkpoints import (LoadedModel, attach_lora, is_adapter, load_checkpoint, materialize_base,
                               load_tokenizer, read_metadata, save_checkpoint)
from alignflow.components.collection.pairs import build_pairs
from alignflow.components.collection.strength import apply_strength, ensemble_differences, strength_statistics, train_ensemble
from alignflow.components.platform.progress import progress_bar
from alignflow.components.data.prompts import render_prompt
from alignflow.components.trainers.resume import TrainingCheckpointer
from alignflow.components.modeling.reward_model import RewardModel
from alignflow.components.scoring.verifiers import SCORER_ID, score_completions
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference
from alignflow.components.trainers.reward import RewardPair
from alignflow.components.trainers.sft import train_sft
from alignflow.components.platform.versioning import content_md5

StepResult = dict[str, Any]

logger = logging.getLogger("alignflow.steps")


def _timed(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def prepare_data(config: PipelineConfig, out_dir: Path) -> StepResult:
    start = time.perf_counter()
    d = config.data
    splits = generate_dataset(d.seed, d.n_sft, d.n_train_prompts, d.n_eval, d.difficulties, d.max_operand)
    paths = {name: str(write_rows(Path(out_dir) / f"{name}.jsonl", rows)) for name, rows in splits.items()}
    return {"paths": paths, "counts": {k: len(v) for k, v in splits.items()}, "seconds": _timed(start)}


def prepare_base(config: PipelineConfig) -> StepResult:
    start = time.perf_counter()
    base = materialize_base(config.model, config.seed, config.state_dir)
    meta = read_metadata(base)
    return {"path": str(base), "model_id": meta.get("model_id", f"local:{base}"), "seconds": _timed(start)}


def _trainable_policy(config: PipelineConfig, policy_dir: Path) -> LoadedModel:
    """Continue the policy's adapter if it has one; otherwise start a fresh LoRA (or train fully)."""
    if is_adapter(policy_dir):
        return load_checkpoint(policy_dir, trainable=True)
    loaded = load_checkpoint(policy_dir, trainable=not config.lora.enabled)
    return attach_lora(loaded, config.lora, seed=config.seed) if config.lora.enabled else loaded


def _base_path_of(policy_dir: Path) -> str:
    return read_metadata(policy_dir).get("base_path") or str(policy_dir)


def _checkpoint_metadata(config: PipelineConfig, model_id: str, parent: LoadedModel | str, produced_by: str,
                         base_path: str, inputs: dict[str, str], seed: int) -> dict[str, Any]:
    parent_id = parent.model_id if isinstance(parent, LoadedModel) else parent
    return {"model_id": model_id, "base_path": base_path, "parent": parent_id,
            **lineage_record(produced_by, config.content_hash(), seed, parent_id, inputs)}


def run_sft(config: PipelineConfig, base_dir: Path, sft_path: Path, out_dir: Path,
            on_step=None) -> StepResult:
    start = time.perf_counter()
    rows = read_rows(sft_path, ProblemRow)
    policy = _trainable_policy(config, base_dir)
    parent_id = policy.model_id
    tok = policy.tokenizer
    prompts = [render_prompt(tok, r.question, config.data.system_prompt) for r in rows]
    targets = [r.solution + tok.eos_token for r in rows]
    with progress_bar("SFT", len(range(0, len(rows), config.sft.batch_size)) * config.sft.epochs) as advance:
        def step_hook(step: int, metrics: dict[str, float]) -> None:
            advance(1)
            if on_step:
                on_step(step, metrics)
        checkpointer = resume_checkpointer(config, out_dir, parent_id, content_md5(sft_path))
        result = train_sft(policy, prompts, targets, config.sft, seed=config.seed, on_step=step_hook,
                           checkpointer=checkpointer, after_step=kill_at_train_step("sft"))
    model_id = f"sft@{config.content_hash()}"
    save_checkpoint(policy, out_dir, _checkpoint_metadata(config, model_id, parent_id, "sft", str(base_dir),
                                                         {"sft_data": str(sft_path)}, config.seed))
    checkpointer.clear()
    return {"path": str(out_dir), "model_id": model_id, "steps": result.steps, "first_loss": result.first_loss,
            "final_loss": result.final_loss, "resumed_from_step": result.resumed_from_step, "seconds": _timed(start)}


def resume_checkpointer(config: PipelineConfig, out_dir: Path, *inputs: str) -> TrainingCheckpointer:
    """The resume state of the training that writes ``out_dir`` lives beside it (not inside: the
    checkpoint directory only ever holds a finished checkpoint), fingerprinted by its inputs."""
    fingerprint = hashlib.sha256("\n".join([config.content_hash(), *inputs]).encode()).hexdigest()
    return TrainingCheckpointer(Path(out_dir).with_name(f"{Path(out_dir).name}.resume-state"),
                                config.resume_every_steps, fingerprint)


def evaluate(config: PipelineConfig, policy_dir: Path, reference_dir: Path | None, eval_path: Path,
             out_dir: Path, seed: int) -> StepResult:
    start = time.perf_counter()
    problems = read_rows(eval_path, ProblemRow)
    policy = load_checkpoint(policy_dir, merge=True)
    with progress_bar("eval", len(problems)) as advance:
        result = evaluate_policy(policy, problems, config.eval.batch_size, config.eval.max_new_tokens, advance,
                                 system_prompt=config.data.system_prompt)
    metrics = dict(result.metrics)
    if reference_dir is not None and config.eval.kl_samples > 0:
        reference = load_checkpoint(reference_dir, merge=True)
        metrics["eval/kl_to_reference"] = kl_estimate(policy, reference, problems, config.eval.kl_samples,
                                                      config.eval.max_new_tokens, config.eval.batch_size, seed,
                                                      system_prompt=config.data.system_prompt)
    out_dir = Path(out_dir)
    predictions_path = write_rows(out_dir / "predictions.jsonl", result.predictions)
    metrics_path = write_json_atomic(out_dir / "metrics.json", {"model_id": policy.model_id, "metrics": metrics})
    return {"metrics": metrics, "predictions": str(predictions_path), "metrics_file": str(metrics_path),
            "model_id": policy.model_id, "seconds": _timed(start)}


def round_prompts(train: list[ProblemRow], round_index: int, per_round: int) -> list[ProblemRow]:
    """Round r takes the next ``per_round`` training prompts, wrapping around: fresh prompts each round."""
    start = ((round_index - 1) * per_round) % len(train)
    return [train[(start + i) % len(train)] for i in range(min(per_round, len(train)))]


def sample(config: PipelineConfig, policy_dir: Path, train_path: Path, round_index: int, out_dir: Path) -> StepResult:
    start = time.perf_counter()
    s = config.sampling
    problems = round_prompts(read_rows(train_path, ProblemRow), round_index, s.prompts_per_round)
    policy = load_checkpoint(policy_dir, merge=True)
    prompts = [render_prompt(policy.tokenizer, p.question, config.data.system_prompt) for p in problems]
    seed = config.seed * 1000 + round_index
    with progress_bar(f"round {round_index}: sampling", len(prompts)) as advance:
        completions = generate_completions(policy.model, policy.tokenizer, prompts, k=s.k, do_sample=True,
                                           temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                           batch_size=s.batch_size, seed=seed, on_batch=advance)
    rows = [CompletionRow(problem_id=problems[c.prompt_index].id, question=problems[c.prompt_index].question,
                          answer=problems[c.prompt_index].answer, sample_index=c.sample_index, completion=c.text,
                          n_tokens=c.n_tokens) for c in completions]
    path = write_rows(Path(out_dir) / "samples.jsonl", rows)
    n_tokens = sum(r.n_tokens for r in rows)
    return {"path": str(path), "n_samples": len(rows), "n_prompts": len(problems), "generated_tokens": n_tokens,
            "policy_model_id": policy.model_id, "seed": seed, "seconds": _timed(start)}


def mcts_collect(config: PipelineConfig, policy_dir: Path, train_path: Path, round_index: int,
                 out_dir: Path) -> StepResult:
    """Search one step-level MCTS tree per round prompt with the current policy (ALGORITHMS.md §2);
    write the trees (JSON lines), the largest tree as an HTML page, and the step pairs."""
    start = time.perf_counter()
    m = config.mcts
    problems = round_prompts(read_rows(train_path, ProblemRow), round_index, config.sampling.prompts_per_round)
    policy = load_checkpoint(policy_dir, merge=True)
    tok = policy.tokenizer
    items = [SearchProblem(p.id, p.question, p.answer, render_prompt(tok, p.question, config.data.system_prompt),
                           p.solution) for p in problems]
    seed = config.seed * 1000 + round_index
    step_policy = StepPolicy(policy.model, tok, m.max_new_tokens_per_step, m.temperature, m.reuse_prefix_cache,
                             m.step_separator)
    per_tree = m.first_root_iterations_factor * m.n_iters + (m.depth_limit - 1) * m.n_iters  # at most
    with progress_bar(f"round {round_index}: MCTS over {len(items)} prompts", per_tree * len(items)) as advance:
        results = search(step_policy, items, m, seed, on_iteration=advance)
    search_seconds = _timed(start)
    out_dir = Path(out_dir)
    tree_lines = []
    for r in results:
        number_nodes(r.root)
        tree_lines.append({"problem_id": r.problem.problem_id, "path": [n.node_id for n in r.path],
                           "final_correct": r.final_correct, "kept": r.kept, "tree": to_dict(r.root)})
    trees_path = write_jsonl_atomic(out_dir / "trees.jsonl", tree_lines)
    largest = max(results, key=lambda r: len(walk(r.root)))
    html_path = out_dir / f"tree-r{round_index}.html"
    write_bytes_atomic(html_path, render_tree_html(largest.root, largest.path,
                                                   f"round {round_index}, problem {largest.problem.problem_id}: "
                                                   f"{largest.problem.question}").encode())
    lineage = {"policy_model_id": policy.model_id, "round": round_index, "search_seed": seed, "source": "mcts",
               "mcts": m.model_dump(mode="json")}
    pairs = step_pair_rows(results, tok.eos_token, m.conservative, lineage, m.step_separator)
    pairs_path = write_rows(out_dir / "pairs.jsonl", pairs)
    n_nodes = sum(len(walk(r.root)) - 1 for r in results)
    return {"path": str(pairs_path), "trees": str(trees_path), "tree_html": str(html_path), "n_pairs": len(pairs),
            "n_trees": len(results), "trees_kept": sum(r.kept for r in results), "n_nodes": n_nodes,
            "final_accuracy": sum(r.final_correct for r in results) / max(1, len(results)),
            "nodes_per_second": n_nodes / max(search_seconds, 1e-9), "search_seconds": search_seconds,
            "tokens_encoded": step_policy.expanded_tokens, "policy_model_id": policy.model_id, "seed": seed,
            "seconds": _timed(start)}


def score(samples_path: Path, out_dir: Path) -> StepResult:
    start = time.perf_counter()
    samples = read_rows(samples_path, CompletionRow)
    problems = {}
    completions = []
    for row in samples:
        problems.setdefault(row.problem_id, ProblemRow(id=row.problem_id, question=row.question, solution="-",
                                                       answer=row.answer, difficulty=1, template="-"))
        completions.append(row)
    order = list(problems)
    scored = score_completions([problems[i] for i in order], [
        Completion(prompt_index=order.index(r.problem_id), sample_index=r.sample_index, text=r.completion,
                   n_tokens=r.n_tokens) for r in completions])
    path = write_rows(Path(out_dir) / "scored.jsonl", scored)
    accuracy = sum(r.correct for r in scored) / max(1, len(scored))
    solved = len({r.problem_id for r in scored if r.correct})
    return {"path": str(path), "sample_accuracy": accuracy, "prompts_with_a_correct_sample": solved,
            "scorer": SCORER_ID, "seconds": _timed(start)}


def make_pairs(config: PipelineConfig, scored_path: Path, policy_model_id: str, round_index: int, seed: int,
               out_dir: Path) -> StepResult:
    start = time.perf_counter()
    scored = read_rows(scored_path, CompletionRow)
    tokenizer = load_tokenizer(materialize_base(config.model, config.seed, config.state_dir))
    prompts = {r.problem_id: render_prompt(tokenizer, r.question, config.data.system_prompt) for r in scored}
    lineage = {"source": "verifier", "policy_model_id": policy_model_id, "scorer": SCORER_ID, "round": round_index,
               "sampling_seed": seed,
               "temperature": config.sampling.temperature, "top_p": config.sampling.top_p}
    pairs = build_pairs(scored, prompts, config.pairs.strategy, config.pairs.max_pairs_per_prompt, seed, lineage)
    path = write_rows(Path(out_dir) / "pairs.jsonl", pairs)
    return {"path": str(path), "n_pairs": len(pairs), "seconds": _timed(start)}


def preference_strength(config: PipelineConfig, backbone_dir: Path, pairs_path: Path, round_index: int,
                        out_dir: Path) -> StepResult:
    """Score the round's pairs with an ensemble of reward models and write a curated copy.

    M reward models (the reference model's backbone, as InstructGPT starts its reward model from
    the SFT model, + the configured head, one seed each, fully trained) are trained
    on the round's pairs; μ̂/σ̂ of r_m(chosen) − r_m(rejected) and the ``strength_mode`` decision
    (flip / smooth / adaptive margin) go into ``pairs-strength.jsonl``. The original pair file
    stays as it was: it is versioned, and its hash keys the round's caches."""
    start = time.perf_counter()
    r = config.reward
    pairs = read_rows(pairs_path, PairRow)
    if not pairs:
        raise ValueError(f"{pairs_path}: no pairs to score with the reward ensemble")
    loaded = load_checkpoint(backbone_dir, merge=True)  # an adapter is folded in: members train all weights
    backbone_id, tokenizer = loaded.model_id, loaded.tokenizer
    eos = tokenizer.eos_token
    reward_pairs = [RewardPair(p.prompt, p.chosen + eos, p.rejected + eos) for p in pairs]
    seeds = [config.seed + 1000 * round_index + m for m in range(r.ensemble_size)]

    def make_model(seed: int) -> RewardModel:
        torch.manual_seed(seed)  # same backbone for every member; its own head init and data order
        backbone = copy.deepcopy(loaded.model).requires_grad_(True)
        return RewardModel(backbone, head=r.head, gpm_k=r.gpm_k, n_attributes=r.n_attributes)

    with progress_bar(f"round {round_index}: reward ensemble ({r.ensemble_size} models)", 1) as advance:
        models = train_ensemble(make_model, tokenizer, reward_pairs, r, seeds)
        differences = ensemble_differences(models, tokenizer, reward_pairs, r)
        advance(1)
    mean, std = strength_statistics(differences)
    lineage = lineage_record("preference-strength", config.content_hash(), config.seed, parent_model=backbone_id,
                             inputs={"pairs": str(pairs_path), "pairs_md5": content_md5(pairs_path)},
                             ensemble_seeds=seeds, reward_loss=r.loss, strength_mode=r.strength_mode)
    annotated = apply_strength(pairs, mean, std, r.strength_mode, r.strength_threshold, r.smooth_epsilon, lineage)
    path = write_rows(Path(out_dir) / "pairs-strength.jsonl", annotated)
    return {"path": str(path), "n_pairs": len(annotated), "n_flipped": sum(a.flipped != p.flipped for a, p in
                                                                            zip(annotated, pairs, strict=True)),
            "n_smoothed": sum(a.label_smoothing is not None for a in annotated),
            "strength_mean": float(mean.mean()), "strength_std": float(std.mean()),
            "ensemble_agreement": float((mean > 0).double().mean()), "seconds": _timed(start)}


def preference_examples(pairs: list[PairRow], eos: str) -> list[PreferenceExample]:
    """Pair rows → trainer rows; a row's own label smoothing (reward ensemble, visit-count ε) goes
    along; step-level rows keep their exact continuations; a rationale (synthesis) makes the row a
    rationale-enriched one (ALGORITHMS.md §4), scored under the x_rat it was written for."""
    return [PreferenceExample(p.prompt, p.chosen + (eos if p.complete_responses else ""),
                              p.rejected + (eos if p.complete_responses else ""), label_smoothing=p.label_smoothing,
                              rationale=p.rationale + eos if p.rationale else None,
                              rationale_prompt=p.rationale_prompt)
            for p in pairs]


def reference_cache_path(cache_dir: Path, reference_id: str, pairs_md5: str, config: PipelineConfig) -> Path:
    """Reference log-probs are a function of (reference model, pair file content, scoring options)."""
    p = config.preference
    key = f"{reference_id}|{pairs_md5}|{p.loss_type == 'ipo' and p.length_normalize}|{p.max_length}"
    return Path(cache_dir) / f"ref-logps-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def _reference_logps(config: PipelineConfig, reference_dir: Path, examples, pairs_path: Path, round_index: int,
                     ref_cache_dir: Path) -> tuple[Any, Path, bool, float]:
    """Reference log-probs of the round's pairs: computed once, cached by (reference, pairs, settings)."""
    ref_start = time.perf_counter()
    reference_id = read_metadata(reference_dir).get("model_id", str(reference_dir))
    pairs_md5 = content_md5(pairs_path)
    cache_file = reference_cache_path(ref_cache_dir, reference_id, pairs_md5, config)
    if cache_file.exists():
        return torch.load(cache_file), cache_file, True, _timed(ref_start)
    reference = load_checkpoint(reference_dir, merge=True)
    with progress_bar(f"round {round_index}: reference log-probs", len(examples)) as advance:
        ref_logps = reference_logprobs(reference, examples, config.preference, on_batch=advance)
    del reference
    buffer = io.BytesIO()
    torch.save(ref_logps, buffer)
    # lineage first, tensor last: a cache entry exists only once both are complete
    write_json_atomic(cache_file.with_suffix(".json"), lineage_record(
        "reference-logprobs", config.content_hash(), config.seed, parent_model=reference_id,
        inputs={"pairs": str(pairs_path), "pairs_md5": pairs_md5},
        length_normalized=config.preference.loss_type == "ipo" and config.preference.length_normalize,
        max_length=config.preference.max_length, shape=list(ref_logps.shape)))
    write_bytes_atomic(cache_file, buffer.getvalue())
    return ref_logps, cache_file, False, _timed(ref_start)


def _round_pairs(pairs_path: Path, eos: str):
    pairs = read_rows(pairs_path, PairRow)
    if not pairs:
        raise ValueError(f"{pairs_path}: no pairs — every prompt's samples were all correct or all wrong; "
                         f"raise sampling.k or sampling.prompts_per_round")
    return preference_examples(pairs, eos)


def train_round(config: PipelineConfig, policy_dir: Path, reference_dir: Path, pairs_path: Path, round_index: int,
                out_dir: Path, ref_cache_dir: Path, on_step=None) -> StepResult:
    """Preference-train the policy on the round's pairs; reference log-probs are computed once and cached.
    Under torchrun every rank runs this on its share of each batch, and rank 0 writes the checkpoint."""
    start = time.perf_counter()
    world = current_world()
    policy = _trainable_policy(config, policy_dir)
    examples = _round_pairs(pairs_path, policy.tokenizer.eos_token)
    reference_id = read_metadata(reference_dir).get("model_id", str(reference_dir))
    pairs_md5 = content_md5(pairs_path)
    ref_logps, cache_file, ref_cached, ref_seconds = _reference_logps(config, reference_dir, examples, pairs_path,
                                                                      round_index, ref_cache_dir)
    total_steps = len(range(0, len(examples), config.preference.batch_size)) * config.preference.epochs
    with progress_bar(f"round {round_index}: {config.preference.loss_type} training", total_steps) as advance:
        def step_hook(step: int, metrics: dict[str, float]) -> None:
            advance(1)
            if on_step:
                on_step(step, metrics)
        checkpointer = resume_checkpointer(config, out_dir, pairs_md5, reference_id, str(policy_dir), str(round_index))
        result = train_preference(policy, examples, ref_logps, config.preference, seed=config.seed + round_index,
                                  on_step=step_hook, checkpointer=checkpointer,
                                  after_step=kill_at_train_step(f"train-r{round_index}"))
    model_id = f"round{round_index}@{config.content_hash()}"
    if world.is_main:
        save_checkpoint(policy, out_dir, _checkpoint_metadata(
            config, model_id, policy, f"preference:{config.preference.loss_type}", _base_path_of(policy_dir),
            {"pairs": str(pairs_path), "reference": reference_id}, config.seed + round_index))
    checkpointer.clear()
    final = result.history[-1]
    return {"path": str(out_dir), "model_id": model_id, "n_pairs": len(examples), "steps": result.steps,
            "final_metrics": final, "history": result.history, "resumed_from_step": result.resumed_from_step,
            "reference_cached": ref_cached, "reference_seconds": ref_seconds,
            "reference_cache": str(cache_file), "reference_lineage": str(cache_file.with_suffix(".json")),
            "world_size": world.size, "seconds": _timed(start)}


def train_round_launched(config: PipelineConfig, policy_dir: Path, reference_dir: Path, pairs_path: Path,
                         round_index: int, out_dir: Path, ref_cache_dir: Path, on_step=None) -> StepResult:
    """``train_round`` on ``launch.nproc_per_node`` processes (× ``launch.nnodes``) started by torchrun.
    The reference log-probs are computed here first, once, so the ranks find them cached; rank 0's
    result (with the per-step history, replayed through ``on_step``) comes back as a file."""
    if config.launch.nproc_per_node == 1 and config.launch.nnodes == 1:
        return train_round(config, policy_dir, reference_dir, pairs_path, round_index, out_dir, ref_cache_dir,
                           on_step)
    if config.launch.backend == "local":
        check_local_ranks(config.launch.nproc_per_node)
    tokenizer = load_tokenizer(Path(policy_dir) if not is_adapter(Path(policy_dir))
                               else Path(read_metadata(Path(policy_dir))["base_path"]))
    examples = _round_pairs(pairs_path, tokenizer.eos_token)
    _reference_logps(config, reference_dir, examples, pairs_path, round_index, ref_cache_dir)
    spec_dir = Path(out_dir).with_name(f"{Path(out_dir).name}.launch")
    spec = {"config": config.model_dump(mode="json"), "policy_dir": str(policy_dir), "reference_dir": str(reference_dir),
            "pairs_path": str(pairs_path), "round_index": round_index, "out_dir": str(out_dir),
            "ref_cache_dir": str(ref_cache_dir), "result_path": str(spec_dir / "result.json")}
    write_json_atomic(spec_dir / "spec.json", spec)
    if config.launch.backend == "kubernetes":
        _train_on_kubernetes(config, spec_dir / "spec.json", round_index)
    else:
        command = torchrun_command("alignflow.components.stages.train_entry", [str(spec_dir / "spec.json")],
                                   config.launch.nproc_per_node, config.launch.nnodes, config.launch.rdzv_endpoint)
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"torchrun ({' '.join(command)}) failed with exit {completed.returncode}:\n"
                               f"{completed.stderr[-4000:]}")
    result = json.loads((spec_dir / "result.json").read_text())
    if on_step:
        for step, metrics in enumerate(result["history"], start=1):
            on_step(step, metrics)
    return result


def _train_on_kubernetes(config: PipelineConfig, spec_path: Path, round_index: int) -> None:
    """The nodes are pods of an Indexed Job: they see the spec (and the policy, reference cache and output
    dir it names) only through the shared claim mounted at /shared, so the workspace must be there."""
    from alignflow.components.platform.k8s.multinode import SHARED_MOUNT, multinode_training_manifests
    from alignflow.components.platform.k8s.training_job import run_training_job, training_job_name

    spec_path = Path(spec_path).resolve()
    if not spec_path.is_relative_to(SHARED_MOUNT):
        raise ValueError(f"launch.backend: kubernetes: the training nodes read the launch spec from the shared claim "
                         f"at {SHARED_MOUNT}, but the workspace puts it at {spec_path}: set workspace (and "
                         f"state_dir) under {SHARED_MOUNT} and mount launch.kubernetes.shared_claim there in the flow's pod")
    k8s = config.launch.kubernetes
    name = training_job_name(config.content_hash(), round_index)
    manifests = multinode_training_manifests(name, k8s.image, config.launch.nnodes, config.launch.nproc_per_node,
                                             str(spec_path), namespace=k8s.namespace, shared_claim=k8s.shared_claim,
                                             credentials_secret=k8s.credentials_secret,
                                             node_selector=k8s.node_selector or None)
    asyncio.run(run_training_job(manifests, k8s.timeout_s, k8s.poll_s, log=logger.info))


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
