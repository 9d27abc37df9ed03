"""Tiny random-init models: log-prob plumbing, checkpoints, and that training does what it claims."""

import pytest
import torch

from alignflow.components.config import LoraSettings, PreferenceConfig, SFTConfig, load_config
from alignflow.components.modeling.checkpoints import (
    ModelSourceError,
    attach_lora,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from alignflow.components.modeling.logprobs import encode_pairs, sequence_logprobs
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference
from alignflow.components.trainers.sft import train_sft


def _unpadded_logprob(model, tokenizer, prompt, response):
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    logps = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logps[len(p) - 1:].sum().item()


def test_left_padded_batch_matches_unpadded_sequences(tiny_loaded):
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    prompts = ["short prompt", "a considerably longer prompt with many more tokens in it than the other"]
    responses = ["The answer is 7.", "x"]
    batch = encode_pairs(tok, prompts, responses, max_length=512)
    with torch.no_grad():
        got = sequence_logprobs(model, batch).tolist()
    expected = [_unpadded_logprob(model, tok, p, r) for p, r in zip(prompts, responses)]
    assert got == pytest.approx(expected, abs=1e-3)


def test_bad_model_paths_are_named(tmp_path):
    from alignflow.components.config import ModelConfig

    with pytest.raises(ModelSourceError, match="not a directory"):
        load_policy(ModelConfig(source=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        load_policy(ModelConfig(source=str(tmp_path / "empty")))


def test_adapter_checkpoint_round_trip(tmp_path, tiny_loaded):
    base_dir = save_checkpoint(tiny_loaded, tmp_path / "base", {"model_id": "tiny-base"})
    policy = load_checkpoint(base_dir)
    attach_lora(policy, LoraSettings(r=4, alpha=8))
    with torch.no_grad():  # make the adapter non-trivial so merge must change outputs
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    adapter_dir = save_checkpoint(policy, tmp_path / "adapter", {"model_id": "tiny-lora", "base_path": str(base_dir)})
    assert (adapter_dir / "adapter_config.json").exists()
    assert sum(f.stat().st_size for f in adapter_dir.glob("*.safetensors")) < 2_000_000
    batch = encode_pairs(policy.tokenizer, ["p"], ["r"], 64)
    with torch.no_grad():
        expected = sequence_logprobs(policy.model.eval(), batch)
        merged = load_checkpoint(adapter_dir, merge=True)
        torch.testing.assert_close(sequence_logprobs(merged.model, batch), expected, atol=1e-4, rtol=1e-4)
        base_only = sequence_logprobs(load_checkpoint(base_dir).model, batch)
    assert not torch.allclose(base_only, expected, atol=1e-3)
    assert merged.model_id == "tiny-lora"


def test_sft_lowers_loss(tiny_loaded):
    tok = tiny_loaded.tokenizer
    prompts = [f"question {i}" for i in range(8)]
    targets = [f"Start with {i}.\nThe answer is {i}." + tok.eos_token for i in range(8)]
    result = train_sft(tiny_loaded, prompts, targets, SFTConfig(lr=5e-3, epochs=6, batch_size=4, warmup_steps=0), 0)
    assert result.final_loss < 0.7 * result.first_loss


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "rdpo"])
def test_preference_training_raises_reward_accuracy_on_separable_pairs(tiny_loaded, loss_type):
    examples = [PreferenceExample(f"Q{i}: pick", "The answer is 1." + "<|im_end|>", "The answer is 9." + "<|im_end|>")
                for i in range(8)]
    cfg = PreferenceConfig(loss_type=loss_type, beta=0.5, lr=3e-3, epochs=6, batch_size=4, warmup_steps=0,
                           label_smoothing=0.1 if loss_type == "rdpo" else 0.0)
    import copy

    reference = copy.deepcopy(tiny_loaded)
    ref = reference_logprobs(reference, examples, cfg)
    result = train_preference(tiny_loaded, examples, ref, cfg, seed=0)
    first, last = result.history[0], result.history[-1]
    assert last["train/loss"] < first["train/loss"]
    assert last["train/rewards/accuracy"] == 1.0
    assert last["train/rewards/margin"] > first["train/rewards/margin"]
    # the reference was not touched by training
    torch.testing.assert_close(reference_logprobs(reference, examples, cfg), ref)


def test_reference_shape_mismatch_is_an_error(tiny_loaded):
    ex = [PreferenceExample("p", "a", "b")]
    with pytest.raises(ValueError, match="expected \\(1, 2\\)"):
        train_preference(tiny_loaded, ex, torch.zeros(2, 2), PreferenceConfig(), 0)


def test_config_used_by_tests_is_valid(tmp_path):
    from tests.conftest import tiny_overrides

    cfg = load_config(None, tiny_overrides(tmp_path))
    assert cfg.model.source == "tiny"


def test_f_dpo_divergence_switch_trains(tiny_loaded):
    import copy

    examples = [PreferenceExample(f"Q{i}", "The answer is 1.<|im_end|>", "The answer is 9.<|im_end|>")
                for i in range(4)]
    cfg = PreferenceConfig(divergence="js", beta=0.5, lr=3e-3, epochs=6, batch_size=4, warmup_steps=0)
    ref = reference_logprobs(copy.deepcopy(tiny_loaded), examples, cfg)
    history = train_preference(tiny_loaded, examples, ref, cfg, seed=0).history
    assert history[-1]["train/loss"] < history[0]["train/loss"]
