"""Stage ``sft``: supervised fine-tuning of the base model on the ``sft`` role's demonstrations:
prompt/completion rows, or conversations whose final assistant turn is the target — the loss is
on the response tokens only (the prompt, earlier turns included, is masked)."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.data.formats import Example, Text, render_response
from alignflow.components.modeling.checkpoints import save_checkpoint
from alignflow.components.platform.faults import kill_at_train_step
from alignflow.components.stages.common import (
    StepHook,
    checkpoint_metadata,
    elapsed,
    read_examples,
    render,
    report_fit,
    resume_checkpointer,
    stage_model_id,
    trainable_policy,
    training_progress,
)
from alignflow.components.stages.results import Artifact, Checkpoint, SFTResult
from alignflow.components.trainers.sft import train_sft


def run_sft(config: PipelineConfig, base: Checkpoint, sft_data: Artifact, out_dir: Path,
            on_step: StepHook | None = None) -> SFTResult:
    """LoRA (or full) SFT on ``sft_data`` (Example rows: the rendered prompt → the completion + EOS);
    resumes from the last saved step when a killed run left a resume state."""
    start = time.perf_counter()
    rows = read_examples(sft_data)
    policy = trainable_policy(config, base.dir)
    parent_id = policy.model_id
    tok = policy.tokenizer
    prompts = [render(config, tok, r) for r in rows]
    targets = [render_response(_completion(r), tok, r.prompt if isinstance(r.prompt, list) else None) for r in rows]
    total = len(range(0, len(rows), config.sft.batch_size)) * config.sft.epochs
    checkpointer = resume_checkpointer(config, out_dir, parent_id, sft_data.md5)
    with training_progress("SFT", total, on_step) as hook:
        result = train_sft(policy, prompts, targets, config.sft, seed=config.seed, on_step=hook,
                           checkpointer=checkpointer, after_step=kill_at_train_step("sft"))
    model_id = stage_model_id("sft", config.content_hash(), __name__)
    save_checkpoint(policy, out_dir, checkpoint_metadata(config.content_hash(), model_id, parent_id, "sft",
                                                         base.path, {"sft_data": sft_data.ref()}, config.seed))
    checkpointer.clear()
    fit = report_fit(result.fit, sft_data.path, "sft", config.sft.max_length, config.sft.max_truncation_rate_warning)
    return SFTResult(checkpoint=Checkpoint(path=str(out_dir), model_id=model_id), steps=result.steps,
                     first_loss=result.first_loss, final_loss=result.final_loss,
                     resumed_from_step=result.resumed_from_step, fit=fit, seconds=elapsed(start))


def _completion(row: Example) -> Text:
    if row.completion is None:
        raise ValueError(f"{row.origin}: field 'completion': an sft row needs a completion")
    return row.completion
