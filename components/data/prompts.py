"""The one prompt format every stage shares, so SFT, sampling and eval see the same text."""

from __future__ import annotations

from typing import cast

from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Solve step by step. End with 'The answer is N.'"


def render_prompt(tokenizer: PreTrainedTokenizerBase, question: str, system: str | None = None) -> str:
    """``system=None`` lets the model's chat template decide (SmolLM2's adds its 20-token default
    system turn); a string replaces that turn — every prompt token is paid for in every forward."""
    messages = [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return cast(str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def response_suffix(tokenizer: PreTrainedTokenizerBase) -> str:
    """What closes an assistant turn; training targets end with it so the model learns to stop."""
    return cast(str, tokenizer.eos_token)


RATIONALE_QUESTION = "Which of the two responses is better, and why?"


def rationale_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, response_a: str, response_b: str) -> str:
    """x_rat of rationale-enriched DPO (ALGORITHMS.md §4): the prompt and both responses, asking
    which is preferable and why; the row's rationale is the target continuation."""
    content = (f"Prompt:\n{prompt}\n\nResponse A:\n{response_a}\n\nResponse B:\n{response_b}\n\n"
               f"{RATIONALE_QUESTION}")
    return cast(str, tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True))
