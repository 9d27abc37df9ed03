"""DPO-family losses as pure functions of sequence log-probs (ALGORITHMS.md §1).

Inputs are summed (or, for length-normalised IPO, averaged) response log-probs of the policy
and the frozen reference. Every function returns per-example losses so callers can weight or
mask them; ``preference_metrics`` gives the quantities ALGORITHMS.md says to always log.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "cdpo", "rdpo")


def dpo_margin(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
               ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> torch.Tensor:
    """h = ρ(y_w) − ρ(y_l) with ρ(y) = log π_θ(y|x) − log π_ref(y|x)."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def sigmoid_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * h)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """(h − 1/(2τ))², τ passed as beta; minimised at h = 1/(2τ)."""
    return (h - 1.0 / (2.0 * beta)) ** 2


def cdpo_loss(h: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Label smoothing: (1−ε)·(−log σ(βh)) + ε·(−log σ(−βh))."""
    _check_epsilon(epsilon)
    return (1 - epsilon) * -F.logsigmoid(beta * h) + epsilon * -F.logsigmoid(-beta * h)


def rdpo_loss(h: torch.Tensor, beta: float, epsilon: float) -> torch.Tensor:
    """Unbiased under a symmetric flip rate ε; note the minus, and that it is unbounded below."""
    _check_epsilon(epsilon)
    return ((1 - epsilon) * -F.logsigmoid(beta * h) - epsilon * -F.logsigmoid(-beta * h)) / (1 - 2 * epsilon)


def _check_epsilon(epsilon: float) -> None:
    if not 0.0 <= epsilon < 0.5:
        raise ValueError(f"label-flip rate ε must be in [0, 0.5), got {epsilon}")


def preference_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                    loss_type: str, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-example loss for ``loss_type`` in {sigmoid, ipo, cdpo, rdpo}."""
    h = dpo_margin(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    if loss_type == "sigmoid":
        return sigmoid_loss(h, beta)
    if loss_type == "ipo":
        return ipo_loss(h, beta)
    if loss_type == "cdpo":
        return cdpo_loss(h, beta, label_smoothing)
    if loss_type == "rdpo":
        return rdpo_loss(h, beta, label_smoothing)
    raise ValueError(f"unknown loss_type '{loss_type}'; expected one of {LOSS_TYPES}")


@torch.no_grad()
def preference_metrics(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                       ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float) -> dict[str, float]:
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    return {
        "rewards/chosen": chosen_reward.mean().item(),
        "rewards/rejected": rejected_reward.mean().item(),
        "rewards/margin": margin.mean().item(),
        "rewards/accuracy": (margin > 0).float().mean().item(),
        # sequence-level log-ratio on the training pairs: a cheap KL proxy, not an estimate
        "kl_proxy": 0.5 * ((policy_chosen - ref_chosen) + (policy_rejected - ref_rejected)).mean().item(),
    }
