"""DPO-family losses as pure functions of sequence log-probs (ALGORITHMS.md §1).

Inputs are summed (or, for length-normalised IPO, averaged) response log-probs of the policy
and the frozen reference. Every function returns per-example losses so callers can weight or
mask them; ``preference_metrics`` gives the quantities ALGORITHMS.md says to always log.
"""

from __future__ import annotations

from typing import get_args, overload

import torch
import torch.nn.functional as F

from alignflow.components.config import Divergence, LossType

LOSS_TYPES: tuple[str, ...] = get_args(LossType)
DIVERGENCES: tuple[str, ...] = get_args(Divergence)


def dpo_margin(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
               ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> torch.Tensor:
    """h = ρ(y_w) − ρ(y_l) with ρ(y) = log π_θ(y|x) − log π_ref(y|x)."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


EXP_CAP = 50.0  # sequence log-ratios can be large: cap exponents before exp (ALGORITHMS.md §1.5)


def f_divergence_margin(rho_chosen: torch.Tensor, rho_rejected: torch.Tensor, divergence: str = "reverse_kl",
                        alpha: float = 0.5) -> torch.Tensor:
    """f-DPO margin from log-ratios ℓ = ρ(y). reverse_kl gives the DPO margin ℓ_w − ℓ_l."""
    if divergence == "reverse_kl":
        return rho_chosen - rho_rejected
    if divergence == "forward_kl":
        return torch.exp((-rho_rejected).clamp(max=EXP_CAP)) - torch.exp((-rho_chosen).clamp(max=EXP_CAP))
    if divergence == "js":
        return (rho_chosen - rho_rejected) - (F.softplus(rho_chosen) - F.softplus(rho_rejected))
    if divergence == "alpha":
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"α-divergence needs α in (0, 1), got {alpha}")
        return (torch.exp((-alpha * rho_rejected).clamp(max=EXP_CAP))
                - torch.exp((-alpha * rho_chosen).clamp(max=EXP_CAP))) / alpha
    raise ValueError(f"unknown divergence '{divergence}'; expected one of {DIVERGENCES}")


def loss_from_margin(h: torch.Tensor, loss_type: str, beta: float,
                     label_smoothing: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Apply a DPO-family loss to any margin (DPO's h, an f-divergence margin, a joint margin)."""
    if loss_type == "sigmoid":
        return sigmoid_loss(h, beta)
    if loss_type == "ipo":
        return ipo_loss(h, beta)
    if loss_type == "cdpo":
        return cdpo_loss(h, beta, label_smoothing)
    if loss_type == "rdpo":
        return rdpo_loss(h, beta, label_smoothing)
    raise ValueError(f"unknown loss_type '{loss_type}'; expected one of {LOSS_TYPES}")


def sigmoid_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * h)


def ipo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    """(h − 1/(2τ))², τ passed as beta; minimised at h = 1/(2τ)."""
    return (h - 1.0 / (2.0 * beta)) ** 2


def cdpo_loss(h: torch.Tensor, beta: float, epsilon: float | torch.Tensor) -> torch.Tensor:
    """Label smoothing: (1−ε)·(−log σ(βh)) + ε·(−log σ(−βh))."""
    _check_epsilon(epsilon)
    return (1 - epsilon) * -F.logsigmoid(beta * h) + epsilon * -F.logsigmoid(-beta * h)


def rdpo_loss(h: torch.Tensor, beta: float, epsilon: float | torch.Tensor) -> torch.Tensor:
    """Unbiased under a symmetric flip rate ε; note the minus, and that it is unbounded below."""
    _check_epsilon(epsilon)
    return ((1 - epsilon) * -F.logsigmoid(beta * h) - epsilon * -F.logsigmoid(-beta * h)) / (1 - 2 * epsilon)


def _check_epsilon(epsilon: float | torch.Tensor) -> None:
    """ε may be one rate or a per-pair tensor (ensemble smoothing, step-level visit ε)."""
    eps = torch.as_tensor(epsilon, dtype=torch.float64)
    if bool(((eps < 0) | (eps >= 0.5)).any()):
        raise ValueError(f"label-flip rate ε must be in [0, 0.5), got {eps.min().item()}..{eps.max().item()}")


def preference_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                    ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
                    loss_type: str, beta: float, label_smoothing: float | torch.Tensor = 0.0,
                    divergence: str = "reverse_kl", alpha: float = 0.5) -> torch.Tensor:
    """Per-example loss for ``loss_type`` in {sigmoid, ipo, cdpo, rdpo}, on the f-divergence margin
    (reverse KL = plain DPO). DOVE's joint loss is this with prompt tokens included in the log-probs."""
    h = f_divergence_margin(policy_chosen - ref_chosen, policy_rejected - ref_rejected, divergence, alpha)
    return loss_from_margin(h, loss_type, beta, label_smoothing)


def rationale_term(rationale_logp: torch.Tensor, gamma: float, form: str = "linear") -> torch.Tensor:
    """The rationale part of ALGORITHMS.md §4: −γ·log π(r|x_rat) ("linear", paper) or
    −log σ(γ·log π(r|x_rat)) ("logsigmoid", released code)."""
    if form == "linear":
        return -gamma * rationale_logp
    if form == "logsigmoid":
        return -F.logsigmoid(gamma * rationale_logp)
    raise ValueError(f"unknown rationale form '{form}'; expected 'linear' or 'logsigmoid'")


def rationale_loss(h: torch.Tensor, rationale_logp: torch.Tensor, beta: float, gamma: float,
                   form: str = "linear") -> torch.Tensor:
    """Rationale-enriched DPO: −log σ(βh) plus the rationale term."""
    return sigmoid_loss(h, beta) + rationale_term(rationale_logp, gamma, form)


@overload
def conservative_epsilon(visits_chosen: int, visits_rejected: int) -> float: ...
@overload
def conservative_epsilon(visits_chosen: torch.Tensor, visits_rejected: torch.Tensor) -> torch.Tensor: ...
def conservative_epsilon(visits_chosen: torch.Tensor | int, visits_rejected: torch.Tensor | int
                         ) -> torch.Tensor | float:
    """Step-level DPO's per-pair ε from MCTS visit counts (ALGORITHMS.md §2): min(N_l / (N_w + N_l), 0.5).

    The one definition, for a pair (ints → float) or a batch (tensors). With no visits at all there is
    no evidence for either side: ε = 0.5, the same as N_l ≥ N_w. ε = 0.5 states no preference, and
    the conservative loss is only defined on [0, 0.5): callers drop such pairs
    (``collection/mcts/pairs.step_pair_rows``) rather than train on them.
    """
    if isinstance(visits_chosen, torch.Tensor) or isinstance(visits_rejected, torch.Tensor):
        chosen, rejected = torch.as_tensor(visits_chosen), torch.as_tensor(visits_rejected)
        total = chosen + rejected
        ratio = rejected.to(torch.float64) / total.clamp(min=1)
        return torch.where(total > 0, ratio.clamp(max=0.5), torch.full_like(ratio, 0.5))
    total = visits_chosen + visits_rejected
    return min(visits_rejected / total, 0.5) if total else 0.5


# ---- reward-model losses (ALGORITHMS.md §7): functions of scalar rewards r_c, r_r -------------

def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | float = 0.0,
                       scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """BT: −log σ(r_c − r_r); margin BT: −log σ(r_c − r_r − m); scaled BT: −m·log σ(r_c − r_r)."""
    return -scale * F.logsigmoid(r_chosen - r_rejected - margin)


def eurus_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """L_BT + L_DR with L_DR = −log σ(r_c) − log σ(−r_r): also fixes the rewards' absolute sign."""
    return bradley_terry_loss(r_chosen, r_rejected) - F.logsigmoid(r_chosen) - F.logsigmoid(-r_rejected)


@torch.no_grad()
def preference_metric_tensors(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                              ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float) -> dict[str,
                                                                                                         torch.Tensor]:
    """The always-logged quantities as 0-d tensors: reading them is left to the caller, so a
    training loop can read a step's metrics once, late, instead of syncing the device per metric."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    return {
        "rewards/chosen": chosen_reward.mean(),
        "rewards/rejected": rejected_reward.mean(),
        "rewards/margin": margin.mean(),
        "rewards/accuracy": (margin > 0).float().mean(),
        # sequence-level log-ratio on the training pairs: a cheap KL proxy, not an estimate
        "kl_proxy": 0.5 * ((policy_chosen - ref_chosen) + (policy_rejected - ref_rejected)).mean(),
    }


def preference_metrics(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                       ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float) -> dict[str, float]:
    return {k: v.item() for k, v in preference_metric_tensors(policy_chosen, policy_rejected, ref_chosen,
                                                              ref_rejected, beta).items()}
