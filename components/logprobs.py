"""Token batches and response log-probs, shared by every trainer and by evaluation.

Sequences are left-padded so every response ends at the right edge: the positions that
predict response tokens are then the last ``max_response_len + 1`` columns, and the LM head
(a 49k-wide matmul) runs only on those that predict a scored token. Position ids are derived
from the attention mask so left padding does not shift positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T], left-padded
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, R]: 1 where the last R positions are response tokens
    response_lengths: torch.Tensor  # [B]

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device),
                          self.response_mask.to(device), self.response_lengths.to(device))


def _fit(prompt_ids: list[int], response_ids: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Fit prompt + response into max_length: a response that alone fills it keeps its first
    half; the prompt then loses tokens from the left (its end is what the response continues)."""
    if len(response_ids) >= max_length:
        response_ids = response_ids[: max(1, max_length // 2)]
    budget = max_length - len(response_ids)
    return (prompt_ids[-budget:] if budget > 0 else []), response_ids


TokenRow = tuple[list[int], int]  # (prompt + response ids, number of scored tokens at the end)


def tokenize_rows(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                  max_length: int, score_prompt: Sequence[bool] | bool = False) -> list[TokenRow]:
    """Token rows for prompt+response pairs; the prompt is truncated from the left if too long.

    ``score_prompt`` (per row or for all) also scores the prompt's tokens after its first —
    DOVE's joint log-probs log π(x, y) need them; everything else scores the response only.
    """
    flags = [score_prompt] * len(prompts) if isinstance(score_prompt, bool) else list(score_prompt)
    if len(flags) != len(prompts):
        raise ValueError(f"{len(flags)} score_prompt flags for {len(prompts)} rows")
    rows: list[TokenRow] = []
    for prompt, response, joint in zip(prompts, responses, flags, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        prompt_ids, response_ids = _fit(prompt_ids, response_ids, max_length)
        n_scored = len(response_ids) + (max(0, len(prompt_ids) - 1) if joint else 0)
        rows.append((prompt_ids + response_ids, n_scored))
    return rows


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                 max_length: int, score_prompt: Sequence[bool] | bool = False) -> TokenBatch:
    """``tokenize_rows`` then left-pad into one batch."""
    return pad_rows(tokenize_rows(tokenizer, prompts, responses, max_length, score_prompt), tokenizer.pad_token_id)


def pad_rows(rows: list[TokenRow], pad_id: int) -> TokenBatch:
    """Rows of (token ids, number of scored tokens at the end) → a left-padded TokenBatch."""
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


def encode_stepped(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[list[str]],
                   max_length: int, separator: str = "\n") -> tuple[TokenBatch, torch.Tensor]:
    """Responses given as reasoning steps (TPO rows): the batch plus [B, R] step ids per scored
    token (−1 where not scored). Steps are tokenized one by one, each but the last followed by
    ``separator``, so every token belongs to exactly one step."""
    rows: list[tuple[list[int], int]] = []
    step_rows: list[list[int]] = []
    for prompt, steps in zip(prompts, responses, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not steps:
            raise ValueError("a listed response has no steps")
        ids: list[int] = []
        owner: list[int] = []
        for k, step in enumerate(steps):
            text = step + (separator if k < len(steps) - 1 else "")
            step_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += step_ids
            owner += [k] * len(step_ids)
        context, ids = _fit(prompt_ids, ids, max_length)
        rows.append((context + ids, len(ids)))
        step_rows.append(owner[: len(ids)])
    batch = pad_rows(rows, tokenizer.pad_token_id)
    step_ids = torch.full(batch.response_mask.shape, -1, dtype=torch.long)
    for i, owner in enumerate(step_rows):
        if owner:
            step_ids[i, step_ids.shape[1] - len(owner):] = torch.tensor(owner, dtype=torch.long)
    return batch, step_ids


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _plain_lm_head(model: PreTrainedModel) -> bool:
    """True when logits are exactly lm_head(hidden): no soft-capping or scaling to replicate."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return all(getattr(config, name, None) in (None, 1.0) for name in
               ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))


HEAD_CHUNK_TOKENS = 1024


def _chunk_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float() - torch.logsumexp(logits.float(), dim=-1)


def _head_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for [N, H] hidden states, HEAD_CHUNK_TOKENS rows at a time. On GPU, training
    recomputes each chunk's logits in the backward pass instead of keeping [N, V] of them
    (≈ +7% FLOPs for SmolLM2, gigabytes less memory); on CPU memory is cheaper than FLOPs."""
    recompute = torch.is_grad_enabled() and hidden.is_cuda
    pieces = []
    for start in range(0, hidden.shape[0], HEAD_CHUNK_TOKENS):
        h, t = hidden[start:start + HEAD_CHUNK_TOKENS], targets[start:start + HEAD_CHUNK_TOKENS]
        if recompute:
            pieces.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, head, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(head, h, t))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def response_token_logprobs(model: PreTrainedModel, batch: TokenBatch, return_hidden: bool = False
                            ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[B, R] log-probs of each response token (zeros where masked); with ``return_hidden`` also
    the last layer's hidden states at those R tokens, [B, R, H].

    The LM head (a 49k-wide matmul for SmolLM2) runs only on the positions that predict a scored
    token — not on the prompt, not on padding — and the vocabulary-sized tensor is reduced with
    one logsumexp instead of a full log-softmax, so it is materialised once, not three times.
    """
    resp_width = batch.response_mask.shape[1]
    position_ids = position_ids_for(batch.attention_mask)
    targets = batch.input_ids[:, -resp_width:]
    if not _plain_lm_head(model):  # generic path: the model's own logits for the last R+1 positions
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids,
                    logits_to_keep=resp_width + 1, use_cache=False, output_hidden_states=return_hidden)
        logits = out.logits[:, :-1, :].float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        token_logps = token_logps * batch.response_mask
        return (token_logps, out.hidden_states[-1][:, -resp_width:, :]) if return_hidden else token_logps
    hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 position_ids=position_ids, use_cache=False).last_hidden_state
    # hidden at position t predicts token t+1: the R positions before the last R+1 … −1
    predicting = hidden[:, -resp_width - 1:-1, :]
    scored = batch.response_mask > 0
    values = _head_logprobs(model.get_output_embeddings(), predicting[scored], targets[scored])
    token_logps = torch.zeros(batch.response_mask.shape, dtype=values.dtype, device=values.device)
    token_logps = token_logps.masked_scatter(scored, values)
    return (token_logps, hidden[:, -resp_width:, :]) if return_hidden else token_logps


def sequence_logprobs(model: PreTrainedModel, batch: TokenBatch, average: bool = False) -> torch.Tensor:
    """Sum (or mean) of response log-probs per sequence."""
    token_logps = response_token_logprobs(model, batch)
    total = token_logps.sum(-1)
    return total / batch.response_mask.sum(-1).clamp(min=1) if average else total


def slice_batch(batch: TokenBatch, index: slice) -> TokenBatch:
    return TokenBatch(batch.input_ids[index], batch.attention_mask[index], batch.response_mask[index],
                      batch.response_lengths[index])
