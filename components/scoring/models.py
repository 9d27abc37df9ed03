"""Scorers backed by a model: a reward model and the LLM judge.

``reward_model``: an alignflow reward model (``modeling/reward_model.save_reward_model``: scalar or
multi-attribute head) or a Hugging Face sequence-classification directory (one logit), from a
directory or ``models:/name@alias``. The policy's completion is re-templated with the reward
model's own tokenizer — the row's prompt as chat messages, the completion as the assistant turn —
so policy and reward model need not share a tokenizer. Batched; no gradient.

``judge``: the pointwise LLM judge (``judges/judge.py``: its tools run first, then a rationale and a
score), the score mapped from its scale to [0, 1]; a malformed judgment is None (not applicable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from alignflow.components.config import PipelineConfig, ScorerSpec
from alignflow.components.scoring.base import Scorer, ScorerError, ScoringItem, gold_value

Messages = list[dict[str, Any]]
RenderMessages = Callable[[ScoringItem], Messages]


class RewardModelScorer(Scorer):
    """The reward model's scalar reward of (prompt, completion)."""

    def __init__(self, spec: ScorerSpec, model_dir: Path, model_id: str, render: RenderMessages,
                 max_length: int = 1024) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from alignflow.components.modeling.reward_model import (
            is_reward_model,
            is_sequence_classifier,
            load_reward_model,
        )

        super().__init__(spec)
        self.model_id, self.render, self.max_length = model_id, render, max_length
        self.attribute = 0
        if is_reward_model(model_dir):
            self.model, self.tokenizer, meta = load_reward_model(model_dir)
            if self.model.head_type == "gpm":
                raise ValueError(f"scoring.scorers '{spec.id}': {spec.model} is a GPM reward model: it scores pairs, "
                                 f"not single completions; train a scalar head (reward.loss: bt) to score rounds")
            self.attribute = int(meta.get("rank_attribute", 0))
            self.kind = "alignflow"
        else:
            if not is_sequence_classifier(model_dir):
                raise ValueError(f"scoring.scorers '{spec.id}': {model_dir} is neither an alignflow reward model "
                                 f"nor a Hugging Face sequence-classification model (config.json's architectures "
                                 f"must name a …ForSequenceClassification head; a causal LM has no trained score "
                                 f"head)")
            self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.kind = "sequence-classification"

    def revision(self) -> str:
        return self.model_id

    def _texts(self, items: Sequence[ScoringItem]) -> tuple[list[str], list[str]]:
        eos = cast(str, self.tokenizer.eos_token or "")
        prompts, responses = [], []
        for item in items:
            messages = self.render(item)
            if getattr(self.tokenizer, "chat_template", None):
                prompts.append(cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                                            add_generation_prompt=True)))
            else:
                prompts.append("\n".join(m["content"] for m in messages) + "\n")
            responses.append(item.completion + eos)
        return prompts, responses

    @torch.no_grad()
    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        from alignflow.components.modeling.logprobs import encode_pairs

        out: list[float | None] = []
        size = self.spec.batch_size
        for start in range(0, len(items), size):
            prompts, responses = self._texts(items[start:start + size])
            if self.kind == "alignflow":
                batch = encode_pairs(self.tokenizer, prompts, responses, self.max_length)
                heads = self.model(batch)
                values = heads["reward"] if "reward" in heads else heads["attributes"][:, self.attribute]
            else:
                encoded = self.tokenizer([p + r for p, r in zip(prompts, responses, strict=True)], return_tensors="pt",
                                         padding=True, truncation=True, max_length=self.max_length,
                                         add_special_tokens=False)
                values = self.model(**encoded).logits[:, 0]
            out.extend(float(v) for v in values.float().tolist())
        return out


class JudgeScorer(Scorer):
    """The LLM judge's pointwise score of the completion, mapped from its scale to [0, 1]."""

    def __init__(self, spec: ScorerSpec, config: PipelineConfig, model_dir: Path, model_id: str,
                 render_text: Callable[[ScoringItem], str]) -> None:
        from alignflow.components.judges.judge import judge_from_config, judgment_cache_path
        from alignflow.components.judges.labelled import RUBRIC
        from alignflow.components.modeling.checkpoints import load_checkpoint

        super().__init__(spec)
        loaded = load_checkpoint(model_dir, merge=True)
        self.model_id, self.render_text = model_id, render_text
        self.judge = judge_from_config(config, loaded, judgment_cache_path(config))
        self.rubric = spec.rubric or RUBRIC

    def revision(self) -> str:
        return f"{self.model_id}|{self.judge.template.hash}"

    def score(self, items: Sequence[ScoringItem]) -> list[float | None]:
        from alignflow.components.judges.judge import JudgeInput

        inputs = [JudgeInput(context=self.render_text(item), response=item.completion, rubric=self.rubric,
                             gold=_numeric(gold_value(self.spec, item.columns))) for item in items]
        low, high = self.judge.template.low, self.judge.template.high
        try:
            recorded = self.judge.judge(inputs, n=1)
        except Exception as exc:  # noqa: BLE001 - a judge failure names the scorer
            raise ScorerError(f"scorer '{self.id}' (judge {self.model_id}) failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        return [None if (s := r[0].judgment.score) is None else (s - low) / (high - low) for r in recorded]


def _numeric(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
