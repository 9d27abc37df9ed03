"""The LLM-as-judge: tools first, then the model writes a rationale and a score.

For each input the judge's tools run before it is prompted (the equation checker always, the
verifier when the gold answer is known), and their results are written into the judge's context,
so an arithmetic claim reaches the judge already checked. Judgments are parsed strictly, cached
by (rendered prompt, response, judge model id, template hash, sample) — the rendered prompt holds
the tool results, so a change in any of them is a new key — and returned with their tool calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignflow.components.judges.cache import JudgmentCache, judgment_key
from alignflow.components.judges.parsing import Judgment, parse_judgment
from alignflow.components.judges.template import JudgeTemplate
from alignflow.components.judges.tools import ToolCall, equation_tool, verifier_tool
from alignflow.components.modeling.generation import generate_completions

if TYPE_CHECKING:
    from alignflow.components.config import PipelineConfig
    from alignflow.components.modeling.checkpoints import LoadedModel


@dataclass
class JudgeInput:
    context: str
    response: str
    rubric: str
    gold: int | float | None = None  # the task's answer, when known: enables the verifier tool


@dataclass
class RecordedJudgment:
    judgment: Judgment
    tool_calls: list[ToolCall]
    key: str
    cached: bool


@dataclass
class Judge:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    template: JudgeTemplate = field(default_factory=JudgeTemplate)
    cache: JudgmentCache | None = None
    use_tools: bool = True
    max_new_tokens: int = 128
    batch_size: int = 16
    system_prompt: str | None = None  # as data.system_prompt: "" drops the template's default system turn

    def tool_calls(self, item: JudgeInput) -> list[ToolCall]:
        if not self.use_tools:
            return []
        calls = [equation_tool(item.response)]
        if item.gold is not None:
            calls.append(verifier_tool(item.response, item.gold))
        return calls

    def prompt_for(self, item: JudgeInput, calls: list[ToolCall]) -> str:
        context = item.context
        if calls:
            context += "\n\nTool results (computed, reliable):\n" + "\n".join(f"- {c.tool}: {c.output}" for c in calls)
        return self.template.render(self.tokenizer, context, item.response, item.rubric, self.system_prompt)

    def judge(self, items: list[JudgeInput], n: int = 1, temperature: float = 0.0, seed: int = 0,
              on_batch: Callable[[int], None] | None = None) -> list[list[RecordedJudgment]]:
        """``n`` judgments per input (n > 1 needs temperature > 0), cached ones reused."""
        if n > 1 and temperature <= 0:
            raise ValueError("several judgments per input need temperature > 0 (greedy ones would be identical)")
        calls = [self.tool_calls(item) for item in items]
        prompts = [self.prompt_for(item, c) for item, c in zip(items, calls, strict=True)]
        keys = [[judgment_key(p, item.response, self.model_id, self.template.hash, s if n > 1 else None)
                 for s in range(n)] for p, item in zip(prompts, items, strict=True)]
        found = [[self.cache.get(k) if self.cache is not None else None for k in row] for row in keys]
        missing = [i for i, row in enumerate(found) if any(j is None for j in row)]
        fresh: dict[tuple[int, int], Judgment] = {}
        if on_batch and len(missing) < len(items):
            on_batch(len(items) - len(missing))  # answered from the cache
        if missing:
            outputs = generate_completions(self.model, self.tokenizer, [prompts[i] for i in missing], k=n,
                                           do_sample=temperature > 0, temperature=max(temperature, 1e-6),
                                           max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=seed,
                                           on_batch=on_batch)
            for out in outputs:
                i = missing[out.prompt_index]
                if found[i][out.sample_index] is None:
                    judgment = parse_judgment(out.text, self.template)
                    fresh[(i, out.sample_index)] = judgment
                    if self.cache is not None:
                        self.cache.put(keys[i][out.sample_index], judgment)
        return [[RecordedJudgment(found[i][s] or fresh[(i, s)], calls[i], keys[i][s], found[i][s] is not None)
                 for s in range(n)] for i in range(len(items))]


def judge_from_config(config: PipelineConfig, loaded: LoadedModel, cache_path: Path | None = None) -> Judge:
    """The judge a config describes (``judge:`` section, the data's system prompt) around a loaded model."""
    j = config.judge
    return Judge(loaded.model, loaded.tokenizer, loaded.model_id,
                 cache=JudgmentCache(cache_path) if cache_path else None,
                 use_tools=j.use_tools, max_new_tokens=j.max_new_tokens, batch_size=j.batch_size,
                 system_prompt=config.data.system_prompt)


def judgment_cache_path(config: PipelineConfig) -> Path:
    """One cache per state directory, shared by every loop and round (the key holds the judge's id)."""
    return Path(config.state_dir) / "judgments.sqlite"
