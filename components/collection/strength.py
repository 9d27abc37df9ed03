"""Preference strength from an ensemble of reward models (Secrets of RLHF II; ALGORITHMS.md §7).

M reward models trained with different seeds / data orders each give d_m = r_m(c) − r_m(r) per
pair; the mean μ̂ says how strongly (and in which direction) the ensemble agrees with the label,
the spread σ̂ how sure it is. μ̂ < 0 suggests a flipped label, μ̂ ≈ 0 an ambiguous pair. Curation
modes, written back to the pair file so the preference trainer and data curation read them:

- ``flip``: swap chosen and rejected where μ̂ < 0 (μ̂ is negated with them);
- ``smooth``: give pairs with μ̂ below ``threshold`` a per-pair label smoothing ε (cDPO/rDPO);
- ``adaptive_margin``: store μ̂ as the pair's margin for −log σ(r_c − r_r − μ̂).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from alignflow.components.config import RewardConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.reward_model import RewardModel
from alignflow.components.trainers.reward import RewardPair, score_pairs, train_reward

STRENGTH_MODES = ("none", "flip", "smooth", "adaptive_margin")


def train_ensemble(make_model: Callable[[int], RewardModel], tokenizer, pairs: Sequence[RewardPair],
                   config: RewardConfig, seeds: Sequence[int]) -> list[RewardModel]:
    """M reward models differing in initialisation and data order (one seed each)."""
    if len(seeds) < 2:
        raise ValueError("an ensemble needs at least 2 seeds")
    models = []
    for seed in seeds:
        model = make_model(seed)
        train_reward(model, tokenizer, pairs, config, seed=seed)
        models.append(model)
    return models


def ensemble_differences(models: Sequence[RewardModel], tokenizer, pairs: Sequence[RewardPair],
                         config: RewardConfig) -> torch.Tensor:
    """[M, N] d_m = r_m(chosen) − r_m(rejected) (for GPM: s(c≻r)/τ)."""
    return torch.stack([score_pairs(m, tokenizer, pairs, config) for m in models])


def strength_statistics(differences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ̂ and σ̂ (population std over models) per pair from an [M, N] matrix of d_m."""
    if differences.dim() != 2 or differences.shape[0] < 2:
        raise ValueError(f"need an [M, N] matrix with M >= 2 reward models, got {tuple(differences.shape)}")
    d = differences.double()
    return d.mean(0), d.std(0, correction=0)


def apply_strength(pairs: Sequence[PairRow], mean: torch.Tensor, std: torch.Tensor, mode: str,
                   threshold: float = 0.0, smooth_epsilon: float = 0.1,
                   lineage: dict[str, Any] | None = None) -> list[PairRow]:
    """New rows carrying μ̂/σ̂ and the curation ``mode``'s decision; the inputs are not modified. A pair
    whose μ̂ is NaN (the ensemble could not score it: too long for ``reward.max_length``) is left as it
    was, with no strength."""
    if mode not in STRENGTH_MODES:
        raise ValueError(f"unknown strength mode '{mode}'; expected one of {STRENGTH_MODES}")
    if not (len(pairs) == mean.numel() == std.numel()):
        raise ValueError(f"{len(pairs)} pairs but {mean.numel()} strengths")
    out: list[PairRow] = []
    for pair, mu, sigma in zip(pairs, mean.tolist(), std.tolist(), strict=True):
        with_lineage = {**pair.lineage, **({"strength": lineage} if lineage else {})}
        if math.isnan(mu):  # the reward models could not score it (too long for reward.max_length): no decision
            out.append(pair.model_copy(update={"lineage": with_lineage}))
            continue
        update: dict[str, Any] = {"strength_mean": mu, "strength_std": sigma, "lineage": with_lineage}
        if mode == "flip" and mu < 0:
            update.update(chosen=pair.rejected, rejected=pair.chosen, score_chosen=pair.score_rejected,
                          score_rejected=pair.score_chosen, strength_mean=-mu, flipped=not pair.flipped)
        elif mode == "smooth" and mu < threshold:
            update["label_smoothing"] = smooth_epsilon
        elif mode == "adaptive_margin":
            update["margin"] = mu
        out.append(pair.model_copy(update=update))
    return out


def annotate_pair_file(path: Path, differences: torch.Tensor, mode: str, threshold: float = 0.0,
                       smooth_epsilon: float = 0.1, lineage: dict[str, Any] | None = None) -> list[PairRow]:
    """Read a pair file, write μ̂/σ̂ and the curation back atomically (temp file + rename)."""
    pairs = read_rows(path, PairRow)
    mean, std = strength_statistics(differences)
    annotated = apply_strength(pairs, mean, std, mode, threshold, smooth_epsilon, lineage)
    write_rows(path, annotated)
    return annotated
