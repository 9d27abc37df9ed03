"""Held-out evaluation for any task: every scorer's mean and pass rate, mean response length, and a
KL estimate to the reference.

Greedy completions of the eval prompts are scored by every configured scorer (``scoring/``). Per
scorer: ``eval/<id>/mean`` (over the rows it applies to) and, when it has a pass rule,
``eval/<id>/pass_rate``. The primary (first) scorer's pass rate is also ``eval/accuracy`` — on the
arithmetic task, exactly the old accuracy — and its per-group pass rates ``eval/accuracy_<c><v>``
for ``eval.group_by`` columns (``eval/accuracy_d1``: difficulty 1). A scorer's finer verdicts
(``Scorer.details``) are averaged over the rows that have them: ``eval/<id>/<name>``, e.g. the
``constraints`` verifier's ``eval/constraints/kind/title``. ``promotion_metric`` names the metric the
promotion gate compares.

The KL estimate is Monte Carlo at sequence level: sample y ~ π on held-out prompts and average
log π(y|x) − log π_ref(y|x). It is unbiased for KL(π‖π_ref) (noisy at small sample counts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch

from alignflow.components.config import PipelineConfig, SamplerCompile, SamplingBackend
from alignflow.components.data.schemas import PredictionRow
from alignflow.components.modeling.checkpoints import LoadedModel
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.modeling.logprobs import encode_pairs, sequence_logprobs
from alignflow.components.scoring.base import ScoreCache, Scorer, ScoringItem, score_all


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: list[PredictionRow]


def promotion_metric(config: PipelineConfig, pass_rule: bool | None = None) -> str:
    """The metric the gate compares: ``promotion.metric``, or for ``auto`` the primary scorer's pass
    rate (``eval/accuracy``) when it has a pass rule, else its mean (``eval/<id>/mean``).
    ``pass_rule``: whether the primary scorer has one (default: from its spec and type)."""
    if config.promotion.metric != "auto":
        return config.promotion.metric
    primary = config.scoring.scorers[0]
    if pass_rule is None:
        from alignflow.components.scoring.verifiers import VERIFIERS

        pass_rule = primary.pass_threshold is not None or primary.type in VERIFIERS
    return "eval/accuracy" if pass_rule else f"eval/{primary.id}/mean"


def group_key(column: str, value: object) -> str:
    """``eval/accuracy_<first letter of the column><value>``: difficulty 1 → ``eval/accuracy_d1``."""
    return f"eval/accuracy_{column[:1]}{value}"


def score_metrics(scorers: Sequence[Scorer], predictions: Sequence[PredictionRow], group_by: Sequence[str]
                  ) -> dict[str, float]:
    """The per-scorer eval metrics of scored predictions (see the module docstring)."""
    n = len(predictions)
    metrics: dict[str, float] = {"eval/n": float(n),
                                 "eval/mean_length": sum(p.n_tokens for p in predictions) / max(1, n)}
    for scorer in scorers:
        values = [p.scores[scorer.id] for p in predictions if p.scores.get(scorer.id) is not None]
        total = sum(v for v in values if v is not None)
        metrics[f"eval/{scorer.id}/mean"] = total / len(values) if values else math.nan
        metrics[f"eval/{scorer.id}/coverage"] = len(values) / max(1, n)
        if scorer.pass_threshold is not None and values:
            metrics[f"eval/{scorer.id}/pass_rate"] = (sum(v >= scorer.pass_threshold for v in values if v is not None)
                                                      / len(values))
    details: dict[str, list[float]] = {}
    for p in predictions:
        for key, value in p.details.items():
            details.setdefault(key, []).append(value)
    metrics.update({f"eval/{key}": sum(values) / len(values) for key, values in sorted(details.items())})
    primary = scorers[0]
    if f"eval/{primary.id}/pass_rate" in metrics:
        metrics["eval/accuracy"] = metrics[f"eval/{primary.id}/pass_rate"]
        for column in group_by:
            groups = sorted({p.groups[column] for p in predictions if column in p.groups}, key=str)
            for value in groups:
                subset = [p for p in predictions if p.groups.get(column) == value and p.passed is not None]
                if subset:
                    metrics[group_key(column, value)] = sum(bool(p.passed) for p in subset) / len(subset)
    return metrics


def evaluate_policy(policy: LoadedModel, items: Sequence[ScoringItem], prompts: Sequence[str],
                    scorers: Sequence[Scorer],
                    batch_size: int, max_new_tokens: int, group_by: Sequence[str] = (),
                    on_batch: Callable[[int], None] | None = None, cache: ScoreCache | None = None,
                    backend: SamplingBackend = "auto", compile: SamplerCompile = "auto") -> EvalResult:
    """Greedy completions of ``prompts`` (rendered, one per item), scored by every scorer.

    ``items``: the eval rows as scorers see them (their ``completion`` is ignored and replaced by
    the generated text).
    """
    completions = generate_completions(policy.model, policy.tokenizer, list(prompts), k=1, do_sample=False,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch,
                                       backend=backend, compile=compile)
    generated = [ScoringItem(item.prompt_id, item.prompt, c.text, item.columns)
                 for item, c in zip(items, completions, strict=True)]
    scored = score_all(scorers, generated, cache).scored
    details: list[dict[str, float]] = [{} for _ in generated]
    for scorer in scorers:
        for row, found in zip(details, scorer.details(generated), strict=True):
            row.update({f"{scorer.id}/{k}": v for k, v in found.items()})
    predictions = [PredictionRow(prompt_id=item.prompt_id, completion=c.text, n_tokens=c.n_tokens, scores=s.scores,
                                 passed=s.passed, groups={k: item.columns[k] for k in group_by if k in item.columns},
                                 details=d)
                   for item, c, s, d in zip(items, completions, scored, details, strict=True)]
    return EvalResult(metrics=score_metrics(scorers, predictions, group_by), predictions=predictions)


@torch.no_grad()
def kl_estimate(policy: LoadedModel, reference: LoadedModel, prompts: Sequence[str], n_samples: int,
                max_new_tokens: int, batch_size: int, seed: int, backend: SamplingBackend = "auto",
                compile: SamplerCompile = "auto") -> float:
    """Mean over the first ``n_samples`` rendered prompts of log π(y|x) − log π_ref(y|x), y ~ π (nats)."""
    if n_samples == 0 or not prompts:
        return float("nan")
    chosen = list(prompts[:n_samples])
    samples = generate_completions(policy.model, policy.tokenizer, chosen, k=1, do_sample=True, temperature=1.0,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, backend=backend,
                                   compile=compile)
    eos = cast(str, policy.tokenizer.eos_token)
    # A sample that stopped at EOS: score the EOS too, as it was part of what π produced.
    texts = [s.text + (eos if s.stopped_at_eos else "") for s in samples]
    total = 0.0
    for start in range(0, len(texts), batch_size):
        batch = encode_pairs(policy.tokenizer, chosen[start:start + batch_size], texts[start:start + batch_size],
                             10_000)
        total += (sequence_logprobs(policy.model, batch) - sequence_logprobs(reference.model, batch)).sum().item()
    return total / len(texts)
