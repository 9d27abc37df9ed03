"""A training interrupted after step k and resumed from its saved state ends exactly where an
uninterrupted one does: same trainable weights, same metric history. LoRA dropout is on, so the
RNG state has to be restored too for this to hold."""

from __future__ import annotations

import copy

import pytest
import torch

from alignflow.components.config import LoraSettings, PreferenceConfig, SFTConfig, TinyModelConfig
from alignflow.components.modeling.checkpoints import attach_lora
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference
from alignflow.components.trainers.resume import ResumeStateMismatch, TrainingCheckpointer
from alignflow.components.trainers.sft import train_sft


class Interrupted(Exception):
    pass


def _interrupt_at(step_to_stop: int):
    def hook(step: int) -> None:
        if step == step_to_stop:
            raise Interrupted
    return hook


def _trainable(loaded) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in loaded.model.named_parameters() if p.requires_grad}


@pytest.fixture()
def lora_policy(tiny_loaded):
    attach_lora(tiny_loaded, LoraSettings(r=4, alpha=8, dropout=0.2))
    return tiny_loaded


def _pairs():
    return [PreferenceExample(f"Q{i}: pick", "The answer is 1.<|im_end|>", f"The answer is {i + 2}.<|im_end|>")
            for i in range(10)]


def test_preference_training_resumed_mid_way_matches_an_uninterrupted_one(lora_policy, tmp_path):
    cfg = PreferenceConfig(beta=0.5, lr=3e-3, epochs=3, batch_size=4, warmup_steps=2)  # 9 steps
    examples = _pairs()
    start = copy.deepcopy(lora_policy)
    ref = reference_logprobs(copy.deepcopy(lora_policy), examples, cfg)

    torch.manual_seed(7)
    straight = train_preference(lora_policy, examples, ref, cfg, seed=0)
    expected = _trainable(lora_policy)

    first, second = copy.deepcopy(start), copy.deepcopy(start)
    checkpointer = TrainingCheckpointer(tmp_path / "state", every=2, fingerprint="inputs-a")
    torch.manual_seed(7)
    with pytest.raises(Interrupted):
        train_preference(first, examples, ref, cfg, seed=0, checkpointer=checkpointer, after_step=_interrupt_at(5))
    assert checkpointer.saves == 2  # steps 2 and 4; step 5 is lost with the process

    torch.manual_seed(12345)  # the resumed process's own RNG: overwritten by the saved state
    resumed_checkpointer = TrainingCheckpointer(tmp_path / "state", every=2, fingerprint="inputs-a")
    resumed = train_preference(second, examples, ref, cfg, seed=0, checkpointer=resumed_checkpointer)
    assert resumed.resumed_from_step == 4 and resumed.steps == straight.steps == 9
    got = _trainable(second)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert [h["train/loss"] for h in resumed.history] == pytest.approx([h["train/loss"] for h in straight.history],
                                                                       abs=0, rel=0)
    resumed_checkpointer.clear()
    assert not resumed_checkpointer.path.exists()


def test_sft_resumes_and_a_state_from_other_inputs_is_refused(tiny_loaded, tmp_path):
    prompts, targets = [f"say {i}" for i in range(6)], [f"{i}<|im_end|>" for i in range(6)]
    cfg = SFTConfig(lr=5e-3, epochs=2, batch_size=2, warmup_steps=0)  # 6 steps
    start = copy.deepcopy(tiny_loaded)
    straight = train_sft(tiny_loaded, prompts, targets, cfg, seed=0)

    first, second = copy.deepcopy(start), copy.deepcopy(start)
    with pytest.raises(Interrupted):
        train_sft(first, prompts, targets, cfg, seed=0,
                  checkpointer=TrainingCheckpointer(tmp_path, every=3, fingerprint="sft-a"),
                  after_step=_interrupt_at(4))
    with pytest.raises(ResumeStateMismatch, match="other inputs"):
        train_sft(copy.deepcopy(start), prompts, targets, cfg, seed=0,
                  checkpointer=TrainingCheckpointer(tmp_path, every=3, fingerprint="sft-b"))
    resumed = train_sft(second, prompts, targets, cfg, seed=0,
                        checkpointer=TrainingCheckpointer(tmp_path, every=3, fingerprint="sft-a"))
    assert resumed.resumed_from_step == 3
    assert resumed.final_loss == straight.final_loss
    for name, value in _trainable(tiny_loaded).items():
        assert torch.equal(dict(second.model.named_parameters())[name].detach(), value), name


def test_no_directory_or_zero_interval_saves_nothing(tiny_loaded, tmp_path):
    assert not TrainingCheckpointer(None, 5, "x").enabled
    off = TrainingCheckpointer(tmp_path, 0, "x")
    train_sft(tiny_loaded, ["a", "b"], ["1", "2"], SFTConfig(epochs=2, batch_size=1, warmup_steps=0), 0,
              checkpointer=off)
    assert off.saves == 0 and not list(tmp_path.iterdir())


def test_a_seeded_lora_adapter_starts_the_same_in_every_run(tokenizer):
    from alignflow.components.modeling.checkpoints import LoadedModel, tiny_model

    def adapter(seed):
        loaded = LoadedModel(tiny_model(tokenizer, TinyModelConfig(), seed=0), tokenizer, "t", None)
        torch.manual_seed(seed * 7 + 1)  # whatever the process did before must not matter
        attach_lora(loaded, LoraSettings(r=4, alpha=8), seed=0)
        return {n: p.detach().clone() for n, p in loaded.model.named_parameters() if "lora_A" in n}

    first, second = adapter(1), adapter(2)
    assert first and all(torch.equal(first[n], second[n]) for n in first)
