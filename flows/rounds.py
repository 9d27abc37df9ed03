"""One alignment round as a resumable subflow: collect pairs → quality report → [reward-ensemble
curation] → train → eval. The collector (``rounds.kind``, or ``offline`` for round 0):

- ``offline``: the ``preferences`` source's pairs, trained on directly (offline DPO; round 0, before
  any on-policy round);

- ``on_policy``: sample k completions per prompt, the configured scorers score them, pairs by
  ``pairs.strategy``;
- ``mcts``: step-level MCTS with the current policy (ALGORITHMS.md §2), step pairs with visit-count
  ε, trees logged as JSON and one as an HTML picture;
- ``synthesized``: a pool of policies (the current one, earlier checkpoints, several temperatures)
  answers, the registered judge rates each completion per aspect with its tools, ratings are
  binarized (§9), optionally with rationales for rationale-enriched DPO (§4).

Every round's pair file gets a quality report (MLflow metrics, table and PNG) and its thresholds
(``quality:``) are checked before any training.

A finished round leaves ``round.json`` (written last, atomically) with its key: the policy and
reference it started from, its data, and the code version of every stage it ran. A re-run whose
key matches only re-reports the round's metrics under the new pipeline run; otherwise (a crash
midway, edited code, another policy in) the round runs, and its unaffected tasks come back from
Prefect's result cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict

from alignflow.components.collection.synthesis import resolve_pool
from alignflow.components.config import PipelineConfig
from alignflow.components.platform.atomic import write_text_atomic
from alignflow.components.platform.codeversion import code_version
from alignflow.components.platform.faults import maybe_kill_after_round
from alignflow.components.scoring.python import user_code_version
from alignflow.components.stages.results import Artifact, Checkpoint, DataResult, PairsResult, RoundResult
from alignflow.tasks.context import TrackingContext
from alignflow.tasks.runs import log_metrics_task, tracked_run
from alignflow.tasks.stages import (
    evaluate_task,
    mcts_task,
    offline_pairs_task,
    pairs_task,
    quality_task,
    sample_task,
    score_task,
    strength_task,
    train_task,
)
from alignflow.tasks.synthesis import (
    bias_metrics,
    position_bias_task,
    resolve_judge_task,
    synth_pairs_task,
    synth_rate_task,
    synth_sample_task,
)


class RoundLayout(BaseModel):
    """Where a round writes: its files (``round_dir``), its checkpoint, the shared reference-log-prob cache."""

    model_config = ConfigDict(frozen=True)

    round_dir: str
    checkpoint_dir: str
    ref_cache_dir: str


@dataclass(frozen=True)
class Collected:
    """What a collector hands the rest of the round."""

    pairs: PairsResult
    seconds: dict[str, float]
    metrics: dict[str, float]
    files: dict[str, Artifact] = field(default_factory=dict)
    judge: str | None = None


def _collect_offline(config: dict[str, Any], round_index: int, policy: Checkpoint, data: DataResult,
                     round_dir: str, ctx: TrackingContext, named_models: dict[str, Checkpoint]) -> Collected:
    pairs = offline_pairs_task(config, policy, data.role("preferences"), round_dir, ctx)
    return Collected(pairs=pairs, seconds={"pairs": pairs.seconds}, metrics={})


def _collect_on_policy(config: dict[str, Any], round_index: int, policy: Checkpoint, data: DataResult,
                       round_dir: str, ctx: TrackingContext, named_models: dict[str, Checkpoint]) -> Collected:
    sampled = sample_task(config, policy, data.role("prompts"), round_index, round_dir, ctx)
    scored = score_task(config, sampled.samples, round_index, round_dir, ctx)
    pairs = pairs_task(config, scored, sampled.policy_model_id, round_index, sampled.seed, round_dir, ctx)
    return Collected(pairs=pairs, seconds={"sampling": sampled.seconds, **scored.time_split(), "pairs": pairs.seconds},
                     metrics={"round/sample_accuracy": scored.sample_accuracy,
                              **{f"round/sample_{k}_mean": v for k, v in scored.score_means.items()}},
                     files={"samples": sampled.samples, "scored": scored.scored})


def _collect_mcts(config: dict[str, Any], round_index: int, policy: Checkpoint, data: DataResult, round_dir: str,
                  ctx: TrackingContext, named_models: dict[str, Checkpoint]) -> Collected:
    searched = mcts_task(config, policy, data.role("prompts"), round_index, round_dir, ctx)
    return Collected(pairs=searched, seconds={"search": searched.seconds},
                     metrics={"round/search_final_accuracy": searched.final_accuracy, "round/trees": searched.n_trees,
                              "round/trees_kept": searched.trees_kept, "round/search_nodes": searched.n_nodes,
                              "round/search_nodes_per_second": searched.nodes_per_second},
                     files={"trees": searched.trees})


def _collect_synthesized(config: dict[str, Any], round_index: int, policy: Checkpoint, data: DataResult,
                         round_dir: str, ctx: TrackingContext, named_models: dict[str, Checkpoint]) -> Collected:
    cfg = PipelineConfig.model_validate(config)
    pool = resolve_pool(cfg, {name: c.path for name, c in {**named_models, "current": policy}.items()})
    judge = resolve_judge_task(config, ctx)
    sampled = synth_sample_task(config, pool, data.role("prompts"), round_index, round_dir, ctx)
    rated = synth_rate_task(config, judge.checkpoint, sampled.completions, round_index, round_dir, ctx)
    pairs = synth_pairs_task(config, rated.ratings, rated.judge_model_id, round_index, sampled.seed, round_dir, ctx,
                             rationale_model=judge.checkpoint if cfg.synthesis.rationales else None)
    metrics = {"round/pool_completions": sampled.n_completions, "round/judge_malformed_rate": rated.malformed_rate,
               "round/prompts_with_a_pair": pairs.prompts_with_a_pair}
    if cfg.synthesis.position_bias_pairs and pairs.n_pairs:
        metrics.update(bias_metrics(position_bias_task(config, judge.checkpoint, pairs.pairs, f"r{round_index}", ctx)))
    return Collected(pairs=pairs, seconds={"sampling": sampled.seconds, "judging": rated.seconds,
                                           "pairs": pairs.seconds},
                     metrics=metrics, files={"ratings": rated.ratings}, judge=judge.source)


Collector = Callable[..., Collected]
# each collector and the stage modules its tasks run: their code versions are part of the round's key
COLLECTORS: dict[str, tuple[Collector, tuple[str, ...]]] = {
    "offline": (_collect_offline, ("offline",)),
    "on_policy": (_collect_on_policy, ("sample", "score", "pairs")),
    "mcts": (_collect_mcts, ("mcts",)),
    "synthesized": (_collect_synthesized, ("synthesis",)),
}
ALWAYS = ("quality", "strength", "launch", "evaluate", "sharded")  # sharded: sample/evaluate on several ranks


def round_key(config: dict[str, Any], kind: str, policy: Checkpoint, reference: Checkpoint,
              data: DataResult) -> tuple[str, dict[str, str]]:
    """What a finished round depends on — config, policy and reference in, data, the code of its
    stages — as one hash, and the code versions it holds."""
    modules = [f"alignflow.components.stages.{m}" for m in (*COLLECTORS[kind][1], *ALWAYS)]
    versions = {m.rsplit(".", 1)[-1]: code_version(m) for m in modules}
    files = {role: (getattr(data, role).md5 if getattr(data, role) else None)
             for role in ("prompts", "preferences", "eval")}
    cfg = PipelineConfig.model_validate(config)
    versions["user_scorers"] = user_code_version(cfg.scoring.scorers)
    payload = {"config": cfg.content_hash(), "kind": kind, "policy": policy.model_id, "reference": reference.model_id,
               "data": files, "code": versions}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16], versions


def finished_round(manifest: Path, key: str) -> RoundResult | None:
    """The round ``manifest`` records, if it finished with this very key."""
    if not manifest.exists():
        return None
    done = RoundResult.model_validate_json(manifest.read_text())
    return done if done.key == key else None


@flow(name="round", flow_run_name="round-{round_index}")
def alignment_round(config: dict[str, Any], round_index: int, kind: str, policy: Checkpoint, reference: Checkpoint,
                    data: DataResult, layout: RoundLayout, ctx: TrackingContext,
                    named_models: dict[str, Checkpoint] | None = None,
                    run_tags: dict[str, Any] | None = None) -> RoundResult:
    """``kind``: a collector of COLLECTORS (``rounds.kind``, or ``offline`` for round 0). ``run_tags``:
    more tags of the round's MLflow run (a continuing round's lineage id and parent version)."""
    collect = COLLECTORS[kind][0]
    key, versions = round_key(config, kind, policy, reference, data)
    manifest_path = Path(layout.round_dir) / "round.json"
    tags = {"alignflow.kind": "round", "round": round_index, "round_kind": kind, "policy_in": policy.model_id,
            "round_key": key, **(run_tags or {})}
    with tracked_run(ctx, f"round-{round_index}", tags) as (round_run, round_ctx):
        done = finished_round(manifest_path, key)
        if done is not None:
            log_metrics_task(round_ctx, round_run, done.metrics, step=round_index,
                             tags={"resumed": "true", "policy_out": done.policy.model_id})
            return done
        started = time.perf_counter()
        collected = collect(config, round_index, policy, data, layout.round_dir, round_ctx, named_models or {})
        pairs = collected.pairs
        quality = quality_task(config, pairs.pairs, data.eval, f"r{round_index}",
                               str(Path(layout.round_dir) / "quality"), round_ctx)
        compute = dict(collected.seconds)
        training_pairs = pairs.pairs
        if config["reward"]["strength_mode"] != "none":  # curate with a reward-model ensemble first
            curated = strength_task(config, reference, pairs.pairs, round_index, layout.round_dir, round_ctx)
            training_pairs, compute["strength"] = curated.pairs, curated.seconds
        trained = train_task(config, policy, reference, training_pairs, round_index, layout.checkpoint_dir,
                             layout.ref_cache_dir, round_ctx)
        evaluated = evaluate_task(config, trained.checkpoint, reference, data.eval,
                                  str(Path(layout.round_dir) / "eval"),
                                  config["seed"] + round_index, f"r{round_index}", round_ctx)
        wall = time.perf_counter() - started
        compute.update({"training": trained.seconds, "eval": evaluated.seconds})
        metrics = {**evaluated.metrics, **collected.metrics, **quality.metrics, "round/n_pairs": pairs.n_pairs,
                   **{f"train_final/{k.removeprefix('train/')}": v for k, v in trained.final_metrics.items()},
                   **{f"time/{k}_seconds": v for k, v in compute.items()},
                   "time/round_wall_seconds": wall,
                   "time/tracking_overhead_seconds": max(0.0, wall - sum(compute.values()))}
        result = RoundResult(round=round_index, kind=kind, key=key, policy=trained.checkpoint, metrics=metrics,
                             pairs=pairs.pairs, training_pairs=training_pairs, quality=quality,
                             collected=collected.files, judge=collected.judge, code_versions=versions)
        log_metrics_task(round_ctx, round_run, metrics, step=round_index,
                         tags={"policy_out": trained.checkpoint.model_id})
    write_text_atomic(manifest_path, result.model_dump_json(indent=1))
    maybe_kill_after_round(round_index)
    return result
