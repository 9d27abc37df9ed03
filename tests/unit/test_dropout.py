"""Dropout in DPO-family training: the reference log-probs come from a dropout-free forward, so the
policy trains with dropout off (``preference.disable_dropout``, default true), as TRL does."""

from __future__ import annotations

import copy

import pytest
import torch

from alignflow.components.config import LoraSettings, PreferenceConfig
from alignflow.components.modeling.checkpoints import attach_lora
from alignflow.components.modeling.logprobs import encode_pairs, sequence_logprobs
from alignflow.components.trainers.common import disable_dropout
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference


def _lora_policy(tiny_loaded, dropout: float):
    policy = attach_lora(copy.deepcopy(tiny_loaded), LoraSettings(r=4, alpha=8, dropout=dropout), seed=0)
    with torch.no_grad():  # B starts at zero, which would hide the adapter path (and its dropout) entirely
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return policy


def _two_training_forwards(policy) -> tuple[torch.Tensor, torch.Tensor]:
    batch = encode_pairs(policy.tokenizer, ["What is 2 + 3?"], ["The answer is 5."], 64)
    policy.model.train()
    with torch.no_grad():
        return sequence_logprobs(policy.model, batch), sequence_logprobs(policy.model, batch)


def test_disable_dropout_makes_training_mode_forwards_identical(tiny_loaded):
    policy = _lora_policy(tiny_loaded, dropout=0.1)
    first, second = _two_training_forwards(policy)
    assert not torch.allclose(first, second)  # LoRA dropout 0.1: the same input, two different log-probs
    policy.model.config.attention_dropout = 0.1
    assert disable_dropout(policy.model) >= 1
    first, second = _two_training_forwards(policy)
    assert torch.equal(first, second)
    assert all(m.p == 0 for m in policy.model.modules() if isinstance(m, torch.nn.Dropout))
    assert policy.model.config.attention_dropout == 0.0
    assert disable_dropout(policy.model) == 0  # nothing left to disable


def _examples(tok) -> list[PreferenceExample]:
    eos = tok.eos_token
    return [PreferenceExample(f"What is {i} + 1?", f"The answer is {i + 1}.{eos}", f"It is {i}.{eos}")
            for i in range(4)]


@pytest.mark.parametrize("switch", [True, False])
def test_the_preference_switch(tiny_loaded, switch):
    """On (the default): two trainings from one start under different RNG states are identical; off, the
    policy's dropout masks (drawn from the RNG) make them differ."""
    assert PreferenceConfig().disable_dropout is True
    cfg = PreferenceConfig(beta=0.5, lr=1e-3, epochs=1, batch_size=2, warmup_steps=0, disable_dropout=switch)
    start = _lora_policy(tiny_loaded, dropout=0.1)
    examples = _examples(tiny_loaded.tokenizer)
    ref = reference_logprobs(tiny_loaded, examples, cfg)
    histories = []
    for rng in (1, 2):
        policy = copy.deepcopy(start)
        torch.manual_seed(rng)
        histories.append([h["train/loss"] for h in train_preference(policy, examples, ref, cfg, seed=0).history])
        rates = {m.p for m in policy.model.modules() if isinstance(m, torch.nn.Dropout)}
        assert rates == ({0.0} if switch else {0.1})
    assert (histories[0] == histories[1]) is switch
