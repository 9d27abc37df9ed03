"""A judge model asked to compare two responses, for the position-bias probe of a pair file.

The choice is read from the model's next-token distribution — is "A" or "B" more likely right
after the question — rather than parsed from free text, so every query gets an answer (a small
judge's free-form reply often names neither) and the probe measures the ordering preference
itself. All queries (each pair straight and swapped) run as batched single forwards.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignflow.components.collection.quality import position_bias
from alignflow.components.data.schemas import PairRow

PAIRWISE_TEMPLATE = ("Task:\n{context}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
                     "Which response is better? Answer with A or B only.")


def _letter_id(tokenizer: PreTrainedTokenizerBase, letter: str) -> int:
    ids = tokenizer.encode(letter, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"the tokenizer splits '{letter}' into {len(ids)} tokens; the pairwise probe needs one")
    return ids[0]


@torch.inference_mode()
def pairwise_choices(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, queries: list[tuple[str, str, str]],
                     system_prompt: str | None = None, batch_size: int = 16) -> list[str]:
    """``queries``: (context, response A, response B) → "A" or "B" per query."""
    a_id, b_id = _letter_id(tokenizer, "A"), _letter_id(tokenizer, "B")
    tokenizer.padding_side = "left"  # the last position is every row's next token
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(queries), batch_size):
        prompts = []
        for context, a, b in queries[start:start + batch_size]:
            messages = [{"role": "user", "content": PAIRWISE_TEMPLATE.format(context=context, a=a, b=b)}]
            if system_prompt is not None:
                messages.insert(0, {"role": "system", "content": system_prompt})
            prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        logits = model(**encoded).logits[:, -1, :]
        out.extend("A" if a >= b else "B" for a, b in zip(logits[:, a_id].tolist(), logits[:, b_id].tolist()))
    return out


def model_position_bias(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[PairRow],
                        system_prompt: str | None = None, batch_size: int = 16) -> dict[str, float]:
    """``position_bias`` of the pair file with this model as the pairwise judge. The context is
    the pair's question (``lineage.question``) when it has one, else its prompt."""
    if not pairs:
        raise ValueError("no pairs to probe")
    contexts = [str(p.lineage.get("question", p.prompt)) for p in pairs]
    queries = [(c, p.chosen, p.rejected) for c, p in zip(contexts, pairs, strict=True)]
    queries += [(c, p.rejected, p.chosen) for c, p in zip(contexts, pairs, strict=True)]
    choices = pairwise_choices(model, tokenizer, queries, system_prompt, batch_size)
    answers = dict(zip(queries, choices, strict=True))

    def judge(context: str, first: str, second: str) -> str:
        return answers[(context, first, second)]

    probe_pairs = [p.model_copy(update={"prompt": c}) for c, p in zip(contexts, pairs, strict=True)]
    return position_bias(judge, probe_pairs)
