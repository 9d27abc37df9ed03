"""Reward-model evaluation on held-out pairs: accuracy, calibration, per-category accuracy.

Inputs are pair logits (log-odds that chosen ≻ rejected, from ``trainers.reward.score_pairs``),
so every head is evaluated the same way. ECE treats the model as a binary classifier whose
prediction is the side with p > 0.5 and whose confidence is max(p, 1 − p).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from alignflow.components.platform.figures import write_png_atomic


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin of a reliability diagram: its range, how many pairs fell in it, their mean
    confidence and how many of them the model ranked right."""

    low: float
    high: float
    count: int
    confidence: float  # mean max(p, 1 − p) of its pairs (nan when empty)
    accuracy: float  # share of its pairs with p > 0.5 (nan when empty)


def calibration_bins(logits: torch.Tensor, n_bins: int = 10) -> list[CalibrationBin]:
    """Equal-width confidence bins in [0.5, 1] of the pair logits (log-odds chosen ≻ rejected).

    Raises:
        ValueError: no pairs.
    """
    if logits.numel() == 0:
        raise ValueError("no pairs to compute calibration on")
    p = torch.sigmoid(logits.double())
    confidence = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double()
    edges = torch.linspace(0.5, 1.0, n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(confidence, edges[1:-1], right=True)  # 0 … n_bins-1
    bins = []
    for b in range(n_bins):
        members = index == b
        n = int(members.sum().item())
        bins.append(CalibrationBin(edges[b].item(), edges[b + 1].item(), n,
                                   confidence[members].mean().item() if n else float("nan"),
                                   correct[members].mean().item() if n else float("nan")))
    return bins


def expected_calibration_error(logits: torch.Tensor, n_bins: int = 10) -> float:
    """Σ_b (|B_b|/N)·|accuracy_b − confidence_b| over equal-width confidence bins in [0.5, 1]."""
    total = logits.numel()
    return sum(b.count / total * abs(b.accuracy - b.confidence) for b in calibration_bins(logits, n_bins) if b.count)


def reward_model_metrics(logits: torch.Tensor, categories: Sequence[str | Sequence[str]] | None = None,
                         n_bins: int = 10, prefix: str = "rm/") -> dict[str, float]:
    """``<prefix>accuracy``, ``ece``, ``mean_logit``, ``n_pairs`` and ``accuracy/<category>`` for each
    category seen. A pair's category is a string, or several (a constraints prompt counts towards
    each of its constraint kinds); an empty one is ``uncategorized``.

    Raises:
        ValueError: as many categories as pairs are needed; no pairs.
    """
    if categories is not None and len(categories) != logits.numel():
        raise ValueError(f"{len(categories)} categories for {logits.numel()} pairs")
    correct = (logits > 0).double()
    metrics = {
        f"{prefix}accuracy": correct.mean().item(),
        f"{prefix}ece": expected_calibration_error(logits, n_bins),
        f"{prefix}mean_logit": logits.double().mean().item(),
        f"{prefix}n_pairs": float(logits.numel()),
    }
    if categories is not None:
        per_pair = [(c,) if isinstance(c, str) else tuple(c) or ("",) for c in categories]
        for category in sorted({c for cs in per_pair for c in cs}):
            members = torch.tensor([category in cs for cs in per_pair])
            metrics[f"{prefix}accuracy/{category or 'uncategorized'}"] = correct[members].mean().item()
    return metrics


def plot_calibration(logits: torch.Tensor, out: Path, title: str, n_bins: int = 10) -> Path:
    """The reliability diagram of the pair logits (accuracy against confidence per bin, the diagonal
    is perfect calibration; the text gives ECE and the pairs per bin) beside the histogram of the
    logits. Written atomically; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or servers
    import matplotlib.pyplot as plt

    bins = [b for b in calibration_bins(logits, n_bins) if b.count]
    fig, (reliability, histogram) = plt.subplots(1, 2, figsize=(10, 4))
    reliability.plot([0.5, 1.0], [0.5, 1.0], color="grey", lw=1, label="perfect calibration")
    reliability.bar([(b.low + b.high) / 2 for b in bins], [b.accuracy for b in bins], width=0.5 / n_bins * 0.9,
                    alpha=0.6, label="accuracy per bin")
    reliability.plot([b.confidence for b in bins], [b.accuracy for b in bins], marker="o", color="tab:red")
    for b in bins:
        reliability.annotate(str(b.count), ((b.low + b.high) / 2, b.accuracy), ha="center", va="bottom", fontsize=7)
    reliability.set_xlim(0.5, 1.0)
    reliability.set_ylim(0.0, 1.05)
    reliability.set_xlabel("confidence max(p, 1 − p)")
    reliability.set_ylabel("pairs ranked right")
    reliability.set_title(f"ECE {expected_calibration_error(logits, n_bins):.3f}, n = {logits.numel()}")
    reliability.legend(fontsize=8, loc="lower right")
    histogram.hist(logits.double().tolist(), bins=20, color="tab:blue")
    histogram.axvline(0.0, color="grey", lw=1)
    histogram.set_xlabel("pair logit (chosen ≻ rejected; > 0 is right)")
    histogram.set_ylabel("pairs")
    fig.suptitle(title)
    fig.tight_layout()
    return write_png_atomic(fig, out)
