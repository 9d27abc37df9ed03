"""Held-out evaluation: task accuracy, mean response length, and a KL estimate to the reference.

The KL estimate is Monte Carlo at sequence level: sample y ~ π on held-out prompts and average
log π(y|x) − log π_ref(y|x). It is unbiased for KL(π‖π_ref) (noisy at small sample counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

from alignflow.components.config import SamplerCompile, SamplingBackend
from alignflow.components.data.answers import extract_answer
from alignflow.components.data.prompts import render_prompt
from alignflow.components.data.schemas import PredictionRow, ProblemRow
from alignflow.components.modeling.checkpoints import LoadedModel
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.modeling.logprobs import encode_pairs, sequence_logprobs


@dataclass
class EvalResult:
    metrics: dict[str, float]
    predictions: list[PredictionRow]


def evaluate_policy(policy: LoadedModel, problems: list[ProblemRow], batch_size: int, max_new_tokens: int,
                    on_batch: Callable[[int], None] | None = None, system_prompt: str | None = None,
                    backend: SamplingBackend = "auto", compile: SamplerCompile = "auto") -> EvalResult:
    prompts = [render_prompt(policy.tokenizer, p.question, system_prompt) for p in problems]
    completions = generate_completions(policy.model, policy.tokenizer, prompts, k=1, do_sample=False,
                                       max_new_tokens=max_new_tokens, batch_size=batch_size, on_batch=on_batch,
                                       backend=backend, compile=compile)
    predictions = []
    for problem, completion in zip(problems, completions, strict=True):
        value = extract_answer(completion.text)
        predictions.append(PredictionRow(
            problem_id=problem.id, answer=problem.answer, completion=completion.text, extracted=value,
            correct=value is not None and abs(value - problem.answer) < 1e-6, n_tokens=completion.n_tokens))
    n = len(predictions)
    metrics = {
        "eval/accuracy": sum(p.correct for p in predictions) / n,
        "eval/mean_length": sum(p.n_tokens for p in predictions) / n,
        "eval/answer_rate": sum(p.extracted is not None for p in predictions) / n,
        "eval/n": float(n),
    }
    for difficulty in sorted({p.difficulty for p in problems}):
        subset = [pred for prob, pred in zip(problems, predictions) if prob.difficulty == difficulty]
        metrics[f"eval/accuracy_d{difficulty}"] = sum(p.correct for p in subset) / len(subset)
    return EvalResult(metrics=metrics, predictions=predictions)


@torch.no_grad()
def kl_estimate(policy: LoadedModel, reference: LoadedModel, problems: list[ProblemRow], n_samples: int,
                max_new_tokens: int, batch_size: int, seed: int, system_prompt: str | None = None,
                backend: SamplingBackend = "auto", compile: SamplerCompile = "auto") -> float:
    if n_samples == 0 or not problems:
        return float("nan")
    chosen = problems[:n_samples]
    prompts = [render_prompt(policy.tokenizer, p.question, system_prompt) for p in chosen]
    samples = generate_completions(policy.model, policy.tokenizer, prompts, k=1, do_sample=True, temperature=1.0,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, backend=backend,
                                   compile=compile)
    eos = cast(str, policy.tokenizer.eos_token)
    # A sample that stopped early ended with EOS: score it too, as it was part of what π produced.
    texts = [s.text + (eos if s.n_tokens < max_new_tokens else "") for s in samples]
    total = 0.0
    for start in range(0, len(texts), batch_size):
        batch = encode_pairs(policy.tokenizer, prompts[start:start + batch_size], texts[start:start + batch_size],
                             10_000)
        total += (sequence_logprobs(policy.model, batch) - sequence_logprobs(reference.model, batch)).sum().item()
    return total / len(texts)
