"""Stage ``evaluate``: a policy's held-out metrics — every scorer's mean and pass rate, mean length,
KL to its reference (``evaluation/policy.py``)."""

from __future__ import annotations

import time
from pathlib import Path

from alignflow.components.config import PipelineConfig
from alignflow.components.data.io import write_rows
from alignflow.components.evaluation.policy import evaluate_policy, kl_estimate
from alignflow.components.modeling.checkpoints import load_checkpoint
from alignflow.components.modeling.sampler import collect_stats
from alignflow.components.platform.atomic import write_json_atomic
from alignflow.components.platform.progress import progress_bar
from alignflow.components.scoring.build import scoring_item
from alignflow.components.stages.common import elapsed, open_scorers, read_examples, render
from alignflow.components.stages.results import Artifact, Checkpoint, EvalResult
from alignflow.components.stages.score import scorer_models


def evaluate(config: PipelineConfig, policy: Checkpoint, reference: Checkpoint | None, eval_data: Artifact,
             out_dir: Path, seed: int) -> EvalResult:
    """Greedy answers to every eval prompt, scored by every scorer; with a ``reference``, the
    ``eval.kl_samples``-sample KL estimate too (sampling seeded by ``seed``)."""
    start = time.perf_counter()
    rows = read_examples(eval_data)
    loaded = load_checkpoint(policy.dir, merge=True)
    prompts = [render(config, loaded.tokenizer, r) for r in rows]
    scorers, cache = open_scorers(config)
    backend, compile = config.sampling.backend, config.sampling.compile
    with progress_bar("eval", len(rows)) as advance, collect_stats() as stats:
        result = evaluate_policy(loaded, [scoring_item(r, "") for r in rows], prompts, scorers, config.eval.batch_size,
                                 config.eval.max_new_tokens, config.eval.group_by, advance, cache, backend=backend,
                                 compile=compile)
    metrics = dict(result.metrics)
    if reference is not None and config.eval.kl_samples > 0:
        reference_model = load_checkpoint(reference.dir, merge=True)
        with collect_stats() as kl_stats:
            metrics["eval/kl_to_reference"] = kl_estimate(loaded, reference_model, prompts, config.eval.kl_samples,
                                                          config.eval.max_new_tokens, config.eval.batch_size, seed,
                                                          backend=backend, compile=compile)
        stats.add(kl_stats)
    out_dir = Path(out_dir)
    predictions = write_rows(out_dir / "predictions.jsonl", result.predictions)
    metrics_file = write_json_atomic(out_dir / "metrics.json", {
        "model_id": loaded.model_id, "metrics": metrics, "scorers": {s.id: s.version for s in scorers}})
    return EvalResult(metrics=metrics, predictions=Artifact.of(predictions), metrics_file=Artifact.of(metrics_file),
                      model_id=loaded.model_id, seconds=elapsed(start), stall_seconds=round(stats.stall_s, 3),
                      scorer_models=scorer_models(scorers))
