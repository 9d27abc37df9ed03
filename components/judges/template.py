"""Judge prompt templates. A template's identity is the hash of its text and scale, so a cached
judgment or a logged metric always says exactly which wording produced it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import cast

from transformers import PreTrainedTokenizerBase

SCORE_LABEL = "Score:"

DEFAULT_TEMPLATE = (
    "You are grading a response against a rubric.\n\n"
    "Task:\n{context}\n\nResponse:\n{response}\n\nRubric:\n{rubric}\n\n"
    "First explain your reasoning in a few sentences, starting with 'Rationale:'. "
    "Then give your grade on its own last line as '" + SCORE_LABEL + " N', an integer from {low} to {high}."
)


@dataclass(frozen=True)
class JudgeTemplate:
    text: str = DEFAULT_TEMPLATE
    low: int = 1
    high: int = 5

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise ValueError(f"judge scale must have low < high, got {self.low}..{self.high}")
        for field in ("{context}", "{response}", "{rubric}"):
            if field not in self.text:
                raise ValueError(f"judge template lacks the placeholder {field}")

    @property
    def hash(self) -> str:
        payload = f"{self.low}-{self.high}\n{self.text}".encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def render(self, tokenizer: PreTrainedTokenizerBase, context: str, response: str, rubric: str,
               system: str | None = None) -> str:
        """``system`` as in ``render_prompt``: None keeps the chat template's default system turn."""
        content = self.text.format(context=context, response=response, rubric=rubric, low=self.low, high=self.high)
        messages = [{"role": "user", "content": content}]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return cast(str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
