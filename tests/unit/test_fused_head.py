"""The hand-written LM-head backward (components.fused_head) computes the true gradient: checked
numerically in float64, and against autograd through a tiny model with tied embeddings."""

import pytest
import torch

from alignflow.components.modeling.fused_head import FusedHeadLogprobs
from alignflow.components.modeling.logprobs import _head_logprobs


@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_head_gradient_is_the_numerical_gradient(with_bias):
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, generator=gen, requires_grad=True) if with_bias else None
    targets = torch.randint(0, 11, (7,), generator=gen)
    # chunks of 3 over 7 rows: a short last chunk, so chunk bookkeeping is exercised too
    # gradcheck passes a None input through (no bias); its annotation admits tensors only
    assert torch.autograd.gradcheck(lambda h, w, b: FusedHeadLogprobs.apply(h, w, b, targets, 3),
                                    (hidden, weight, bias))  # pyright: ignore[reportArgumentType]
    expected = torch.log_softmax(hidden @ weight.t() + (0 if bias is None else bias), -1)
    torch.testing.assert_close(FusedHeadLogprobs.apply(hidden, weight, bias, targets, 3).double(),
                               expected.gather(-1, targets[:, None]).squeeze(-1))


def _loss_and_grads(model, input_ids, targets, weights, fused):
    model.zero_grad()
    hidden = model.get_decoder()(input_ids=input_ids).last_hidden_state.flatten(0, 1)
    logps = _head_logprobs(model.get_output_embeddings(), hidden, targets, fused=fused)
    (logps * weights).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_head_matches_autograd_through_a_model(tiny_loaded, monkeypatch):
    model = tiny_loaded.model.train()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, like SmolLM2
    monkeypatch.setattr("alignflow.components.modeling.logprobs.HEAD_CHUNK_TOKENS", 16)  # several chunks
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, model.config.vocab_size, (3, 20), generator=gen)
    targets = torch.randint(0, model.config.vocab_size, (60,), generator=gen)
    weights = torch.randn(60, generator=gen)  # an arbitrary upstream gradient, signs mixed
    plain_logps, plain_grads = _loss_and_grads(model, input_ids, targets, weights, fused=False)
    fused_logps, fused_grads = _loss_and_grads(model, input_ids, targets, weights, fused=True)
    torch.testing.assert_close(fused_logps, plain_logps, rtol=1e-5, atol=1e-5)
    assert fused_grads.keys() == plain_grads.keys() and "model.embed_tokens.weight" in fused_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_frozen_head_gets_no_gradient_but_hidden_does():
    """LoRA freezes the head: only the hidden states need a gradient, the weight product is skipped."""
    head = torch.nn.Linear(4, 9, bias=False).requires_grad_(False)
    hidden = torch.randn(5, 4, requires_grad=True)
    targets = torch.randint(0, 9, (5,))
    FusedHeadLogprobs.apply(hidden, head.weight, None, targets, 2).sum().backward()
    expected_hidden = hidden.detach().clone().requires_grad_(True)
    torch.log_softmax(head(expected_hidden), -1).gather(-1, targets[:, None]).sum().backward()
    assert head.weight.grad is None
    torch.testing.assert_close(hidden.grad, expected_hidden.grad)
