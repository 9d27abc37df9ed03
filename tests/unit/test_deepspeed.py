"""The DeepSpeed ZeRO-2/3 path of the trainers, on CPU in one process over gloo: it must train
exactly like the plain path (same AdamW, schedule and clipping, only sharded) and hand back an
ordinary model. A broken gather, a lost scheduler step or a missed clip shows up as a drift."""

import copy
import json

import pytest
import torch

from alignflow.components.config import PreferenceConfig, RewardConfig
from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference
from alignflow.components.trainers.stepping import load_deepspeed_config

deepspeed = pytest.importorskip("deepspeed")

END = "<|im_end|>"


def _pairs(n: int = 8) -> list[PreferenceExample]:
    return [PreferenceExample(f"Q{i}: pick", "The answer is 1." + END, "The answer is 9." + END) for i in range(n)]


def _zero_config(tmp_path, stage: int) -> str:
    path = tmp_path / f"zero{stage}.json"
    section = {"stage": stage}
    if stage == 3:  # shard every parameter, however small, so the gather path is exercised
        section.update(stage3_param_persistence_threshold=0, stage3_max_live_parameters=0)
    path.write_text(json.dumps({"zero_optimization": section, "train_micro_batch_size_per_gpu": "auto",
                                "gradient_clipping": "auto", "steps_per_print": 10**9}))
    return str(path)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_training_matches_the_plain_trainer(tiny_loaded, tmp_path, stage):
    examples = _pairs()
    plain_cfg = PreferenceConfig(beta=0.5, lr=3e-3, epochs=2, batch_size=4, warmup_steps=1, max_grad_norm=0.5)
    ref = reference_logprobs(copy.deepcopy(tiny_loaded), examples, plain_cfg)
    plain = copy.deepcopy(tiny_loaded)
    plain_hist = train_preference(plain, examples, ref, plain_cfg, seed=0).history

    zero = copy.deepcopy(tiny_loaded)
    zero_cfg = plain_cfg.model_copy(update={"deepspeed_config": _zero_config(tmp_path, stage)})
    zero_hist = train_preference(zero, examples, ref, zero_cfg, seed=0).history

    for key in ("train/loss", "train/lr", "train/grad_norm"):
        assert [h[key] for h in zero_hist] == pytest.approx([h[key] for h in plain_hist], rel=2e-3, abs=1e-5), key
    assert zero_hist[-1]["train/loss"] < zero_hist[0]["train/loss"]
    # an ordinary, whole model comes back: same shapes and values as the plain run, and it saves
    for (name, a), (_, b) in zip(plain.model.named_parameters(), zero.model.named_parameters(), strict=True):
        assert a.shape == b.shape, name
        torch.testing.assert_close(b, a, rtol=2e-3, atol=2e-4)
    zero.model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()


def test_reward_trainer_runs_under_zero2(tokenizer, tmp_path):
    from alignflow.components.config import TinyModelConfig
    from alignflow.components.modeling.checkpoints import tiny_model
    from alignflow.components.modeling.reward_model import RewardModel
    from alignflow.components.trainers.reward import RewardPair, train_reward

    cfg = RewardConfig(loss="bt", lr=2e-3, epochs=4, batch_size=6, deepspeed_config=_zero_config(tmp_path, 2))
    torch.manual_seed(0)
    model = RewardModel(tiny_model(tokenizer, TinyModelConfig(), seed=0), head="scalar")
    pairs = [RewardPair(f"Q{i}", "The answer is right.", "Nonsense words here.") for i in range(12)]
    history = train_reward(model, tokenizer, pairs, cfg, seed=0).history
    assert history[-1]["train/loss"] < history[0]["train/loss"]


def test_deepspeed_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 32}')
    with pytest.raises(ValueError, match=r"ds.json: field 'train_micro_batch_size_per_gpu' is 32 .* gives 8"):
        load_deepspeed_config(bad, batch_size=8, max_grad_norm=1.0, bf16=False)
    bad.write_text('{"optimizer": {"type": "Adam"}}')
    with pytest.raises(ValueError, match="field 'optimizer': remove it"):
        load_deepspeed_config(bad, batch_size=8, max_grad_norm=1.0, bf16=False)
    bad.write_text('{"zero_optimization": {"stage": 5}}')
    with pytest.raises(ValueError, match="zero_optimization.stage"):
        load_deepspeed_config(bad, batch_size=8, max_grad_norm=1.0, bf16=False)
    bad.write_text('{"zero_optimization": ')
    with pytest.raises(ValueError, match="ds.json: not valid JSON"):
        load_deepspeed_config(bad, batch_size=8, max_grad_norm=1.0, bf16=False)


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json"])
def test_shipped_deepspeed_configs_load(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "infra" / "deepspeed" / name
    config = load_deepspeed_config(path, batch_size=8, max_grad_norm=1.0, bf16=True)
    assert config["train_micro_batch_size_per_gpu"] == 8 and config["gradient_clipping"] == 1.0
    assert config["bf16"]["enabled"] is True and config["zero_optimization"]["stage"] == int(name[4])
