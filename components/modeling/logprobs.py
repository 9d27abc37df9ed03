"""Token batches and response log-probs, shared by every trainer and by evaluation.

Two layouts of the same rows, chosen by the caller:

- ``TokenBatch`` (``pad_rows``): left-padded so every response ends at the right edge; the
  positions that predict response tokens are the last ``max_response_len + 1`` columns.
  Position ids come from the attention mask so left padding does not shift positions.
- ``PackedBatch`` (``pack_rows``): padding-free — the rows laid end to end in packed rows of a
  fixed length (one row for a whole batch, or several), position ids restarting at each row. transformers
  turns restarting position ids into a
  block-diagonal causal mask (sdpa, eager) or variable-length attention (FlashAttention), so no
  row sees another; no FLOPs go to pad tokens.

Either way the LM head (a 49k-wide matmul) runs only on positions that predict a scored token,
and log-probs come back as the same right-aligned [B, R] matrix (a batch with no scored token at
all gives [B, 0]: every row scores 0).

Rows longer than ``max_length`` (``fit_row``): the prompt is never cut; the response is cut from the
right to the room the prompt leaves; a row whose prompt leaves less than ``MIN_RESPONSE_TOKENS`` for
a response that needs more is dropped. ``fit_rows`` / ``fit_stepped`` say which rows were cut or
dropped (``FitStats``) so trainers can skip and count them; ``encode_pairs`` / ``encode_stepped``,
which build one batch from all their rows, refuse a row that does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast, overload

import torch
import torch.utils.checkpoint
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignflow.components.modeling.fused_head import fused_head_logprobs


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T], left-padded
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, R]: 1 where the last R positions are response tokens
    response_lengths: torch.Tensor  # [B]

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device),
                          self.response_mask.to(device), self.response_lengths.to(device))


MIN_RESPONSE_TOKENS = 4
"""A response that would have to be cut shorter than this many tokens is not scored: its row is dropped.
Cut to 1–3 tokens it carries next to no training signal (both sides of a pair often share their first
tokens, so their margin is 0), yet it would count as a full row in every mean."""


def fit_row(prompt_ids: list[int], response_ids: list[int], max_length: int,
            min_response_tokens: int = MIN_RESPONSE_TOKENS) -> tuple[list[int], list[int], bool] | None:
    """Fit prompt + response into ``max_length`` tokens without ever cutting the prompt.

    The prompt is what the response continues and it starts with the chat template's header: cut
    from the left it would start mid-text (the previous rule cut a long response to half of
    max_length, dropping its EOS even when there was room, and then the prompt from the left). So
    the response is cut from the right to exactly the room the whole prompt leaves, and a row whose
    prompt leaves too little room is dropped, not mangled.

    Args:
        prompt_ids: the prompt's token ids (template included).
        response_ids: the response's token ids (EOS included when it ends the response).
        max_length: the most tokens a row may have.
        min_response_tokens: a response that must be cut is kept only if at least this many of its
            tokens fit; a response that fits whole is always kept, even an empty one.

    Returns:
        (prompt ids, response ids kept, whether the response was cut), or None when the row is
        dropped: the prompt alone is longer than ``max_length``, or the response would have to be
        cut to fewer than ``min_response_tokens`` tokens.
    """
    room = max_length - len(prompt_ids)
    if len(response_ids) <= room:
        return prompt_ids, response_ids, False
    if room < min_response_tokens:
        return None
    return prompt_ids, response_ids[:room], True


@dataclass
class FitStats:
    """How rows fared against max_length: ``rows`` seen, ``truncated`` (kept, response cut from the
    right) and ``dropped`` (not trained on: the prompt left no room). For pairs a row is a pair,
    truncated or dropped when either side is; for list rows, when any of its responses is."""

    rows: int = 0
    truncated: int = 0
    dropped: int = 0

    @property
    def truncated_rate(self) -> float:
        """Truncated rows / rows seen (0 when there are none)."""
        return self.truncated / self.rows if self.rows else 0.0

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/truncated_rows``, ``{prefix}/truncated_rate``, ``{prefix}/dropped_rows``."""
        return {f"{prefix}/truncated_rows": float(self.truncated), f"{prefix}/truncated_rate": self.truncated_rate,
                f"{prefix}/dropped_rows": float(self.dropped)}


TokenRow = tuple[list[int], int]  # (prompt + response ids, number of scored tokens at the end)


@dataclass
class FittedRows:
    """``fit_rows``'s answer: per input row its TokenRow (None: dropped) and whether it was cut."""

    rows: list[TokenRow | None]
    truncated: list[bool]

    @property
    def kept(self) -> list[int]:
        """Indices of the rows that were not dropped."""
        return [i for i, row in enumerate(self.rows) if row is not None]

    def stats(self) -> FitStats:
        """The counts: rows seen, truncated (kept, response cut) and dropped."""
        return FitStats(rows=len(self.rows), truncated=sum(self.truncated),
                        dropped=sum(row is None for row in self.rows))


def token_row(prompt_ids: list[int], response_ids: list[int], joint: bool = False) -> TokenRow:
    """(prompt + response ids, scored tokens): the response's, plus the prompt's after its first
    when ``joint``. A row's first token has no context to be predicted from and is never scored."""
    n_scored = len(response_ids) + (max(0, len(prompt_ids) - 1) if joint else 0)
    ids = prompt_ids + response_ids
    return ids, min(n_scored, max(0, len(ids) - 1))


def fit_rows(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str], max_length: int,
             score_prompt: Sequence[bool] | bool = False,
             min_response_tokens: int = MIN_RESPONSE_TOKENS) -> FittedRows:
    """Token rows for prompt+response pairs, each fitted into ``max_length`` by ``fit_row`` (the
    prompt is never cut; a response is cut from the right; a row with no room is dropped: None).

    ``score_prompt`` (per row or for all) also scores the prompt's tokens after its first —
    DOVE's joint log-probs log π(x, y) need them; everything else scores the response only.

    Raises:
        ValueError: the number of ``score_prompt`` flags differs from the number of rows.
    """
    flags = [score_prompt] * len(prompts) if isinstance(score_prompt, bool) else list(score_prompt)
    if len(flags) != len(prompts):
        raise ValueError(f"{len(flags)} score_prompt flags for {len(prompts)} rows")
    rows: list[TokenRow | None] = []
    truncated: list[bool] = []
    for prompt, response, joint in zip(prompts, responses, flags, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        fitted = fit_row(prompt_ids, response_ids, max_length, min_response_tokens)
        rows.append(None if fitted is None else token_row(fitted[0], fitted[1], joint))
        truncated.append(fitted is not None and fitted[2])
    return FittedRows(rows, truncated)


def tokenize_rows(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                  max_length: int, score_prompt: Sequence[bool] | bool = False) -> list[TokenRow]:
    """``fit_rows`` for rows that must all be kept (a batch is built from them).

    Raises:
        ValueError: a row does not fit (its prompt leaves fewer than ``MIN_RESPONSE_TOKENS`` of
            ``max_length`` for a response that needs more); callers that may meet such rows drop
            and count them with ``fit_rows`` first.
    """
    fitted = fit_rows(tokenizer, prompts, responses, max_length, score_prompt)
    for index, row in enumerate(fitted.rows):
        if row is None:
            n_prompt = len(tokenizer(prompts[index], add_special_tokens=False)["input_ids"])
            raise ValueError(f"row {index}: its prompt of {n_prompt} tokens leaves no room for at least "
                             f"{MIN_RESPONSE_TOKENS} response tokens in max_length {max_length}: raise max_length, "
                             f"or drop such rows (logprobs.fit_rows) before building a batch")
    return [row for row in fitted.rows if row is not None]


def encode_pairs(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[str],
                 max_length: int, score_prompt: Sequence[bool] | bool = False, packed: bool = False,
                 pack_length: int | None = None) -> Batch:
    """``tokenize_rows`` then one batch: left-padded, or packed without padding."""
    rows = tokenize_rows(tokenizer, prompts, responses, max_length, score_prompt)
    return collate(rows, cast(int, tokenizer.pad_token_id), packed, pack_length)


def collate(rows: list[TokenRow], pad_id: int, packed: bool = False, pack_length: int | None = None) -> Batch:
    return pack_rows(rows, pad_id, pack_length) if packed else pad_rows(rows, pad_id)


def pad_rows(rows: list[TokenRow], pad_id: int) -> TokenBatch:
    """Rows of (token ids, number of scored tokens at the end) → a left-padded TokenBatch."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, _) in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention[i, width - len(ids):] = 1
    lengths = torch.tensor([n for _, n in rows], dtype=torch.long)
    return TokenBatch(input_ids, attention, _response_mask(rows), lengths)


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [P, L]: rows end to end in P packed rows
    position_ids: torch.Tensor  # [P, L]: 0, 1, … restarting at each row
    response_mask: torch.Tensor  # [B, R], right-aligned as in TokenBatch
    response_lengths: torch.Tensor  # [B]
    target_index: torch.Tensor  # [M]: flat (P·L) positions of the scored tokens, row by row

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.response_mask.to(device),
                           self.response_lengths.to(device), self.target_index.to(device))


Batch = TokenBatch | PackedBatch


def _response_mask(rows: list[TokenRow]) -> torch.Tensor:
    resp_width = max(n for _, n in rows)
    mask = torch.zeros((len(rows), resp_width), dtype=torch.float32)
    for i, (_, n) in enumerate(rows):
        mask[i, resp_width - n:] = 1.0
    return mask


def _first_fit_decreasing(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """(bin, offset) per row: longest rows first, each into the first bin with room."""
    free: list[int] = []
    placed: dict[int, tuple[int, int]] = {}
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        b = next((b for b, room in enumerate(free) if room >= lengths[i]), None)
        if b is None:
            b = len(free)
            free.append(capacity)
        placed[i] = (b, capacity - free[b])
        free[b] -= lengths[i]
    return [placed[i] for i in range(len(lengths))]


def pack_rows(rows: list[TokenRow], pad_id: int | None = None, pack_length: int | None = None) -> PackedBatch:
    """Rows of (token ids, number of scored tokens at the end) → packed rows of ``pack_length``
    tokens (default: the longest row, so no packed row attends over more than a padded one
    would). Rows are placed first-fit-decreasing; only the tail of a packed row is padding, and
    its positions continue the last sequence's, so it is never attended to."""
    lengths = [len(ids) for ids, _ in rows]
    for row, (row_ids, n_scored) in enumerate(rows):
        if not row_ids or n_scored > len(row_ids) - 1:
            raise ValueError(f"row {row}: {n_scored} scored tokens in a row of {len(row_ids)}; the first token "
                             f"of a row cannot be scored")
    capacity = max(lengths) if pack_length is None else pack_length
    if capacity < max(lengths):
        raise ValueError(f"pack_length {capacity} is shorter than a row of {max(lengths)} tokens; "
                         f"raise it to at least max_length")
    placement = _first_fit_decreasing(lengths, capacity)
    n_bins = 1 + max(b for b, _ in placement)
    used = [0] * n_bins
    for (b, offset), n in zip(placement, lengths, strict=True):
        used[b] = max(used[b], offset + n)
    width = max(used)  # never wider than needed
    input_ids = torch.full((n_bins, width), 0 if pad_id is None else pad_id, dtype=torch.long)
    position_ids = torch.zeros((n_bins, width), dtype=torch.long)
    targets: list[int] = []
    for (row_ids, n_scored), (b, offset) in zip(rows, placement, strict=True):
        n = len(row_ids)
        input_ids[b, offset:offset + n] = torch.tensor(row_ids, dtype=torch.long)
        position_ids[b, offset:offset + n] = torch.arange(n)
        start = b * width + offset
        targets += range(start + n - n_scored, start + n)
    for b in range(n_bins):  # the tail continues the last sequence's positions
        tail = width - used[b]
        if tail:
            last = int(position_ids[b, used[b] - 1])
            position_ids[b, used[b]:] = torch.arange(last + 1, last + 1 + tail)
    return PackedBatch(input_ids, position_ids, _response_mask(rows), torch.tensor([n for _, n in rows]),
                       torch.tensor(targets, dtype=torch.long))


def fit_stepped(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[list[str]],
                max_length: int, separator: str = "\n") -> tuple[FittedRows, list[list[int]]]:
    """``fit_rows`` for responses given as reasoning steps (TPO rows): also each kept token's step.

    Steps are tokenized one by one, each but the last followed by ``separator``, so every token
    belongs to exactly one step; the response is then fitted like any other (``fit_row``).

    Returns:
        (the fitted rows, per row the step index of each kept response token; [] for a dropped row).

    Raises:
        ValueError: a response has no steps, or a kept row has an empty prompt (its first token
            would have nothing to follow).
    """
    rows: list[TokenRow | None] = []
    truncated: list[bool] = []
    owners: list[list[int]] = []
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
        fitted = fit_row(prompt_ids, ids, max_length)
        if fitted is not None and not prompt_ids:
            raise ValueError("a listed response needs a non-empty prompt: its first token has nothing to follow")
        rows.append(None if fitted is None else (prompt_ids + fitted[1], len(fitted[1])))
        truncated.append(fitted is not None and fitted[2])
        owners.append([] if fitted is None else owner[:len(fitted[1])])
    return FittedRows(rows, truncated), owners


def encode_stepped(tokenizer: PreTrainedTokenizerBase, prompts: list[str], responses: list[list[str]],
                   max_length: int, separator: str = "\n", packed: bool = False,
                   pack_length: int | None = None) -> tuple[Batch, torch.Tensor]:
    """Responses given as reasoning steps (TPO rows, ``fit_stepped``): the batch plus [B, R] step ids
    per scored token (−1 where not scored).

    Raises:
        ValueError: as ``fit_stepped``, or a row does not fit ``max_length`` (callers drop and
            count such rows with ``fit_stepped`` first).
    """
    fitted, owners = fit_stepped(tokenizer, prompts, responses, max_length, separator)
    dropped = [i for i, row in enumerate(fitted.rows) if row is None]
    if dropped:
        raise ValueError(f"rows {dropped}: the prompt leaves no room for at least {MIN_RESPONSE_TOKENS} response "
                         f"tokens in max_length {max_length}: raise max_length, or drop such rows "
                         f"(logprobs.fit_stepped) before building a batch")
    rows = [row for row in fitted.rows if row is not None]
    batch = collate(rows, cast(int, tokenizer.pad_token_id), packed, pack_length)
    step_ids = torch.full(batch.response_mask.shape, -1, dtype=torch.long)
    for i, owner in enumerate(owners):
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


def _lm_head(model: PreTrainedModel) -> torch.nn.Module:
    head = model.get_output_embeddings()
    assert head is not None, f"{type(model).__name__} has no LM head"  # every causal LM has one
    return head


HEAD_CHUNK_TOKENS = 1024


def _chunk_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden)
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float() - torch.logsumexp(logits.float(), dim=-1)


def _head_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                   fused: bool | None = None) -> torch.Tensor:
    """log p(target) for [N, H] hidden states, HEAD_CHUNK_TOKENS rows at a time.

    ``fused`` (default: when training on GPU) uses the hand-written backward of
    ``components.fused_head``: logits are recomputed chunk by chunk in backward and nothing
    vocabulary-sized is kept (≈ +7% FLOPs for SmolLM2, gigabytes less memory). On CPU memory
    is cheaper than FLOPs, so autograd keeps the logits there."""
    if fused is None:
        fused = torch.is_grad_enabled() and hidden.is_cuda
    if fused and isinstance(head, torch.nn.Linear):
        return fused_head_logprobs(head, hidden, targets, HEAD_CHUNK_TOKENS)
    pieces = []
    for start in range(0, hidden.shape[0], HEAD_CHUNK_TOKENS):
        h, t = hidden[start:start + HEAD_CHUNK_TOKENS], targets[start:start + HEAD_CHUNK_TOKENS]
        if fused:  # a head that is not a plain Linear: recompute through checkpoint instead
            pieces.append(torch.utils.checkpoint.checkpoint(_chunk_logprobs, head, h, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(head, h, t))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def _scatter_scored(scored: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per-token values of the scored positions (row-major) → the [B, R] matrix, zeros elsewhere."""
    return torch.zeros(scored.shape, dtype=values.dtype, device=values.device).masked_scatter(scored, values)


def _packed_token_logprobs(model: PreTrainedModel, batch: PackedBatch, return_hidden: bool
                           ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``response_token_logprobs`` for a packed batch: gather the predicting positions (each
    scored token's predecessor, always in the same row) instead of slicing the right edge."""
    targets = batch.input_ids.reshape(-1)[batch.target_index]
    predicting_index = batch.target_index - 1
    attention_mask = None  # restarting position_ids are the mask: transformers builds it per row
    if not _plain_lm_head(model):
        out = model(input_ids=batch.input_ids, attention_mask=attention_mask, position_ids=batch.position_ids,
                    use_cache=False, output_hidden_states=return_hidden)
        logits = out.logits.reshape(-1, out.logits.shape[-1])[predicting_index].float()
        values = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        hidden = out.hidden_states[-1].flatten(0, 1) if return_hidden else None
    else:
        hidden = model.get_decoder()(input_ids=batch.input_ids, attention_mask=attention_mask,
                                     position_ids=batch.position_ids, use_cache=False).last_hidden_state.flatten(0, 1)
        values = _head_logprobs(_lm_head(model), hidden[predicting_index], targets)
    scored = batch.response_mask > 0
    token_logps = _scatter_scored(scored, values)
    if not return_hidden:
        return token_logps
    assert hidden is not None  # both branches keep the hidden states when return_hidden
    response_hidden = hidden.new_zeros((*batch.response_mask.shape, hidden.shape[-1]))
    response_hidden[scored] = hidden[batch.target_index]
    return token_logps, response_hidden


@overload
def response_token_logprobs(model: PreTrainedModel, batch: Batch, return_hidden: Literal[False] = False
                            ) -> torch.Tensor: ...


@overload
def response_token_logprobs(model: PreTrainedModel, batch: Batch, return_hidden: Literal[True]
                            ) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def response_token_logprobs(model: PreTrainedModel, batch: Batch, return_hidden: bool
                            ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]: ...


def response_token_logprobs(model: PreTrainedModel, batch: Batch, return_hidden: bool = False
                            ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[B, R] log-probs of each response token (zeros where masked); with ``return_hidden`` also
    the last layer's hidden states at those R tokens, [B, R, H].

    The LM head (a 49k-wide matmul for SmolLM2) runs only on the positions that predict a scored
    token — not on the prompt, not on padding — and the vocabulary-sized tensor is reduced with
    one logsumexp instead of a full log-softmax, so it is materialised once, not three times.
    """
    if isinstance(batch, PackedBatch):
        return _packed_token_logprobs(model, batch, return_hidden)
    resp_width = batch.response_mask.shape[1]
    if resp_width == 0:  # no row has a scored token (all responses empty): ``[:, -0:]`` would take whole rows
        token_logps = batch.response_mask.new_zeros(batch.response_mask.shape, dtype=torch.float32)
        if not return_hidden:
            return token_logps
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        return token_logps, token_logps.new_zeros((*batch.response_mask.shape, config.hidden_size), dtype=model.dtype)
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
    values = _head_logprobs(_lm_head(model), predicting[scored], targets[scored])
    token_logps = _scatter_scored(scored, values)
    return (token_logps, hidden[:, -resp_width:, :]) if return_hidden else token_logps


def sequence_logprobs(model: PreTrainedModel, batch: Batch, average: bool = False) -> torch.Tensor:
    """Sum (or mean) of response log-probs per sequence."""
    token_logps = response_token_logprobs(model, batch)
    total = token_logps.sum(-1)
    return total / batch.response_mask.sum(-1).clamp(min=1) if average else total


def slice_batch(batch: TokenBatch, index: slice) -> TokenBatch:
    return TokenBatch(batch.input_ids[index], batch.attention_mask[index], batch.response_mask[index],
                      batch.response_lengths[index])
