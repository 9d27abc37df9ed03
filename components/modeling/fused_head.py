"""log p(target) through the LM head without keeping any vocabulary-sized tensor for backward.

The LM head of a small model is its largest activation: SmolLM2's 49k-wide vocabulary turns 16k
scored tokens into 3 GiB of float32 logits. Autograd through ``log_softmax``/``logsumexp`` keeps
those logits (and, recomputed through ``torch.utils.checkpoint``, still builds two or three
vocabulary-sized temporaries per chunk in backward). Here the backward is written by hand:

    d log p(t) / d logits = onehot(t) − softmax(logits)

so forward keeps only the per-token log-sum-exp, and backward recomputes one chunk's logits at a
time, turns them into that gradient in place, and folds it straight into the hidden-state and
weight gradients. Peak extra memory is one chunk of logits (plus its low-precision copy under
autocast), whatever the number of tokens.
"""

from __future__ import annotations

import torch

DEFAULT_CHUNK_TOKENS = 1024


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # under autocast this matmul runs in the autocast dtype, like the model's own nn.Linear head
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    # at least float32 for the log-sum-exp; float64 stays float64 (numerical gradient checks)
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class FusedHeadLogprobs(torch.autograd.Function):
    """``(hidden [N, H], weight [V, H], bias [V] | None, targets [N]) → log p(targets) [N]``, float32
    (float64 for float64 inputs)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
        n = hidden.shape[0]
        dtype = torch.promote_types(hidden.dtype, torch.float32)
        out = torch.empty(n, dtype=dtype, device=hidden.device)
        lse = torch.empty(n, dtype=dtype, device=hidden.device)
        for start in range(0, n, chunk_tokens):
            end = min(n, start + chunk_tokens)
            logits = _chunk_logits(hidden[start:end], weight, bias)
            lse[start:end] = torch.logsumexp(logits, dim=-1)
            out[start:end] = logits.gather(-1, targets[start:end].unsqueeze(-1)).squeeze(-1) - lse[start:end]
            del logits
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_tokens = chunk_tokens
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: torch.Tensor):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        dtype = lse.dtype  # float32, or float64 for float64 inputs
        grad_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if want_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=dtype, device=bias.device) if want_bias else None
        grad_out = grad_out.to(dtype)
        n = hidden.shape[0]
        for start in range(0, n, ctx.chunk_tokens):
            end = min(n, start + ctx.chunk_tokens)
            h, g = hidden[start:end], grad_out[start:end]
            # softmax in place, then g·(onehot − softmax) in place: no second vocabulary-sized tensor
            grad_logits = _chunk_logits(h, weight, bias).sub_(lse[start:end, None]).exp_().mul_(-g[:, None])
            rows = torch.arange(end - start, device=h.device)
            grad_logits[rows, targets[start:end]] += g
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
            # under autocast (restored by custom_bwd) these products run in the autocast dtype as
            # forward's did; without it, in the weights' dtype
            if not torch.is_autocast_enabled(h.device.type):
                grad_logits = grad_logits.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ h.to(grad_logits.dtype)
            del grad_logits
        grad_weight = grad_weight.to(weight.dtype) if grad_weight is not None else None
        grad_bias = grad_bias.to(bias.dtype) if grad_bias is not None else None
        return grad_hidden, grad_weight, grad_bias, None, None


def fused_head_logprobs(head: torch.nn.Linear, hidden: torch.Tensor, targets: torch.Tensor,
                        chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """log p(target) for [N, H] hidden states through ``head`` (an ``nn.Linear``), float32 [N]."""
    return FusedHeadLogprobs.apply(hidden, head.weight, head.bias, targets, chunk_tokens)
