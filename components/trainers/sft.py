"""Supervised fine-tuning on worked solutions: cross-entropy on response tokens only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from alignflow.components.config import SFTConfig
from alignflow.components.modeling.checkpoints import LoadedModel
from alignflow.components.modeling.logprobs import FitStats, fit_rows, pad_rows, response_token_logprobs
from alignflow.components.trainers.common import StepCallback, clip_and_step, make_optimizer, n_steps, seeded_batches
from alignflow.components.trainers.resume import TrainingCheckpointer


@dataclass
class SFTResult:
    steps: int
    first_loss: float
    final_loss: float
    resumed_from_step: int = 0
    fit: FitStats = field(default_factory=FitStats)  # rows truncated / dropped against max_length


def train_sft(loaded: LoadedModel, prompts: list[str], targets: list[str], config: SFTConfig, seed: int,
              on_step: StepCallback | None = None, checkpointer: TrainingCheckpointer | None = None,
              after_step=None) -> SFTResult:
    """Cross-entropy on the target tokens. Rows are tokenized and fitted to ``config.max_length``
    once (``logprobs.fit_row``: the prompt is never cut, a target is cut from the right, a row whose
    prompt leaves no room is dropped); the result counts truncated and dropped rows.

    Raises:
        ValueError: prompts and targets differ in number or are empty, or no row fits max_length.
    """
    if len(prompts) != len(targets) or not prompts:
        raise ValueError(f"SFT needs equal, non-empty prompts and targets (got {len(prompts)}, {len(targets)})")
    fitted = fit_rows(loaded.tokenizer, prompts, targets, config.max_length)
    rows = [row for row in fitted.rows if row is not None]
    if not rows:
        raise ValueError(f"none of the {len(prompts)} SFT rows fits sft.max_length {config.max_length}: every "
                         f"prompt leaves no room for its target; raise max_length")
    pad_id = cast(int, loaded.tokenizer.pad_token_id)
    model = loaded.model
    model.train()
    total = n_steps(len(rows), config.batch_size, config.epochs)
    optimizer, scheduler = make_optimizer(model, config.lr, total, config.warmup_steps)
    history: list[dict[str, float]] = []
    done = checkpointer.restore(model, optimizer, scheduler, history) if checkpointer else 0
    for step, index in enumerate(seeded_batches(len(rows), config.batch_size, config.epochs, seed), start=1):
        if step <= done:
            continue
        batch = pad_rows([rows[i] for i in index], pad_id)
        token_logps = response_token_logprobs(model, batch)
        loss = -token_logps.sum() / batch.response_mask.sum().clamp(min=1)
        loss.backward()
        grad_norm = clip_and_step(model, optimizer, scheduler, max_grad_norm=1.0).item()
        history.append({"sft/loss": loss.item(), "sft/grad_norm": grad_norm,
                        "sft/lr": float(scheduler.get_last_lr()[0])})
        if on_step:
            on_step(step, history[-1])
        if checkpointer:
            checkpointer.maybe_save(step, total, model, optimizer, scheduler, history)
        if after_step:
            after_step(step)
    model.eval()
    losses = [h["sft/loss"] for h in history]
    return SFTResult(steps=total, first_loss=losses[0], final_loss=sum(losses[-3:]) / len(losses[-3:]),
                     resumed_from_step=done, fit=fitted.stats())
