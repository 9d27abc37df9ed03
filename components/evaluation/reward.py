"""Reward-model evaluation on held-out pairs: accuracy, calibration, per-category accuracy.

Inputs are pair logits (log-odds that chosen ≻ rejected, from ``trainers.reward.score_pairs``),
so every head is evaluated the same way. ECE treats the model as a binary classifier whose
prediction is the side with p > 0.5 and whose confidence is max(p, 1 − p).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def expected_calibration_error(logits: torch.Tensor, n_bins: int = 10) -> float:
    """Σ_b (|B_b|/N)·|accuracy_b − confidence_b| over equal-width confidence bins in [0.5, 1]."""
    if logits.numel() == 0:
        raise ValueError("no pairs to compute calibration on")
    p = torch.sigmoid(logits.double())
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double()
    edges = torch.linspace(0.5, 1.0, n_bins + 1, dtype=torch.float64)
    bins = torch.bucketize(confidence, edges[1:-1], right=True)  # 0 … n_bins-1
    ece = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            gap = correct[members].mean().item() - confidence[members].mean().item()
            ece += members.double().mean().item() * abs(gap)
    return ece


def reward_model_metrics(logits: torch.Tensor, categories: Sequence[str] | None = None, n_bins: int = 10
                         ) -> dict[str, float]:
    """rm/accuracy, rm/ece, rm/mean_logit and rm/accuracy/<category> for each category seen."""
    if categories is not None and len(categories) != logits.numel():
        raise ValueError(f"{len(categories)} categories for {logits.numel()} pairs")
    correct = (logits > 0).double()
    metrics = {
        "rm/accuracy": correct.mean().item(),
        "rm/ece": expected_calibration_error(logits, n_bins),
        "rm/mean_logit": logits.double().mean().item(),
        "rm/n_pairs": float(logits.numel()),
    }
    if categories is not None:
        for category in sorted(set(categories)):
            members = torch.tensor([c == category for c in categories])
            metrics[f"rm/accuracy/{category or 'uncategorized'}"] = correct[members].mean().item()
    return metrics
