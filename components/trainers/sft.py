"""Supervised fine-tuning on worked solutions: cross-entropy on response tokens only."""

from __future__ import annotations

from dataclasses import dataclass

from alignflow.components.config import SFTConfig
from alignflow.components.modeling.checkpoints import LoadedModel
from alignflow.components.modeling.logprobs import encode_pairs, response_token_logprobs
from alignflow.components.trainers.common import StepCallback, clip_and_step, make_optimizer, n_steps, seeded_batches
from alignflow.components.trainers.resume import TrainingCheckpointer


@dataclass
class SFTResult:
    steps: int
    first_loss: float
    final_loss: float
    resumed_from_step: int = 0


def train_sft(loaded: LoadedModel, prompts: list[str], targets: list[str], config: SFTConfig, seed: int,
              on_step: StepCallback | None = None, checkpointer: TrainingCheckpointer | None = None,
              after_step=None) -> SFTResult:
    if len(prompts) != len(targets) or not prompts:
        raise ValueError(f"SFT needs equal, non-empty prompts and targets (got {len(prompts)}, {len(targets)})")
    model = loaded.model
    model.train()
    total = n_steps(len(prompts), config.batch_size, config.epochs)
    optimizer, scheduler = make_optimizer(model, config.lr, total, config.warmup_steps)
    history: list[dict[str, float]] = []
    done = checkpointer.restore(model, optimizer, scheduler, history) if checkpointer else 0
    for step, index in enumerate(seeded_batches(len(prompts), config.batch_size, config.epochs, seed), start=1):
        if step <= done:
            continue
        batch = encode_pairs(loaded.tokenizer, [prompts[i] for i in index], [targets[i] for i in index],
                             config.max_length)
        token_logps = response_token_logprobs(model, batch)
        loss = -token_logps.sum() / batch.response_mask.sum()
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
                     resumed_from_step=done)
