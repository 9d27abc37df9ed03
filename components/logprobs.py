"""Token batches and response log-probs, shared by every trainer and by evaluation.

Sequences are left-padded so every response ends at the right edge: the logits we need are
then the last ``max_response_len + 1`` positions, and the LM head (a 49k-wide matmul) runs
only there instead of over the prompt. Position ids are derived from the attention mask so
left padding does not shift positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T], left-padded
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, R]: 1 where the last R positions are response tokens
    response_lengths: torch.Tensor  # [B]


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                 max_length: int) -> TokenBatch:
    """Tokenize prompt+response pairs; the prompt is truncated from the left if too long."""
    pad_id = tokenizer.pad_token_id
    rows: list[tuple[list[int], int]] = []
    for prompt, response in zip(prompts, responses, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        response_ids = response_ids[: max(1, max_length // 2)] if len(response_ids) >= max_length else response_ids
        budget = max_length - len(response_ids)
        prompt_ids = prompt_ids[-budget:] if budget > 0 else []
        rows.append((prompt_ids + response_ids, len(response_ids)))
    width = max(len(ids) for ids, _ in rows)
    resp_width = max(n for _, n in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), resp_width), dtype=torch.float32)
    for i, (ids, n_resp) in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids):] = 1
        response_mask[i, resp_width - n_resp:] = 1.0
    lengths = torch.tensor([n for _, n in rows], dtype=torch.long)
    return TokenBatch(input_ids, attention, response_mask, lengths)


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def response_token_logprobs(model: PreTrainedModel, batch: TokenBatch) -> torch.Tensor:
    """[B, R] log-probs of each response token (zeros where masked)."""
    resp_width = batch.response_mask.shape[1]
    # logits at position t predict token t+1: keep R+1 positions, drop the last.
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids_for(batch.attention_mask),
        logits_to_keep=resp_width + 1,
        use_cache=False,
    )
    logits = out.logits[:, :-1, :].float()
    targets = batch.input_ids[:, -resp_width:]
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return token_logps * batch.response_mask


def sequence_logprobs(model: PreTrainedModel, batch: TokenBatch, average: bool = False) -> torch.Tensor:
    """Sum (or mean) of response log-probs per sequence."""
    token_logps = response_token_logprobs(model, batch)
    total = token_logps.sum(-1)
    return total / batch.response_mask.sum(-1).clamp(min=1) if average else total


def slice_batch(batch: TokenBatch, index: slice) -> TokenBatch:
    return TokenBatch(batch.input_ids[index], batch.attention_mask[index], batch.response_mask[index],
                      batch.response_lengths[index])
