"""Token rows at the edges: batches with no scored token, and rows longer than max_length."""

from __future__ import annotations

import pytest
import torch

from alignflow.components.modeling.logprobs import (
    encode_pairs,
    response_token_logprobs,
    sequence_logprobs,
)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_a_batch_of_empty_responses_scores_zero(tiny_loaded, packed):
    """`input_ids[:, -0:]` selected the whole row: an all-empty batch raised IndexError, while an
    empty response inside a mixed batch already scored 0."""
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    batch = encode_pairs(tok, ["What is 2 + 3?", "Hi"], ["", ""], 64, packed=packed)
    with torch.no_grad():
        token_logps, hidden = response_token_logprobs(model, batch, return_hidden=True)
        assert token_logps.shape == (2, 0) and hidden.shape[:2] == (2, 0)
        assert sequence_logprobs(model, batch).tolist() == [0.0, 0.0]
        assert sequence_logprobs(model, batch, average=True).tolist() == [0.0, 0.0]
        mixed = sequence_logprobs(model, encode_pairs(tok, ["What is 2 + 3?", "Hi"], ["", "5"], 64, packed=packed))
    assert mixed[0].item() == 0.0 and mixed[1].item() < 0


def test_empty_responses_score_zero_through_the_generic_head_path(tiny_loaded, monkeypatch):
    """Models whose logits are not exactly lm_head(hidden) (soft-capping) take the model's own logits."""
    from alignflow.components.modeling import logprobs

    monkeypatch.setattr(logprobs, "_plain_lm_head", lambda model: False)
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    with torch.no_grad():
        for packed in (False, True):
            batch = encode_pairs(tok, ["What is 2 + 3?", "Hi"], ["", ""], 64, packed=packed)
            assert sequence_logprobs(model, batch).tolist() == [0.0, 0.0]
