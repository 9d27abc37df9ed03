"""reward_model: the pipeline's reward-model step, after SFT — its own nested MLflow run
``reward-model`` (under the pipeline's run) holding its tasks.

Composition only (``components/stages/reward_model.py`` says what each step computes). With
``reward.source`` the step resolves that reward model (a registered version or a directory) and
trains nothing. Otherwise: pairs (the preferences source, or the SFT policy's samples ranked by the
labeller) → pair quality report (held-out eval prompts must not be among them) → training and
held-out evaluation → production's reward model scored on the same held-out pairs → registered as
``reward.registered_model`` → gated (held-out accuracy ≥ ``reward.min_accuracy``, and not below
production's on those pairs) → aliases moved. The rounds then score with the model the gate
accepted (the production one when the new one was blocked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel

from alignflow.components.config import PipelineConfig
from alignflow.components.evaluation.gates import Remeasured
from alignflow.components.stages.results import Checkpoint, DataResult
from alignflow.components.stages.reward_model import METRIC, needs_pipeline_reward_model, scoring_reward_model
from alignflow.tasks.context import TrackingContext
from alignflow.tasks.reward import (
    production_reward_task,
    resolve_reward_task,
    reward_eval_task,
    reward_pairs_task,
    reward_train_task,
)
from alignflow.tasks.runs import log_metrics_task, promote_task, register_task, tracked_run
from alignflow.tasks.stages import quality_task


class RewardStep(BaseModel):
    """What the pipeline's reward-model step hands the rest of the pipeline."""

    checkpoint: Checkpoint  # the reward model the rounds score with
    source: str  # how it was obtained: "trained: <name>/v<N>" or reward.source and the version it meant
    trained: Checkpoint | None = None  # the model this step trained (None with reward.source)
    version: str | None = None  # its registered version
    promotion: dict[str, Any] = {}  # its gate report
    metrics: dict[str, float] = {}  # its held-out metrics (reward/…)


@flow(name="reward_model", flow_run_name="reward-model")
def reward_model_step(config: dict[str, Any], policy: Checkpoint, data: DataResult, workspace: str,
                      checkpoint_dir: str, ctx: TrackingContext) -> RewardStep:
    """``policy``: the SFT model (the labeller ranks its samples; the reward model starts from its
    backbone). ``workspace`` / ``checkpoint_dir``: where its files and its model go. ``ctx``: the
    pipeline's tracking context."""
    cfg = PipelineConfig.model_validate(config)
    r = cfg.reward
    with tracked_run(ctx, "reward-model", {"alignflow.kind": "reward_model", "policy_in": policy.model_id,
                                           "reward_loss": r.loss}) as (run, run_ctx):
        if r.source is not None:
            resolved = resolve_reward_task(config, run_ctx)
            log_metrics_task(run_ctx, run, {}, tags={"reward_model.source": resolved.source,
                                                     "reward_model.model_id": resolved.checkpoint.model_id})
            return RewardStep(checkpoint=resolved.checkpoint, source=resolved.source)
        preferences = data.preferences
        pairs = reward_pairs_task(config, policy, None if preferences else data.role("prompts"), preferences,
                                  str(Path(workspace) / "pairs"), run_ctx)
        quality = quality_task(config, pairs.train, data.eval, "reward", str(Path(workspace) / "quality"), run_ctx)
        trained = reward_train_task(config, policy, pairs, str(Path(workspace) / "train"), checkpoint_dir, run_ctx)
        production = production_reward_task(config, run_ctx)
        remeasured = None
        if production is not None and production.version is not None:
            measured = reward_eval_task(config, production.checkpoint, pairs.heldout,
                                        f"production-v{production.version}", str(Path(workspace) / "production"),
                                        run_ctx)
            remeasured = Remeasured(production.version, METRIC, measured.metrics[METRIC], pairs.heldout.md5)
        version = register_task(run_ctx, config, trained.checkpoint, METRIC, trained.metrics[METRIC],
                                pairs.heldout.md5, policy.model_id, float("nan"), name=r.registered_model,
                                extra_tags={"role": "reward_model", "reward_loss": r.loss,
                                            "pairs_source": pairs.source, "policy_model_id": policy.model_id,
                                            "reward_ece": trained.metrics["reward/ece"],
                                            **{f"labeller.{k}": v for k, v in pairs.labeller.items()}})
        decision = promote_task(run_ctx, config, version, str(Path(workspace) / "promotion"),
                                name=r.registered_model, min_delta=0.0, policy_gates=False,
                                min_metric=r.min_accuracy, remeasured=remeasured)
        use = scoring_reward_model(trained.checkpoint, decision["passed"],
                                   production.checkpoint if production is not None else None,
                                   needs_pipeline_reward_model(cfg), r.registered_model)
        source = (f"trained: {r.registered_model}/v{version}" if use == trained.checkpoint else
                  f"production: {r.registered_model}/v{production.version if production else '?'} (the new "
                  f"v{version} was blocked by its gate)")
        log_metrics_task(run_ctx, run, {**trained.metrics, **quality.metrics,
                                        **({"reward/production_accuracy_same_pairs": remeasured.value}
                                           if remeasured else {})},
                         tags={"reward_model.source": source, "reward_model.model_id": use.model_id,
                               "reward_model.version": version, "reward_model.gate_passed": decision["passed"]})
    return RewardStep(checkpoint=use, source=source, trained=trained.checkpoint, version=version,
                      promotion=decision, metrics=trained.metrics)
