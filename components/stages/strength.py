"""Stage ``strength``: a round's pairs scored by an ensemble of reward models (Secrets of RLHF II,
ALGORITHMS.md §7) and a curated copy written (flip / smooth / adaptive margin)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import cast

import torch

from alignflow.components.collection.strength import (
    apply_strength,
    ensemble_differences,
    strength_statistics,
    train_ensemble,
)
from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import PairRow
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.modeling.reward_model import RewardModel
from alignflow.components.platform.lineage import lineage_record
from alignflow.components.platform.progress import progress_bar
from alignflow.components.stages.common import elapsed, report_fit
from alignflow.components.stages.results import Artifact, Checkpoint, StrengthResult
from alignflow.components.trainers.reward import RewardPair, fit_reward_rows


def preference_strength(config: PipelineConfig, backbone: Checkpoint, pairs: Artifact, round_index: int,
                        out_dir: Path) -> StrengthResult:
    """M reward models (the reference model's backbone, as InstructGPT starts its reward model from
    the SFT model, + the configured head, one seed each, fully trained) are trained on the round's
    pairs; μ̂/σ̂ of r_m(chosen) − r_m(rejected) and the ``strength_mode`` decision go into
    ``pairs-strength.jsonl``. The original pair file stays as it was: it is versioned, and its hash
    keys the round's caches.

    Raises:
        ValueError: the pair file is empty.
    """
    start = time.perf_counter()
    r = config.reward
    rows = read_rows(pairs.file, PairRow)
    if not rows:
        raise ValueError(f"{pairs.path}: no pairs to score with the reward ensemble")
    loaded = load_checkpoint(backbone.dir, merge=True)  # an adapter is folded in: members train all weights
    tokenizer = loaded.tokenizer
    eos = cast(str, tokenizer.eos_token)
    reward_pairs = [RewardPair(p.prompt, p.chosen + eos, p.rejected + eos) for p in rows]
    seeds = [config.seed + 1000 * round_index + m for m in range(r.ensemble_size)]

    def make_model(seed: int) -> RewardModel:
        torch.manual_seed(seed)  # same backbone for every member; its own head init and data order
        member = copy.deepcopy(loaded.model).requires_grad_(True)
        return RewardModel(member, head=r.head, gpm_k=r.gpm_k, n_attributes=r.n_attributes)

    with progress_bar(f"round {round_index}: reward ensemble ({r.ensemble_size} models)", 1) as advance:
        models = train_ensemble(make_model, tokenizer, reward_pairs, r, seeds)
        differences = ensemble_differences(models, tokenizer, reward_pairs, r)
        advance(1)
    mean, std = strength_statistics(differences)  # NaN for a pair that does not fit reward.max_length
    fit = report_fit(fit_reward_rows(tokenizer, reward_pairs, r.max_length)[1], pairs.path, "reward", r.max_length,
                     r.max_truncation_rate_warning)
    lineage = lineage_record("preference-strength", config.content_hash(), config.seed, parent_model=loaded.model_id,
                             inputs={"pairs": pairs.ref()}, ensemble_seeds=seeds, reward_loss=r.loss,
                             strength_mode=r.strength_mode)
    annotated = apply_strength(rows, mean, std, r.strength_mode, r.strength_threshold, r.smooth_epsilon, lineage)
    path = write_rows(Path(out_dir) / "pairs-strength.jsonl", annotated)
    return StrengthResult(pairs=Artifact.of(path), n_pairs=len(annotated),
                          n_flipped=sum(a.flipped != p.flipped for a, p in zip(annotated, rows, strict=True)),
                          n_smoothed=sum(a.label_smoothing is not None for a in annotated),
                          strength_mean=float(mean.nanmean()), strength_std=float(std.nanmean()),
                          ensemble_agreement=float((mean > 0).double().mean()), fit=fit, seconds=elapsed(start))
