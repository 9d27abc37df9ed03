"""The reward trainer: one loop for every head and loss of ALGORITHMS.md §7.

Pairs are scored chosen-then-rejected in one concatenated forward. A pair's *logit* is what
the model says about "chosen ≻ rejected" on the log-odds scale: r_c − r_r for scalar heads,
the ranked attribute's difference for a multi-attribute head, s(c≻r)/τ for GPM. Evaluation,
ensembles and training all go through it, so a head is added in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from alignflow.components.config import RewardConfig
from alignflow.components.modeling.logprobs import FitStats, encode_pairs, fit_rows
from alignflow.components.modeling.reward_model import RewardModel, gpm_loss, gpm_score
from alignflow.components.objectives.preference import bradley_terry_loss, eurus_loss
from alignflow.components.trainers.common import StepCallback, model_device, n_steps, seeded_batches
from alignflow.components.trainers.stepping import make_stepper


@dataclass
class RewardPair:
    prompt: str
    chosen: str
    rejected: str
    margin: float = 0.0  # margin BT's m (an ensemble's μ̂ for the adaptive margin)
    strength: float = 1.0  # scaled BT's m ∈ {1, 2, 3}
    category: str = ""


@dataclass
class AttributeExample:
    prompt: str
    response: str
    attributes: list[float] = field(default_factory=list)  # Likert 0–4, in LIKERT_ATTRIBUTES order


@dataclass
class RewardResult:
    steps: int
    history: list[dict[str, float]]
    fit: FitStats = field(default_factory=FitStats)  # rows truncated / dropped against max_length


def fit_reward_rows(tokenizer: PreTrainedTokenizerBase, rows: Sequence[RewardPair] | Sequence[AttributeExample],
                    max_length: int) -> tuple[list[int], FitStats]:
    """Which rows fit ``max_length`` (``logprobs.fit_row``: the prompt is never cut, a response is
    cut from the right, a row whose prompt leaves no room is dropped; a pair when either side is).

    Returns:
        (indices of the rows kept, the counts).
    """
    pairs = [r for r in rows if isinstance(r, RewardPair)]
    if len(pairs) == len(rows):
        chosen = fit_rows(tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs], max_length)
        rejected = fit_rows(tokenizer, [p.prompt for p in pairs], [p.rejected for p in pairs], max_length)
        kept = [i for i in range(len(pairs)) if chosen.rows[i] is not None and rejected.rows[i] is not None]
        truncated = sum(chosen.truncated[i] or rejected.truncated[i] for i in kept)
        return kept, FitStats(len(pairs), truncated, len(pairs) - len(kept))
    attribute_rows = [r for r in rows if isinstance(r, AttributeExample)]
    fitted = fit_rows(tokenizer, [r.prompt for r in attribute_rows], [r.response for r in attribute_rows], max_length)
    return fitted.kept, fitted.stats()


def check_head(model: RewardModel, config: RewardConfig) -> None:
    if model.head_type != config.head:
        raise ValueError(f"reward loss '{config.loss}' needs a '{config.head}' head, the model has '{model.head_type}'")


def pair_forward(model: RewardModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[RewardPair],
                 max_length: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    device = model_device(model)
    batch = encode_pairs(tokenizer, [p.prompt for p in pairs] * 2,
                         [p.chosen for p in pairs] + [p.rejected for p in pairs],
                         max_length).to(device)
    out = model(batch)
    n = len(pairs)
    return {k: v[:n] for k, v in out.items()}, {k: v[n:] for k, v in out.items()}


def pair_logit(model: RewardModel, chosen: dict[str, torch.Tensor], rejected: dict[str, torch.Tensor],
               config: RewardConfig) -> torch.Tensor:
    """log-odds that chosen ≻ rejected, per pair."""
    if model.head_type == "scalar":
        return chosen["reward"] - rejected["reward"]
    if model.head_type == "multi_attribute":
        a = config.rank_attribute
        return chosen["attributes"][:, a] - rejected["attributes"][:, a]
    return gpm_score(chosen["embedding"], rejected["embedding"], chosen["gate"]) / config.gpm_tau


def pair_losses(model: RewardModel, chosen: dict[str, torch.Tensor], rejected: dict[str, torch.Tensor],
                pairs: Sequence[RewardPair], config: RewardConfig) -> torch.Tensor:
    device = model_device(model)
    if config.loss == "gpm":
        return gpm_loss(gpm_score(chosen["embedding"], rejected["embedding"], chosen["gate"]), config.gpm_tau)
    r_c, r_r = chosen["reward"], rejected["reward"]
    if config.loss == "bt":
        return bradley_terry_loss(r_c, r_r)
    if config.loss == "margin_bt":
        return bradley_terry_loss(r_c, r_r,
                                  margin=torch.tensor([p.margin for p in pairs], device=device, dtype=r_c.dtype))
    if config.loss == "scaled_bt":
        return bradley_terry_loss(r_c, r_r,
                                  scale=torch.tensor([p.strength for p in pairs], device=device, dtype=r_c.dtype))
    if config.loss == "eurus":
        return eurus_loss(r_c, r_r)
    raise ValueError(f"reward loss '{config.loss}' does not train on pairs")


def _regression_step(model: RewardModel, tokenizer: PreTrainedTokenizerBase, rows: Sequence[AttributeExample],
                     config: RewardConfig) -> tuple[torch.Tensor, dict[str, float]]:
    device = model_device(model)
    batch = encode_pairs(tokenizer, [r.prompt for r in rows], [r.response for r in rows], config.max_length).to(device)
    predicted = model(batch)["attributes"]
    target = torch.tensor([r.attributes for r in rows], dtype=predicted.dtype, device=device)
    if target.shape != predicted.shape:
        raise ValueError(f"attribute rows have {target.shape[-1]} values, the head predicts {predicted.shape[-1]}")
    loss = F.mse_loss(predicted, target)
    return loss, {"train/loss": loss.item(), "train/mae": (predicted - target).abs().mean().item()}


def train_reward(model: RewardModel, tokenizer: PreTrainedTokenizerBase,
                 rows: Sequence[RewardPair] | Sequence[AttributeExample], config: RewardConfig, seed: int,
                 on_step: StepCallback | None = None) -> RewardResult:
    """Pairs for bt / margin_bt / scaled_bt / eurus / gpm; attribute rows for regression. Rows that do
    not fit ``config.max_length`` are dropped (``fit_reward_rows``); the result counts them.

    Raises:
        ValueError: no rows, rows of the wrong kind for the loss, or no row fits max_length.
    """
    if not rows:
        raise ValueError("no reward-model training rows")
    check_head(model, config)
    regression = config.loss == "regression"
    expected = AttributeExample if regression else RewardPair
    pairs = [r for r in rows if isinstance(r, RewardPair)]
    attribute_rows = [r for r in rows if isinstance(r, AttributeExample)]
    if len(attribute_rows if regression else pairs) != len(rows):  # some row is not an ``expected``
        raise ValueError(f"reward loss '{config.loss}' trains on {expected.__name__} rows")
    kept, fit = fit_reward_rows(tokenizer, rows, config.max_length)
    if not kept:
        raise ValueError(f"none of the {len(rows)} reward rows fits reward.max_length {config.max_length}; raise it")
    pairs = [pairs[i] for i in kept] if not regression else pairs
    attribute_rows = [attribute_rows[i] for i in kept] if regression else attribute_rows
    model.train()
    total = n_steps(len(kept), config.batch_size, config.epochs)
    stepper = make_stepper(model, config.lr, total, config.warmup_steps, config.max_grad_norm, config.batch_size,
                           config.deepspeed_config)
    history: list[dict[str, float]] = []
    for step, index in enumerate(seeded_batches(len(kept), config.batch_size, config.epochs, seed), start=1):
        if regression:
            loss, metrics = _regression_step(model, tokenizer, [attribute_rows[i] for i in index], config)
        else:
            chunk = [pairs[i] for i in index]
            chosen, rejected = pair_forward(model, tokenizer, chunk, config.max_length)
            loss = pair_losses(model, chosen, rejected, chunk, config).mean()
            logit = pair_logit(model, chosen, rejected, config).detach()
            metrics = {"train/loss": loss.item(), "train/accuracy": (logit > 0).float().mean().item(),
                       "train/logit": logit.mean().item()}
        stepper.backward(loss)
        metrics["train/grad_norm"] = float(stepper.step())
        metrics["train/lr"] = stepper.last_lr()
        history.append(metrics)
        if on_step:
            on_step(step, metrics)
    stepper.finish()
    model.eval()
    return RewardResult(steps=total, history=history, fit=fit)


@torch.no_grad()
def score_pairs(model: RewardModel, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[RewardPair],
                config: RewardConfig, batch_size: int = 16,
                on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """[N] pair logits (chosen ≻ rejected), in float64 for metrics; NaN for a pair that does not fit
    ``config.max_length`` (``fit_reward_rows``): it has no score rather than one of a mangled row."""
    model.eval()
    kept, _ = fit_reward_rows(tokenizer, pairs, config.max_length)
    out = torch.full((len(pairs),), math.nan, dtype=torch.float64)
    if on_batch and len(kept) < len(pairs):
        on_batch(len(pairs) - len(kept))
    for start in range(0, len(kept), batch_size):
        index = kept[start:start + batch_size]
        chunk = [pairs[i] for i in index]
        chosen, rejected = pair_forward(model, tokenizer, chunk, config.max_length)
        out[index] = pair_logit(model, chosen, rejected, config).double().cpu()
        if on_batch:
            on_batch(len(chunk))
    return out
