"""Stage ``train``: preference-train the policy on a round's pairs (DPO family, rationale and list
rows), against reference log-probs computed once and cached by content."""

from __future__ import annotations

import time
from pathlib import Path
from typing import cast

from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.checkpoints import save_checkpoint
from alignflow.components.platform.distributed import current_world
from alignflow.components.platform.faults import kill_at_train_step
from alignflow.components.stages.common import (
    StepHook,
    base_path_of,
    checkpoint_metadata,
    elapsed,
    report_fit,
    resume_checkpointer,
    stage_model_id,
    trainable_policy,
    training_progress,
)
from alignflow.components.stages.reference import cached_reference_logprobs
from alignflow.components.stages.results import Artifact, Checkpoint, PreferenceTrainResult, RowFit
from alignflow.components.trainers.preference import PreferenceExample, train_preference


def preference_examples(pairs: list[PairRow], eos: str) -> list[PreferenceExample]:
    """Pair rows → trainer rows; a row's own label smoothing (reward ensemble, visit-count ε) goes
    along; step-level rows keep their exact continuations; a rationale (synthesis) makes the row a
    rationale-enriched one (ALGORITHMS.md §4), scored under the x_rat it was written for."""
    return [PreferenceExample(p.prompt, p.chosen + (eos if p.complete_responses else ""),
                              p.rejected + (eos if p.complete_responses else ""), label_smoothing=p.label_smoothing,
                              rationale=p.rationale + eos if p.rationale else None,
                              rationale_prompt=p.rationale_prompt)
            for p in pairs]


def round_examples(pairs: Artifact, eos: str) -> list[PreferenceExample]:
    """The trainer rows of a round's pair file.

    Raises:
        ValueError: the file holds no pairs (names the file and what to change).
    """
    rows = read_rows(pairs.file, PairRow)
    if not rows:
        raise ValueError(f"{pairs.path}: no pairs — every prompt's samples were all correct or all wrong; "
                         f"raise sampling.k or sampling.prompts_per_round")
    return preference_examples(rows, eos)


def train_round(config: PipelineConfig, policy: Checkpoint, reference: Checkpoint, pairs: Artifact,
                round_index: int, out_dir: Path, ref_cache_dir: Path,
                on_step: StepHook | None = None) -> PreferenceTrainResult:
    """Under torchrun every rank runs this on its share of each batch, and rank 0 writes the checkpoint."""
    start = time.perf_counter()
    world = current_world()
    model = trainable_policy(config, policy.dir)
    examples = round_examples(pairs, cast(str, model.tokenizer.eos_token))
    ref_logps, ref_info = cached_reference_logprobs(reference, examples, pairs, config.preference, ref_cache_dir,
                                                    config.content_hash(), config.seed, f"round {round_index}")
    p = config.preference
    total_steps = len(range(0, len(examples), p.batch_size)) * p.epochs
    checkpointer = resume_checkpointer(config, out_dir, pairs.md5, reference.model_id, policy.path, str(round_index))
    with training_progress(f"round {round_index}: {p.loss_type} training", total_steps, on_step) as hook:
        result = train_preference(model, examples, ref_logps, p, seed=config.seed + round_index, on_step=hook,
                                  checkpointer=checkpointer, after_step=kill_at_train_step(f"train-r{round_index}"))
    model_id = stage_model_id(f"round{round_index}", config.content_hash(), __name__)
    if world.is_main:
        save_checkpoint(model, out_dir, checkpoint_metadata(
            config.content_hash(), model_id, model, f"preference:{p.loss_type}", base_path_of(policy.dir),
            {"pairs": pairs.ref(), "reference": reference.model_id}, config.seed + round_index))
    checkpointer.clear()
    fit = RowFit(rows=result.fit.rows, truncated=result.fit.truncated, dropped=result.fit.dropped)
    if world.size == 1:  # under torchrun the launching process warns, once (stages/launch.py)
        report_fit(fit, pairs.path, "preference", p.max_length, p.max_truncation_rate_warning)
    return PreferenceTrainResult(checkpoint=Checkpoint(path=str(out_dir), model_id=model_id), n_pairs=len(examples),
                                 steps=result.steps, final_metrics=result.history[-1], history=result.history,
                                 resumed_from_step=result.resumed_from_step, reference=ref_info,
                                 world_size=world.size, fit=fit, seconds=elapsed(start))
