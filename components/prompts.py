"""The one prompt format every stage shares, so SFT, sampling and eval see the same text."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Solve step by step. End with 'The answer is N.'"


def render_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    # The model's own chat template decides the rest (SmolLM2's adds its default system turn).
    messages = [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def response_suffix(tokenizer: PreTrainedTokenizerBase) -> str:
    """What closes an assistant turn; training targets end with it so the model learns to stop."""
    return tokenizer.eos_token
