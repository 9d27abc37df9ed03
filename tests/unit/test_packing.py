"""Padding-free packing gives the same log-probs, hidden states and training trajectory as
left padding: rows packed end to end must not see each other."""

import copy
from typing import Any

import pytest
import torch

from alignflow.components.config import PreferenceConfig
from alignflow.components.modeling.logprobs import (
    PackedBatch,
    pack_rows,
    pad_rows,
    response_token_logprobs,
    tokenize_rows,
)
from alignflow.components.trainers.preference import (
    ListExample,
    PreferenceExample,
    reference_logprobs,
    train_preference,
)

END = "<|im_end|>"


def _rows(tokenizer):
    prompts = ["What is 2 + 3?", "A much longer question about apples, pears and the sum of both baskets?", "Hi"]
    responses = ["5", "There are 7 apples and 4 pears, so 11 pieces of fruit in all.", "Hello there, friend."]
    return tokenize_rows(tokenizer, prompts, responses, 64, score_prompt=[False, False, True])


@pytest.mark.parametrize("pack_length", [None, 4096])
def test_packed_rows_match_padded_rows(tiny_loaded, pack_length):
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    rows = _rows(tok)
    packed = pack_rows(rows, tok.pad_token_id, pack_length)
    assert isinstance(packed, PackedBatch)
    lengths = sorted(len(ids) for ids, _ in rows)
    if pack_length is None:  # the longest row alone, the two short ones share a packed row
        assert packed.input_ids.shape == (2, lengths[-1]) and lengths[0] + lengths[1] <= lengths[-1]
    else:  # one row, not one pad token
        assert packed.input_ids.shape == (1, sum(lengths))
    with torch.no_grad():
        padded_logps, padded_hidden = response_token_logprobs(model, pad_rows(rows, tok.pad_token_id),
                                                              return_hidden=True)
        packed_logps, packed_hidden = response_token_logprobs(model, packed, return_hidden=True)
    scored = packed.response_mask > 0
    torch.testing.assert_close(packed_logps, padded_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_hidden[scored], padded_hidden[scored], rtol=1e-5, atol=1e-5)

    # the same tokens with positions that do not restart let later rows attend to earlier ones
    leaky = copy.copy(packed)
    leaky.position_ids = torch.arange(packed.input_ids.shape[1]).expand_as(packed.input_ids)
    with torch.no_grad():
        assert not torch.allclose(response_token_logprobs(model, leaky), padded_logps, atol=1e-3)


def test_bad_rows_and_lengths_are_rejected():
    with pytest.raises(ValueError, match="row 1: 3 scored tokens in a row of 3"):
        pack_rows([([1, 2, 3], 1), ([4, 5, 6], 3)])
    with pytest.raises(ValueError, match="pack_length 2 is shorter than a row of 3"):
        pack_rows([([1, 2, 3], 1)], 0, pack_length=2)
    with pytest.raises(ValueError, match="pack_length"):
        PreferenceConfig(packing=True, pack_length=64, max_length=128)


def test_empty_prompt_never_scores_the_first_token(tokenizer):
    (ids, n_scored), = tokenize_rows(tokenizer, [""], ["Hello there."], 64)
    assert n_scored == len(ids) - 1


def _pairs(n: int = 8) -> list[PreferenceExample]:
    return [PreferenceExample(f"Q{i}: pick" + " please" * (i % 3), "The answer is 1." + END,
                              "The answer is definitely 9, trust me." * (1 + i % 2) + END) for i in range(n)]


@pytest.mark.parametrize("kind", ["pairs", "lists"])
def test_training_with_packing_follows_the_padded_trajectory(tiny_loaded, kind):
    if kind == "pairs":
        examples = _pairs()
        overrides: dict[str, Any] = {}
    else:
        good, bad = ["Add 2 and 3.", "The answer is 5."], ["No idea at all.", "The answer is 0."]
        examples = [ListExample(f"Q{i}: 2+3?" + " now" * i, [bad, good], [0.0, 1.0]) for i in range(4)]
        overrides = {"tpo_adaptive_step_reward": True}
    histories = {}
    for packing, pack_length in ((False, None), (True, None), (True, 4096)):
        cfg = PreferenceConfig(beta=0.5, lr=3e-3, epochs=3, batch_size=4, warmup_steps=0, packing=packing,
                               pack_length=pack_length, **overrides)
        ref = reference_logprobs(copy.deepcopy(tiny_loaded), examples, cfg)
        histories[(packing, pack_length)] = train_preference(copy.deepcopy(tiny_loaded), examples, ref, cfg,
                                                             seed=0).history
    losses = {key: [h["train/loss"] for h in hist] for key, hist in histories.items()}
    for key in ((True, None), (True, 4096)):
        assert losses[key] == pytest.approx(losses[(False, None)], rel=1e-3, abs=1e-4), key
        assert losses[key][-1] < losses[key][0]
