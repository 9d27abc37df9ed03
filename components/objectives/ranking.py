"""TPO: learning from a ranked list of responses (ALGORITHMS.md §5).

Each response is scored by its step rewards — the mean token log-ratio of each reasoning step —
averaged over steps, optionally with Adaptive Step Reward (ASR) weights that up-weight steps
resembling the top response's step. The list loss is a pairwise logistic loss over every
ordered pair, optionally weighted LambdaRank-style by the gain and rank-discount differences.
The exact published weighting is unverified, so both the λ-weighting and ASR are switches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def step_means(values: torch.Tensor, step_ids: torch.Tensor, n_steps: int) -> torch.Tensor:
    """Mean of ``values`` ([R] token log-ratios or [R, H] hidden states) per step → [n_steps(, H)];
    ``step_ids[t]`` is token t's step, −1 where the token is not scored."""
    scored = step_ids >= 0
    ids = step_ids[scored]
    picked = values[scored]
    sums = torch.zeros((n_steps, *values.shape[1:]), dtype=values.dtype, device=values.device).index_add(0, ids, picked)
    counts = torch.zeros(n_steps, dtype=values.dtype, device=values.device).index_add(0, ids,
                                                                                      torch.ones_like(ids,
                                                                                                      dtype=values.dtype))
    return sums / counts.clamp(min=1).view(-1, *([1] * (values.dim() - 1)))


def asr_weights(step_hidden: torch.Tensor, top_step_hidden: torch.Tensor) -> torch.Tensor:
    """w_k = 1 + cos(h̄_k(y_i), h̄_k(y_0)). A response with more steps than the top one compares
    its extra steps with the top response's last step (a choice: the paper does not say)."""
    k = step_hidden.shape[0]
    index = torch.clamp(torch.arange(k, device=step_hidden.device), max=top_step_hidden.shape[0] - 1)
    return 1.0 + F.cosine_similarity(step_hidden, top_step_hidden[index], dim=-1)


def response_reward(step_rewards: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """r̂ = weighted mean of step rewards (plain mean without ASR)."""
    if weights is None:
        return step_rewards.mean()
    return (weights * step_rewards).sum() / weights.sum().clamp(min=1e-8)


def lambda_weights(scores: torch.Tensor) -> torch.Tensor:
    """λ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)| with G = 2^v − 1, D(τ) = log(1 + τ), τ the
    1-based rank position (ties get consecutive positions, stable by input order)."""
    order = torch.argsort(-scores, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(1, len(scores) + 1, device=scores.device)
    gain = torch.pow(2.0, scores.double()) - 1.0
    discount = 1.0 / torch.log1p(rank.double())
    return ((gain[:, None] - gain[None, :]).abs() * (discount[:, None] - discount[None, :]).abs()).to(scores.dtype)


def tpo_loss(rewards: torch.Tensor, scores: torch.Tensor, beta: float, lambda_weighting: bool = True) -> torch.Tensor:
    """L = −Σ_{v_i > v_j} λ_ij · log σ(β(r̂_i − r̂_j)) for one list; λ = 1 when weighting is off.
    Pairs with equal scores carry no preference and are skipped."""
    if rewards.shape != scores.shape or rewards.dim() != 1:
        raise ValueError(f"rewards {tuple(rewards.shape)} and scores {tuple(scores.shape)} must be equal 1-D shapes")
    better = scores[:, None] > scores[None, :]
    if not bool(better.any()):
        return rewards.sum() * 0.0  # all ties: no signal, but keep the graph
    weight = lambda_weights(scores) if lambda_weighting else torch.ones_like(rewards)[:, None].expand_as(better)
    pair_losses = -F.logsigmoid(beta * (rewards[:, None] - rewards[None, :]))
    return (weight * pair_losses)[better].sum()

