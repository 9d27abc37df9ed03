"""Prefect tasks of the pipeline's reward_model stage (``components/stages/reward_model.py``):
``tracked_step`` around each stage function, cached by ``compute``; resolving a registered reward
model is never cached (an alias moves)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alignflow.components.modeling.checkpoints import ModelSourceError
from alignflow.components.modeling.reward_model import is_reward_model, is_sequence_classifier
from alignflow.components.stages import reward_model as stage
from alignflow.components.stages.resolve import resolve_alias, resolve_model
from alignflow.components.stages.results import (
    Artifact,
    Checkpoint,
    ResolvedModel,
    RewardEvalResult,
    RewardModelResult,
    RewardPairsResult,
)
from alignflow.tasks.context import (
    TrackingContext,
    compute,
    config_of,
    retry_unless_deterministic,
    section_params,
    tracked_step,
    versioned_dir,
)

STAGE = stage.__name__
PAIRS_SCHEMA = {"row": "alignflow.components.data.schemas.PairRow"}


@task(name="reward-pairs", **compute(STAGE))
def reward_pairs_task(config: dict[str, Any], policy: Checkpoint, prompts: Artifact | None,
                      preferences: Artifact | None, out_dir: str, ctx: TrackingContext) -> RewardPairsResult:
    source = ([("preferences", preferences, "reward-model")] if preferences is not None else
              [("prompts", prompts, "sampling")] if prompts is not None else [])
    return tracked_step(
        ctx, "reward-pairs",
        lambda _: stage.reward_pairs(config_of(config), policy, prompts, preferences, versioned_dir(out_dir, STAGE)),
        stage_module=STAGE, inputs=source, timer="reward_pairs",
        outputs=lambda r: [("reward-train-pairs", r.train, "training", PAIRS_SCHEMA, {"rows": r.n_train}),
                           ("reward-heldout-pairs", r.heldout, "evaluation", PAIRS_SCHEMA, {"rows": r.n_heldout})],
        metrics=lambda r: {"reward_pairs/n_train": r.n_train, "reward_pairs/n_heldout": r.n_heldout},
        tags=lambda r: {"pairs_source": r.source, "policy_model_id": r.policy_model_id,
                        **{f"labeller.{k}": v for k, v in r.labeller.items()}})


@task(name="reward-train", **compute(STAGE))
def reward_train_task(config: dict[str, Any], policy: Checkpoint, pairs: RewardPairsResult, out_dir: str,
                      checkpoint_dir: str, ctx: TrackingContext) -> RewardModelResult:
    """``out_dir``: the workspace's (metrics, plot: DVC-tracked); ``checkpoint_dir``: where the model goes."""
    return tracked_step(
        ctx, "reward-train",
        lambda on_step: stage.train_reward_model(config_of(config), policy, pairs, versioned_dir(out_dir, STAGE),
                                                 on_step, versioned_dir(checkpoint_dir, STAGE)),
        stage_module=STAGE, inputs=[("reward-train-pairs", pairs.train, "training"),
                                    ("reward-heldout-pairs", pairs.heldout, "evaluation")],
        params=section_params("reward", config["reward"]),
        metrics=lambda r: {**r.metrics, **r.fit.metrics("reward")},
        tags=lambda r: {"model_id": r.checkpoint.model_id, "pairs_source": pairs.source},
        artifacts=lambda r: [(r.calibration_plot, "reward_model"), (r.metrics_file.path, "reward_model")])


@task(name="reward-eval", **compute(STAGE))
def reward_eval_task(config: dict[str, Any], reward_model: Checkpoint, heldout: Artifact, label: str, out_dir: str,
                     ctx: TrackingContext) -> RewardEvalResult:
    """Another reward model (``label``: e.g. production-v3) on the same held-out pairs."""
    return tracked_step(
        ctx, f"reward-eval:{label}",
        lambda _: stage.evaluate_reward_model(config_of(config), reward_model, heldout,
                                              versioned_dir(out_dir, STAGE, f"eval-{label}")),
        stage_module=STAGE, inputs=[("reward-heldout-pairs", heldout, "evaluation")], timer="reward_eval",
        metrics=lambda r: r.metrics, tags=lambda r: {"model_id": r.model_id},
        artifacts=lambda r: [(r.calibration_plot, f"reward_model/{label}")])


# Not cached: the alias may have moved since; the download itself is cached on disk, once per version.
@task(name="resolve-reward-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_deterministic)
def resolve_reward_task(config: dict[str, Any], ctx: TrackingContext) -> ResolvedModel:
    """``reward.source``: a registered reward model or a directory.

    Raises:
        ModelSourceError: it resolves to a directory that is neither an alignflow reward model nor a
        Hugging Face sequence-classification directory (naming reward.source).
        LookupError: a registered model, version or alias that does not exist.
    """
    cfg = config_of(config)
    spec = cfg.reward.source
    assert spec is not None  # the flow calls it only then
    resolved = resolve_model(spec, "reward.source", ctx.tracker(), Path(cfg.state_dir).resolve() / "registry")
    if not is_reward_model(resolved.checkpoint.dir) and not is_sequence_classifier(resolved.checkpoint.dir):
        raise ModelSourceError(f"reward.source: '{spec}' ({resolved.checkpoint.path}) is neither an alignflow reward "
                               f"model nor a Hugging Face sequence-classification directory (config.json's "
                               f"architectures must name a …ForSequenceClassification head; a causal LM has no "
                               f"trained score head)")
    return resolved


@task(name="production-reward-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_unless_deterministic)
def production_reward_task(config: dict[str, Any], ctx: TrackingContext) -> ResolvedModel | None:
    """The production version of ``reward.registered_model`` (downloaded), or None."""
    cfg = config_of(config)
    return resolve_alias(ctx.tracker(), cfg.reward.registered_model, "production",
                         Path(cfg.state_dir).resolve() / "registry")
