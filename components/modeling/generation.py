"""Batched on-policy sampling: k completions per prompt, seeded per batch.

Each ``generate`` call carries ``batch_size // k`` prompts expanded to k return sequences, so a
batch is always full and all k samples of a prompt come from one call. The seed of batch b is
``seed + b``: results do not depend on how many batches ran before a resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignflow.components.config import SamplerCompile, SamplingBackend
from alignflow.components.modeling.sampler import generator_for
from alignflow.components.modeling.sharding import gather_completions, local_batches


class CanGenerate(Protocol):
    """A model with ``GenerationMixin.generate`` (what ``AutoModelForCausalLM`` builds, or a PEFT wrapper of
    one), viewed through a protocol: transformers types ``generate``'s ``self`` with a protocol that neither
    ``PreTrainedModel`` nor its own generating classes satisfy for a type checker."""

    def generate(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class Completion:
    prompt_index: int
    sample_index: int
    text: str
    n_tokens: int  # generated tokens that ``text`` keeps: before EOS, special tokens not counted
    stopped_at_eos: bool = False  # ended with EOS (False: cut at max_new_tokens)


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids ``decode(..., skip_special_tokens=True)`` drops: the special-tokens map's
    (``all_special_ids``) and every added token marked special (SmolLM2's ``<repo_name>`` … are not
    in the map but are skipped all the same)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(tokenizer.all_special_ids) | {i for i, token in added.items() if getattr(token, "special", False)}


def generate_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    k: int = 1,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    backend: SamplingBackend = "auto",
    compile: SamplerCompile = "auto",
) -> list[Completion]:
    """Return ``len(prompts) * k`` completions ordered by (prompt, sample). A completion's text is
    its tokens before EOS decoded without special tokens, and ``n_tokens`` counts exactly those
    tokens (a special token the model emitted mid-text is in neither). ``backend``: Hugging Face
    ``generate`` or the static sampler (``components.modeling.sampler``; ``auto``: static on CUDA only).
    Inside ``sharding.sharded_generation`` each rank runs its share of the batches (batch b still seeded
    ``seed + b``) and every rank gets all completions."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    prompts_per_call = max(1, batch_size // k)
    eos_id = tokenizer.eos_token_id
    special = special_token_ids(tokenizer)
    results: list[Completion] = []
    model.eval()
    tokenizer.padding_side = "left"
    generator = cast(CanGenerate, generator_for(model, backend, compile))
    for batch_number, start in local_batches(len(prompts), prompts_per_call):
        chunk = prompts[start:start + prompts_per_call]
        encoded = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        torch.manual_seed(seed + batch_number)
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample
                    else {"do_sample": False})
        with torch.inference_mode():
            output = generator.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos_id,
                **sampling,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        for row, tokens in enumerate(new_tokens.tolist()):
            stopped = eos_id in tokens
            if stopped:
                tokens = tokens[: tokens.index(eos_id)]
            results.append(Completion(
                prompt_index=start + row // k,
                sample_index=row % k,
                text=cast(str, tokenizer.decode(tokens, skip_special_tokens=True)).strip(),
                n_tokens=sum(t not in special for t in tokens),  # what the text holds, as decoding kept it
                stopped_at_eos=stopped,
            ))
        if on_batch:
            on_batch(len(chunk))
    return gather_completions(results)
