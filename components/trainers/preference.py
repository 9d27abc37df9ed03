"""The preference trainer: one loop, the DPO-family loss chosen by config.

Reference log-probs are computed once, before training, by ``reference_logprobs`` and passed
in; the policy scores chosen and rejected in one concatenated forward per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from components.config import PreferenceConfig
from components.logprobs import encode_pairs, sequence_logprobs
from components.losses import preference_loss, preference_metrics
from components.models import LoadedModel
from components.trainers.common import StepCallback, clip_and_step, make_optimizer, n_steps, seeded_batches


@dataclass
class PreferenceExample:
    prompt: str
    chosen: str
    rejected: str


@dataclass
class PreferenceResult:
    steps: int
    history: list[dict[str, float]]


def _uses_mean_logps(config: PreferenceConfig) -> bool:
    return config.loss_type == "ipo" and config.length_normalize


@torch.no_grad()
def reference_logprobs(reference: LoadedModel, examples: list[PreferenceExample], config: PreferenceConfig,
                       batch_size: int = 16, on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """[N, 2] (chosen, rejected) log-probs under the frozen reference, computed once per round."""
    reference.model.eval()
    average = _uses_mean_logps(config)
    out: list[torch.Tensor] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = encode_pairs(reference.tokenizer, [e.prompt for e in chunk] * 2,
                             [e.chosen for e in chunk] + [e.rejected for e in chunk], config.max_length)
        logps = sequence_logprobs(reference.model, batch, average=average)
        out.append(torch.stack([logps[: len(chunk)], logps[len(chunk):]], dim=-1))
        if on_batch:
            on_batch(len(chunk))
    return torch.cat(out).double()


def train_preference(policy: LoadedModel, examples: list[PreferenceExample], ref_logps: torch.Tensor,
                     config: PreferenceConfig, seed: int, on_step: StepCallback | None = None) -> PreferenceResult:
    if not examples:
        raise ValueError("no preference pairs to train on")
    if ref_logps.shape != (len(examples), 2):
        raise ValueError(f"reference log-probs have shape {tuple(ref_logps.shape)}, expected ({len(examples)}, 2)")
    model = policy.model
    model.train()
    total = n_steps(len(examples), config.batch_size, config.epochs)
    optimizer, scheduler = make_optimizer(model, config.lr, total, config.warmup_steps)
    average = _uses_mean_logps(config)
    history: list[dict[str, float]] = []
    for step, index in enumerate(seeded_batches(len(examples), config.batch_size, config.epochs, seed), start=1):
        chunk = [examples[i] for i in index]
        batch = encode_pairs(policy.tokenizer, [e.prompt for e in chunk] * 2,
                             [e.chosen for e in chunk] + [e.rejected for e in chunk], config.max_length)
        logps = sequence_logprobs(model, batch, average=average)  # one forward: chosen then rejected
        policy_chosen, policy_rejected = logps[: len(chunk)], logps[len(chunk):]
        ref = ref_logps[index].to(logps.dtype)
        losses = preference_loss(policy_chosen, policy_rejected, ref[:, 0], ref[:, 1],
                                 config.loss_type, config.beta, config.label_smoothing,
                                 divergence=config.divergence, alpha=config.alpha)
        loss = losses.mean()
        loss.backward()
        grad_norm = clip_and_step(model, optimizer, scheduler, config.max_grad_norm)
        metrics = {"train/loss": loss.item(), "train/grad_norm": grad_norm, "train/lr": scheduler.get_last_lr()[0]}
        metrics.update({f"train/{k}": v for k, v in preference_metrics(
            policy_chosen.detach(), policy_rejected.detach(), ref[:, 0], ref[:, 1], config.beta).items()})
        history.append(metrics)
        if on_step:
            on_step(step, metrics)
    model.eval()
    return PreferenceResult(steps=total, history=history)
