"""bf16 parameters with fp32 master weights (``preference.bf16_master_weights``, trainers/stepping.py): the
tiny model trains to the fp32 run's loss within bf16's noise, the model comes back in fp32 holding the
master weights (not their bf16 rounding), a frozen LoRA base comes back exact, packing works, a resumed
training ends bit-for-bit where an uninterrupted one does, and the switch is a logged param."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from alignflow.components.config import LoraSettings, PreferenceConfig, load_config
from alignflow.components.modeling.checkpoints import attach_lora
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference
from alignflow.components.trainers.resume import TrainingCheckpointer
from alignflow.components.trainers.stepping import MasterWeightsStepper, make_stepper

END = "<|im_end|>"


def _pairs(n: int = 12) -> list[PreferenceExample]:
    return [PreferenceExample(f"Q{i}: what is {i} + 1?", f"The answer is {i + 1}." + END,
                              f"The answer is {i + 5}, I think, after some thought." + END) for i in range(n)]


def _train(loaded, cfg: PreferenceConfig, **kwargs):
    examples = _pairs()
    ref = reference_logprobs(copy.deepcopy(loaded), examples, cfg)
    torch.manual_seed(0)
    return train_preference(loaded, examples, ref, cfg, seed=0, **kwargs)


def _weights(loaded) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in loaded.model.named_parameters()}


@pytest.mark.parametrize("packing", [False, True])
def test_bf16_master_weights_train_like_fp32(tiny_loaded, packing):
    cfg = PreferenceConfig(beta=0.5, lr=2e-3, epochs=3, batch_size=4, warmup_steps=0, packing=packing)  # 9 steps
    fp32 = copy.deepcopy(tiny_loaded)
    start = _weights(tiny_loaded)
    reference = _train(fp32, cfg)
    mixed = _train(tiny_loaded, cfg.model_copy(update={"bf16_master_weights": True}))
    losses32, losses16 = [h["train/loss"] for h in reference.history], [h["train/loss"] for h in mixed.history]
    assert losses32[-1] < losses32[0] - 0.05  # it learned: the comparison is not between two flat lines
    assert losses16[-1] == pytest.approx(losses32[-1], abs=0.02)
    assert max(abs(a - b) for a, b in zip(losses16, losses32, strict=True)) < 0.03
    after, trained = _weights(tiny_loaded), _weights(fp32)
    assert all(p.dtype == torch.float32 for p in after.values())  # handed back in fp32
    moved = torch.cat([(trained[n] - start[n]).flatten() for n in start]).norm()
    apart = torch.cat([(after[n] - trained[n]).flatten() for n in start]).norm()
    assert apart < 0.1 * moved  # the same updates, up to bf16's noise on the gradients (measured: 0.018)
    # the masters, not their bf16 rounding: some weights are not bf16 numbers
    embed = after["model.embed_tokens.weight"]
    assert not torch.equal(embed, embed.bfloat16().float())


def test_the_masters_take_updates_bf16_weights_would_round_away(tiny_loaded):
    model = tiny_loaded.model
    stepper = make_stepper(model, 1e-8, 10, 0, 10.0, 4, None, bf16_master_weights=True)
    assert isinstance(stepper, MasterWeightsStepper)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(b.dtype == torch.float32 for b in model.buffers())  # rotary frequencies stay fp32
    before = [m.clone() for m in stepper.masters]
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.float().sum().backward()
    stepper.step()
    # an lr of 1e-8 changes weights by far less than bf16's spacing: the masters move, the model does not
    assert any(not torch.equal(m, b) for m, b in zip(stepper.masters, before, strict=True))
    stepper.finish()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(p, m) for p, m in zip((p for p in model.parameters() if p.requires_grad),
                                                  stepper.masters, strict=True))


def test_a_frozen_lora_base_comes_back_exact(tiny_loaded):
    attach_lora(tiny_loaded, LoraSettings(r=4, alpha=8), seed=0)
    frozen = {n: p.detach().clone() for n, p in tiny_loaded.model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in tiny_loaded.model.named_parameters() if p.requires_grad}
    _train(tiny_loaded, PreferenceConfig(beta=0.5, lr=5e-3, epochs=1, batch_size=4, bf16_master_weights=True))
    params = dict(tiny_loaded.model.named_parameters())
    assert all(torch.equal(params[n], value) for n, value in frozen.items())
    assert any(not torch.equal(params[n], value) for n, value in lora.items())


def test_bf16_master_training_resumes_bit_for_bit(tiny_loaded, tmp_path):
    cfg = PreferenceConfig(beta=0.5, lr=2e-3, epochs=2, batch_size=4, warmup_steps=0, bf16_master_weights=True)
    first, second = copy.deepcopy(tiny_loaded), copy.deepcopy(tiny_loaded)
    straight = _train(tiny_loaded, cfg)

    def stop_at_4(step: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(first, cfg, checkpointer=TrainingCheckpointer(tmp_path, 3, "x"), after_step=stop_at_4)
    resumed = _train(second, cfg, checkpointer=TrainingCheckpointer(tmp_path, 3, "x"))
    assert resumed.resumed_from_step == 3
    assert [h["train/loss"] for h in resumed.history] == [h["train/loss"] for h in straight.history]
    expected = _weights(tiny_loaded)
    assert all(torch.equal(p, expected[n]) for n, p in _weights(second).items())


def test_the_switches_are_logged_params_and_refuse_deepspeed(tmp_path):
    from alignflow.tasks.context import section_params

    cfg = load_config(None, ["preference.bf16_master_weights=true", "preference.compile_model=true"])
    params = section_params("preference", cfg.preference.model_dump(mode="json"))
    assert params["preference.bf16_master_weights"] is True and params["preference.compile_model"] is True
    with pytest.raises(Exception, match="DeepSpeed"):
        PreferenceConfig(bf16_master_weights=True, deepspeed_config="infra/deepspeed/zero2.json")
    assert load_config(None).content_hash() != cfg.content_hash()


@pytest.mark.skipif(os.environ.get("ALIGNFLOW_COMPILE_TESTS") != "1",
                    reason="inductor on CPU compiles forward and backward for minutes; ALIGNFLOW_COMPILE_TESTS=1 "
                           "runs it")
def test_compiled_forward_trains_like_eager(tiny_loaded):
    cfg = PreferenceConfig(beta=0.5, lr=2e-3, epochs=1, batch_size=4, warmup_steps=0, bf16_master_weights=True)
    eager = copy.deepcopy(tiny_loaded)
    expected = _train(eager, cfg)
    got = _train(tiny_loaded, cfg.model_copy(update={"compile_model": True}))
    assert [h["train/loss"] for h in got.history] == pytest.approx([h["train/loss"] for h in expected.history],
                                                                    abs=0.02)
    assert "forward" not in vars(tiny_loaded.model.get_decoder())  # compiled forward removed after training
