"""Stage ``reward_model``: the pipeline's reward model (ALGORITHMS.md §7) — its training pairs, the
trained and evaluated model, any other reward model scored on the same held-out pairs, and which
reward model the rounds score with.

Pairs (``reward_pairs``), in order of preference:

- the ``preferences`` role: its rows rendered as the policy sees them (``offline.preference_pairs``,
  the pairs offline DPO trains on);
- else the SFT policy answers ``reward.prompts`` prompts of the prompts role (the end of it: round 1
  starts at its beginning) ``reward.samples_per_prompt`` times with the ``sampling.*`` settings, the
  labeller (``reward.labeller``: a scorer — a verifier such as ``constraints``, or the judge) scores
  every answer, and ``reward.pair_strategy`` pairs them (ties never pair, at most
  ``reward.max_pairs_per_prompt`` per prompt). Every pair names the labeller (id and version) and
  the policy in its lineage.

The pairs of a ``reward.heldout_fraction`` share of the prompts, by a stable hash of the prompt (the
data stage's rule for eval), are held out: a prompt's pairs are all on one side.

Training (``train_reward_model``): the SFT policy's backbone (an adapter folded in; every weight
trained, as InstructGPT starts its reward model from the SFT model) under the head ``reward.loss``
implies, with per-step curves (``reward/train/loss``, ``…/accuracy``, grad norm, lr). ``regression``
regresses the labeller's score of each training sample (one attribute). Held-out: pairwise
accuracy, ECE and accuracy per category (a constraints prompt counts for each of its constraint
kinds) — ``reward/accuracy``, ``reward/ece``, ``reward/accuracy/<kind>`` — and a calibration plot.
Saved with ``save_reward_model`` (model id, lineage, labeller, held-out metrics).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from alignflow.components.collection.pairs import build_pairs
from alignflow.components.config import PipelineConfig, RewardConfig
from alignflow.components.data.constraints import CONSTRAINTS_COLUMN
from alignflow.components.data.io import read_rows, write_rows
from alignflow.components.data.schemas import CompletionRow, PairRow
from alignflow.components.data.sources import in_heldout
from alignflow.components.evaluation.reward import plot_calibration, reward_model_metrics
from alignflow.components.modeling.checkpoints import load_checkpoint, read_metadata
from alignflow.components.modeling.reward_model import (
    RewardModel,
    freeze_below_top_layers,
    load_reward_model,
    save_reward_model,
)
from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.platform.progress import progress_bar
from alignflow.components.scoring.base import ScoreCache, ScoringItem, score_all
from alignflow.components.stages import offline, sample
from alignflow.components.stages.common import (
    StepHook,
    checkpoint_metadata,
    elapsed,
    read_examples,
    report_fit,
    stage_model_id,
    training_progress,
)
from alignflow.components.stages.results import (
    Artifact,
    Checkpoint,
    RewardEvalResult,
    RewardModelResult,
    RewardPairsResult,
)
from alignflow.components.trainers.common import n_steps
from alignflow.components.trainers.reward import AttributeExample, RewardPair, score_pairs, train_reward


class RewardStageError(ValueError):
    """The reward_model stage cannot go on with this data or config (no pairs to train on or hold out,
    a labeller that applies to nothing, a failed gate with nothing in production): a retry repeats it."""


METRIC = "reward/accuracy"  # what the reward model's gate compares (held-out pairwise accuracy)
PREFIX = "reward/"


def pair_categories(columns: Mapping[str, Any]) -> list[str]:
    """What a prompt is about, for per-category accuracy: the kinds of a constraints row's
    constraints (sorted, distinct), else its ``category`` column, else nothing."""
    constraints = columns.get(CONSTRAINTS_COLUMN)
    if isinstance(constraints, list):
        return sorted({str(c.get("kind")) for c in constraints if isinstance(c, dict) and c.get("kind")})
    category = columns.get("category")
    return [str(category)] if category not in (None, "") else []


def _split(pairs: Sequence[PairRow], fraction: float, seed: int) -> tuple[list[PairRow], list[PairRow]]:
    train, heldout = [], []
    for pair in pairs:
        (heldout if in_heldout(pair.problem_id, fraction, seed) else train).append(pair)
    return train, heldout


def _labelled_samples(config: PipelineConfig, policy: Checkpoint, prompts: Artifact,
                      out_dir: Path) -> tuple[list[CompletionRow], Artifact, dict[str, str], str]:
    """The SFT policy's samples of the reward model's prompts, scored by the labeller; returns (rows,
    their file, the labeller's lineage, the policy's model id)."""
    from alignflow.components.scoring.build import build_scorer
    from alignflow.components.stages.resolve import model_resolver

    r = config.reward
    assert r.labeller is not None  # PipelineConfig requires it when there is no preferences source
    sampling = config.sampling.model_copy(update={"k": r.samples_per_prompt, "prompts_per_round": r.prompts})
    sampled = sample.sample(config.model_copy(update={"sampling": sampling}), policy, prompts, 0, out_dir)
    rows = read_rows(sampled.samples.file, CompletionRow)
    labeller = build_scorer(r.labeller, config, model_resolver(config), "reward.labeller")
    cache = ScoreCache(Path(config.state_dir) / "scores.sqlite") if config.scoring.cache else None
    with progress_bar("reward model: labelling", 1) as advance:
        run = score_all([labeller], [ScoringItem(x.prompt_id, x.source_prompt, x.completion, x.columns)
                                     for x in rows], cache)
        advance(1)
    labelled = [x.model_copy(update={"scores": s.scores, "score": s.scores[labeller.id], "passed": s.passed})
                for x, s in zip(rows, run.scored, strict=True)]
    if not any(x.score is not None for x in labelled):
        raise RewardStageError(f"reward.labeller ({labeller.id}): applies to none of the {len(rows)} samples "
                               f"(every score is None): does the prompts role carry the column it reads?")
    path = write_rows(out_dir / "labelled.jsonl", labelled)
    return labelled, Artifact.of(path), labeller.lineage(), sampled.policy_model_id


def reward_pairs(config: PipelineConfig, policy: Checkpoint, prompts: Artifact | None, preferences: Artifact | None,
                 out_dir: Path) -> RewardPairsResult:
    """``train.jsonl`` and ``heldout.jsonl`` (PairRow) for the reward model: from ``preferences`` when
    given, else from the policy's labelled samples of ``prompts`` (see the module docstring).

    Raises:
        ValueError: neither input; the labeller applies to no sample; either side of the split has no
        pair (naming the keys that size it).
    """
    start = time.perf_counter()
    r, out_dir = config.reward, Path(out_dir)
    samples: Artifact | None = None
    if preferences is not None:
        made = offline.preference_pairs(config, policy, preferences, out_dir / "preferences")
        columns = {e.id: e.columns for e in read_examples(preferences)}
        pairs = [p.model_copy(update={"categories": pair_categories(columns.get(p.problem_id, {}))})
                 for p in read_rows(made.pairs.file, PairRow)]
        source, labeller, policy_id = "preferences", {}, policy.model_id
    elif prompts is not None:
        rows, samples, labeller, policy_id = _labelled_samples(config, policy, prompts, out_dir)
        lineage = {"source": f"labeller:{labeller['id']}", "labeller": labeller, "policy_model_id": policy_id,
                   "sampling_seed": config.seed * 1000, "temperature": config.sampling.temperature,
                   "labelled_md5": samples.md5}
        columns = {x.prompt_id: x.columns for x in rows}
        pairs = [p.model_copy(update={"categories": pair_categories(columns[p.problem_id])})
                 for p in build_pairs(rows, r.pair_strategy, r.max_pairs_per_prompt, config.seed, lineage)]
        source = lineage["source"]
    else:
        raise RewardStageError("the reward_model stage needs data.sources.preferences or prompts for reward.labeller")
    train, heldout = _split(pairs, r.heldout_fraction, config.data.seed)
    if not train or not heldout:
        raise RewardStageError(f"the reward model's {len(pairs)} pairs left {len(train)} to train on and "
                               f"{len(heldout)} held out: raise reward.prompts (or reward.samples_per_prompt), or "
                               f"set reward.heldout_fraction nearer 0.5")
    return RewardPairsResult(train=Artifact.of(write_rows(out_dir / "train.jsonl", train)),
                             heldout=Artifact.of(write_rows(out_dir / "heldout.jsonl", heldout)),
                             samples=samples, n_train=len(train), n_heldout=len(heldout), source=source,
                             labeller=labeller, policy_model_id=policy_id, seconds=elapsed(start))


def _reward_pairs(rows: Sequence[PairRow], eos: str) -> list[RewardPair]:
    """Pair rows as the reward trainer reads them: whole responses closed with EOS, as the
    ``reward_model`` scorer closes a completion it scores."""
    return [RewardPair(p.prompt, p.chosen + eos, p.rejected + eos) for p in rows]


def heldout_metrics(model: RewardModel, tokenizer: Any, heldout: Sequence[PairRow], config: RewardConfig,
                    ) -> tuple[dict[str, float], torch.Tensor]:
    """``reward/…`` metrics of ``model`` on the held-out pairs, and the logits of the pairs that fit
    ``reward.max_length`` (a pair that does not has no score and is left out; ``reward/unscored_pairs``).

    Raises:
        ValueError: no held-out pair fits max_length.
    """
    eos = cast(str, tokenizer.eos_token or "")
    logits = score_pairs(model, tokenizer, _reward_pairs(heldout, eos), config, batch_size=config.batch_size)
    scored = [i for i, v in enumerate(logits.tolist()) if not math.isnan(v)]
    if not scored:
        raise RewardStageError(f"none of the {len(heldout)} held-out pairs fits reward.max_length {config.max_length}")
    kept = logits[scored]
    metrics = reward_model_metrics(kept, [heldout[i].categories for i in scored], prefix=PREFIX)
    metrics[f"{PREFIX}unscored_pairs"] = float(len(heldout) - len(scored))
    return metrics, kept


def train_reward_model(config: PipelineConfig, policy: Checkpoint, pairs: RewardPairsResult, out_dir: Path,
                       on_step: StepHook | None = None, model_root: Path | None = None) -> RewardModelResult:
    """Train, evaluate on the held-out pairs, plot the calibration and save the reward model to
    ``<model_root>/model-<md5 of the training pairs>`` (``model_root`` default: ``out_dir``; the pipeline
    keeps models in its checkpoint directory, which DVC does not track). The metrics file and the plot go
    to ``out_dir`` (the workspace, DVC-tracked).

    Raises:
        ValueError: no training row fits ``reward.max_length`` (``train_reward``), or no held-out pair does.
    """
    start = time.perf_counter()
    r, out_dir = config.reward, Path(out_dir)
    loaded = load_checkpoint(policy.dir, merge=True)
    tokenizer = loaded.tokenizer
    eos = cast(str, tokenizer.eos_token or "")
    torch.manual_seed(config.seed)  # the head's initialisation
    model = RewardModel(loaded.model.requires_grad_(True), head=r.head, n_attributes=r.n_attributes, gpm_k=r.gpm_k)
    if r.trainable_layers is not None:
        freeze_below_top_layers(model, r.trainable_layers)
    train_rows = read_rows(pairs.train.file, PairRow)
    rows: list[RewardPair] | list[AttributeExample]
    if r.loss == "regression":  # the labeller's score of every sample of a training prompt, one attribute
        if pairs.samples is None:
            raise RewardStageError("reward.loss regression needs the labeller's scores of samples; these pairs came "
                                   "from a preferences source")
        train_prompts = {p.problem_id for p in train_rows}
        rows = [AttributeExample(x.prompt, x.completion + eos, [x.score])
                for x in read_rows(pairs.samples.file, CompletionRow)
                if x.prompt_id in train_prompts and x.score is not None]
    else:
        rows = _reward_pairs(train_rows, eos)
    with training_progress("reward model", n_steps(len(rows), r.batch_size, r.epochs), on_step,
                           metric_prefix=PREFIX) as hook:
        trained = train_reward(model, tokenizer, rows, r, seed=config.seed, on_step=hook)
    fit = report_fit(trained.fit, pairs.train.path, "reward", r.max_length, r.max_truncation_rate_warning)
    metrics, logits = heldout_metrics(model, tokenizer, read_rows(pairs.heldout.file, PairRow), r)
    plot = plot_calibration(logits, out_dir / "calibration.png",
                            f"reward model ({r.loss}) on {logits.numel()} held-out pairs: accuracy "
                            f"{metrics[METRIC]:.3f}")
    # named by its training pairs too: other pairs (a labeller's edited code) make another model, in another
    # directory, so everything keyed by the scorer's model (score caches, the rounds' task caches) recomputes
    model_id = stage_model_id(f"reward-model-{pairs.train.md5[:8]}", config.content_hash(), __name__)
    model_dir = Path(model_root or out_dir) / f"model-{pairs.train.md5[:12]}"
    # its base is the policy's (the model the SFT started from; the policy itself when it names none): the
    # registry names that base, never this directory
    base_path = str(read_metadata(policy.dir).get("base_path") or policy.dir)
    metadata = checkpoint_metadata(config.content_hash(), model_id, policy.model_id, "reward_model", base_path,
                                   {"train_pairs": pairs.train.ref(), "heldout_pairs": pairs.heldout.ref()},
                                   config.seed, reward_loss=r.loss, rank_attribute=r.rank_attribute,
                                   pairs_source=pairs.source, labeller=pairs.labeller, heldout_metrics=metrics)
    save_reward_model(model, tokenizer, model_dir, metadata)
    metrics_file = write_json_atomic(out_dir / "metrics.json", {"model_id": model_id, "metrics": metrics,
                                                               "history": trained.history})
    return RewardModelResult(checkpoint=Checkpoint(path=str(model_dir), model_id=model_id), metrics=metrics,
                             steps=trained.steps, history=trained.history, calibration_plot=str(plot),
                             metrics_file=Artifact.of(metrics_file), fit=fit, seconds=elapsed(start))


def evaluate_reward_model(config: PipelineConfig, reward_model: Checkpoint, heldout: Artifact,
                          out_dir: Path) -> RewardEvalResult:
    """A saved reward model (``save_reward_model``; e.g. production's) on these held-out pairs: the same
    ``reward/…`` metrics as its training stage reports, so two models compare on the same pairs.

    Raises:
        FileNotFoundError: ``reward_model`` is not an alignflow reward model directory.
    """
    start = time.perf_counter()
    model, tokenizer, meta = load_reward_model(reward_model.dir)
    reward = config.reward.model_copy(update={"rank_attribute": int(meta.get("rank_attribute", 0))})
    metrics, logits = heldout_metrics(model, tokenizer, read_rows(heldout.file, PairRow), reward)
    plot_calibration(logits, Path(out_dir) / "calibration.png",
                     f"{reward_model.model_id} on {logits.numel()} held-out pairs: accuracy {metrics[METRIC]:.3f}")
    metrics_file = write_json_atomic(Path(out_dir) / "metrics.json", {"model_id": reward_model.model_id,
                                                                      "heldout": heldout.ref(), "metrics": metrics})
    return RewardEvalResult(model_id=reward_model.model_id, metrics=metrics, metrics_file=Artifact.of(metrics_file),
                            calibration_plot=str(Path(out_dir) / "calibration.png"), seconds=elapsed(start))


def scoring_reward_model(trained: Checkpoint, passed: bool, production: Checkpoint | None,
                         needed: bool, registered_model: str) -> Checkpoint:
    """The reward model the rounds score with: the one just trained when its gate passed; else the
    production one; else — when a scorer needs one — none (an error).

    Raises:
        RewardStageError: the trained model failed its gate, nothing is in production, and a scorer needs it.
    """
    if passed:
        return trained
    if production is not None:
        return production
    if needed:
        raise RewardStageError(f"the reward model {trained.model_id} failed its gate (reward/accuracy against "
                         f"reward.min_accuracy; see its gate report) and {registered_model} has no production "
                         f"version: rounds will not optimize it. Lower reward.min_accuracy to use it anyway, or "
                         f"give it more pairs (reward.prompts, reward.samples_per_prompt)")
    return trained


def bind_reward_model(config: PipelineConfig, model_dir: str) -> PipelineConfig:
    """``config`` with every reward_model scorer that names no model (the pipeline's own) pointed at
    ``model_dir``: what the stages after the reward_model stage score with."""
    scorers = [s.model_copy(update={"model": model_dir}) if s.type == "reward_model" and s.model is None else s
               for s in config.scoring.scorers]
    return config.model_copy(update={"scoring": config.scoring.model_copy(update={"scorers": scorers})})


def needs_pipeline_reward_model(config: PipelineConfig) -> bool:
    """Whether a scorer scores with the pipeline's reward model (a reward_model scorer without model)."""
    return any(s.type == "reward_model" and s.model is None for s in config.scoring.scorers)
