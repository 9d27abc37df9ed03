"""Every trainer on a tiny random-init model: DOVE ≡ DPO on equal prompts, rationale and list
(TPO) rows train, each reward loss lowers its loss and separates a toy set, GPM fits a cyclic
preference set that a scalar Bradley-Terry model cannot."""

import copy

import pytest
import torch

from alignflow.components.config import ConfigError, PreferenceConfig, RewardConfig, TinyModelConfig
from alignflow.components.evaluation.reward import reward_model_metrics
from alignflow.components.modeling.checkpoints import tiny_model
from alignflow.components.modeling.logprobs import encode_pairs, encode_stepped
from alignflow.components.modeling.reward_model import (
    HeadType,
    RewardModel,
    decoder_layers,
    freeze_below_top_layers,
    scalar_head_from_attribute,
)
from alignflow.components.trainers.preference import (
    ListExample,
    PreferenceExample,
    reference_logprobs,
    train_preference,
)
from alignflow.components.trainers.reward import AttributeExample, RewardPair, score_pairs, train_reward

END = "<|im_end|>"


def _separable_pairs(n: int = 8) -> list[PreferenceExample]:
    return [PreferenceExample(f"Q{i}: pick", "The answer is 1." + END, "The answer is 9." + END) for i in range(n)]


def test_joint_logps_score_prompt_tokens_and_dove_with_equal_prompts_is_dpo(tiny_loaded):
    tok, model = tiny_loaded.tokenizer, tiny_loaded.model
    plain = encode_pairs(tok, ["a prompt here"], ["reply"], 64)
    joint = encode_pairs(tok, ["a prompt here"], ["reply"], 64, score_prompt=True)
    n_prompt = len(tok("a prompt here", add_special_tokens=False)["input_ids"])
    assert int(joint.response_mask.sum()) == int(plain.response_mask.sum()) + n_prompt - 1

    reference = copy.deepcopy(tiny_loaded)
    with torch.no_grad():  # perturb the policy so policy ≠ reference
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pairs = _separable_pairs(4)
    dove = [PreferenceExample(e.prompt, e.chosen, e.rejected, prompt_rejected=e.prompt) for e in pairs]
    cfg = PreferenceConfig()
    dpo_margin = _margin(tiny_loaded, reference, pairs, cfg)
    dove_margin = _margin(tiny_loaded, reference, dove, cfg)
    torch.testing.assert_close(dove_margin, dpo_margin, rtol=1e-4, atol=1e-4)
    # with different prompts the prompt terms no longer cancel
    other = [PreferenceExample(e.prompt, e.chosen, e.rejected, prompt_rejected="Another question entirely")
             for e in pairs]
    assert not torch.allclose(_margin(tiny_loaded, reference, other, cfg), dpo_margin, atol=1e-3)


def _margin(policy, reference, examples, cfg):
    ref = reference_logprobs(reference, examples, cfg)
    pol = reference_logprobs(policy, examples, cfg)
    return (pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1])


def test_dove_rows_with_different_prompts_train(tiny_loaded):
    examples = [PreferenceExample(f"Q{i}: pick", "The answer is 1." + END, "The answer is 9." + END,
                                  prompt_rejected=f"R{i}: choose") for i in range(8)]
    _train_and_check(tiny_loaded, examples)


def test_rationale_rows_train_and_raise_rationale_likelihood(tiny_loaded):
    examples = [PreferenceExample(e.prompt, e.chosen, e.rejected, rationale="A is correct: 1 is the answer.")
                for e in _separable_pairs()]
    for form in ("linear", "logsigmoid"):
        policy = copy.deepcopy(tiny_loaded)
        history = _train_and_check(policy, examples, rationale_gamma=0.5, rationale_form=form)
        assert history[-1]["train/rationale_logp"] > history[0]["train/rationale_logp"]


def test_per_pair_label_smoothing_is_used(tiny_loaded):
    cfg = PreferenceConfig(beta=0.5, lr=3e-3, epochs=1, batch_size=8, warmup_steps=0)
    plain = _separable_pairs()
    smoothed = [PreferenceExample(e.prompt, e.chosen, e.rejected, label_smoothing=0.4) for e in plain]
    policy = copy.deepcopy(tiny_loaded)
    ref = reference_logprobs(tiny_loaded, plain, cfg)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = train_preference(copy.deepcopy(policy), plain, ref, cfg, seed=0).history[0]["train/loss"]
    b = train_preference(copy.deepcopy(policy), smoothed, ref, cfg, seed=0).history[0]["train/loss"]
    assert a != pytest.approx(b)


def _train_and_check(policy, examples, **overrides):
    cfg = PreferenceConfig(beta=0.5, lr=3e-3, epochs=6, batch_size=4, warmup_steps=0, **overrides)
    reference = copy.deepcopy(policy)
    ref = reference_logprobs(reference, examples, cfg)
    history = train_preference(policy, examples, ref, cfg, seed=0).history
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert history[-1]["train/rewards/accuracy"] == 1.0
    return history


def test_stepped_encoding_assigns_every_response_token_to_one_step(tokenizer):
    batch, steps = encode_stepped(tokenizer, ["p", "p"], [["Step one.", "Step two."], ["Only step."]], 64)
    for row in range(2):
        scored = batch.response_mask[row] > 0
        assert bool((steps[row][scored] >= 0).all()) and bool((steps[row][~scored] == -1).all())
    assert int(steps[0].max()) == 1 and int(steps[1].max()) == 0


@pytest.mark.parametrize("asr,lam", [(True, True), (False, False)])
def test_tpo_list_rows_train_to_the_ranking(tiny_loaded, asr, lam):
    good, mid, bad = ["Add 2 and 3.", "The answer is 5."], ["Add 2 and 3.", "The answer is 6."], ["No idea.",
                                                                                                  "The answer is 0."]
    examples = [ListExample(f"Q{i}: 2+3?", [mid, bad, good], [1.0, 0.0, 2.0]) for i in range(6)]
    cfg = PreferenceConfig(beta=0.5, lr=3e-3, epochs=8, batch_size=3, warmup_steps=0,
                           tpo_adaptive_step_reward=asr, tpo_lambda_weighting=lam)
    ref = reference_logprobs(copy.deepcopy(tiny_loaded), examples, cfg)
    assert len(ref) == 6 and ref[0].shape[0] == 3
    history = train_preference(tiny_loaded, examples, ref, cfg, seed=0).history
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    assert history[-1]["train/list_pair_accuracy"] == 1.0


def test_mixed_rows_are_rejected(tiny_loaded):
    mixed = [_separable_pairs(1)[0], ListExample("p", [["a"], ["b"]], [1.0, 0.0])]
    with pytest.raises(ValueError, match="all pair rows or all list rows"):
        reference_logprobs(tiny_loaded, mixed, PreferenceConfig())


# ---- reward models -----------------------------------------------------------------------------

def _reward_model(tokenizer, head: HeadType, seed: int = 0, **kw) -> RewardModel:
    torch.manual_seed(seed)
    return RewardModel(tiny_model(tokenizer, TinyModelConfig(), seed=seed), head=head, **kw)


def _toy_pairs(n: int = 12) -> list[RewardPair]:
    return [RewardPair(f"Q{i}", "The answer is right.", "Nonsense words here.", margin=0.5, strength=2.0,
                       category="even" if i % 2 == 0 else "odd") for i in range(n)]


@pytest.mark.parametrize("loss", ["bt", "margin_bt", "scaled_bt", "eurus", "gpm"])
def test_reward_trainer_separates_a_toy_set(tokenizer, loss):
    cfg = RewardConfig(loss=loss, lr=2e-3, epochs=6, batch_size=6)
    model = _reward_model(tokenizer, cfg.head)
    pairs = _toy_pairs()
    history = train_reward(model, tokenizer, pairs, cfg, seed=0).history
    assert history[-1]["train/loss"] < history[0]["train/loss"]
    metrics = reward_model_metrics(score_pairs(model, tokenizer, pairs, cfg), [p.category for p in pairs])
    assert metrics["rm/accuracy"] == 1.0 and metrics["rm/accuracy/odd"] == 1.0
    assert 0.0 <= metrics["rm/ece"] <= 0.5


def test_training_only_the_top_blocks_leaves_the_rest_untouched_and_still_separates(tokenizer):
    cfg = RewardConfig(lr=2e-3, epochs=6, batch_size=6)
    model = _reward_model(tokenizer, cfg.head)
    layers = decoder_layers(model.causal_lm)
    assert len(layers) >= 2
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = freeze_below_top_layers(model, 1)
    assert trainable == sum(p.numel() for p in layers[-1].parameters()) + sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("backbone.layers")
        and "embed" not in name)
    pairs = _toy_pairs()
    train_reward(model, tokenizer, pairs, cfg, seed=0)
    after = dict(model.named_parameters())
    top = f"backbone.layers.{len(layers) - 1}."
    for name, value in before.items():
        moved = not torch.equal(value, after[name].detach())
        frozen = "embed" in name or (name.startswith("backbone.layers.") and not name.startswith(top))
        if name != "head.bias":  # a pairwise loss is blind to a shared offset: no gradient reaches the bias
            assert moved != frozen, name  # a frozen weight never moves; a trained one does
    assert reward_model_metrics(score_pairs(model, tokenizer, pairs, cfg), [p.category for p in pairs])[
        "rm/accuracy"] == 1.0
    with pytest.raises(ConfigError, match="between 1 and the model's"):  # a config error: not retried
        freeze_below_top_layers(_reward_model(tokenizer, cfg.head), len(layers) + 1)


def test_regression_then_scaled_bt_from_the_helpfulness_head(tokenizer):
    rows = [AttributeExample(f"Q{i}", "Helpful and correct.", [4, 4, 3, 1, 2]) for i in range(6)] + \
           [AttributeExample(f"Q{i}", "Rude, wrong.", [0, 0, 1, 1, 1]) for i in range(6)]
    cfg = RewardConfig(loss="regression", lr=2e-3, epochs=10, batch_size=6)
    model = _reward_model(tokenizer, "multi_attribute")
    history = train_reward(model, tokenizer, rows, cfg, seed=0).history
    assert history[-1]["train/loss"] < 0.5 * history[0]["train/loss"]
    pairs = [RewardPair(f"Q{i}", "Helpful and correct.", "Rude, wrong.") for i in range(4)]
    assert reward_model_metrics(score_pairs(model, tokenizer, pairs, cfg))["rm/accuracy"] == 1.0
    scalar = scalar_head_from_attribute(model, 0)
    bt = RewardConfig(loss="scaled_bt", lr=1e-3, epochs=1, batch_size=4)
    # initialised from helpfulness, the BT model already ranks the pairs before any BT step
    assert reward_model_metrics(score_pairs(scalar, tokenizer, pairs, bt))["rm/accuracy"] == 1.0
    with pytest.raises(ValueError, match="needs a 'multi_attribute' head"):
        train_reward(scalar, tokenizer, rows, cfg, seed=0)


def test_gpm_fits_cyclic_preferences_that_bradley_terry_cannot(tokenizer):
    # rock ≻ scissors ≻ paper ≻ rock: no scalar reward orders a cycle, so BT tops out at 2/3.
    cycle = [("rock", "scissors"), ("scissors", "paper"), ("paper", "rock")]
    pairs = [RewardPair("Pick one.", a, b) for a, b in cycle] * 4
    results = {}
    for loss in ("bt", "gpm"):
        cfg = RewardConfig(loss=loss, lr=5e-3, epochs=40, batch_size=12, gpm_k=2)
        model = _reward_model(tokenizer, cfg.head)
        train_reward(model, tokenizer, pairs, cfg, seed=0)
        results[loss] = reward_model_metrics(score_pairs(model, tokenizer, pairs[:3], cfg))["rm/accuracy"]
    assert results["gpm"] == 1.0
    assert results["bt"] <= 2 / 3 + 1e-9


def test_ensemble_strength_finds_and_flips_a_mislabelled_pair(tokenizer, tmp_path):
    from alignflow.components.collection.strength import annotate_pair_file, ensemble_differences, train_ensemble
    from alignflow.components.data.io import read_rows, write_rows
    from alignflow.components.data.schemas import PairRow

    rows = [PairRow(problem_id=str(i), prompt=f"Q{i}", chosen="The answer is right.", rejected="Nonsense words here.",
                    score_chosen=1.0, score_rejected=0.0) for i in range(11)]
    rows.append(PairRow(problem_id="bad", prompt="Q11", chosen="Nonsense words here.", rejected="The answer is right.",
                        score_chosen=1.0, score_rejected=0.0))  # a flipped label
    pairs = [RewardPair(r.prompt, r.chosen, r.rejected) for r in rows]
    cfg = RewardConfig(loss="bt", lr=2e-3, epochs=6, batch_size=6)
    models = train_ensemble(lambda seed: _reward_model(tokenizer, "scalar", seed=seed), tokenizer, pairs, cfg,
                            seeds=[0, 1])
    diffs = ensemble_differences(models, tokenizer, pairs, cfg)
    assert diffs.shape == (2, 12)
    path = tmp_path / "pairs.jsonl"
    write_rows(path, rows)
    annotate_pair_file(path, diffs, "flip", lineage={"ensemble_seeds": [0, 1]})
    back = read_rows(path, PairRow)
    assert back[-1].flipped and back[-1].chosen == "The answer is right."
    assert not any(r.flipped for r in back[:-1])
    assert all(r.strength_mean is not None and r.strength_mean > 0 and r.strength_std is not None for r in back)


def test_pipeline_training_rows_carry_the_ensemble_label_smoothing():
    from alignflow.components.data.schemas import PairRow
    from alignflow.components.stages.train import preference_examples

    rows = [PairRow(problem_id="1", prompt="Q", chosen="a", rejected="b", score_chosen=1, score_rejected=0,
                    label_smoothing=0.2),
            PairRow(problem_id="2", prompt="Q", chosen="a", rejected="b", score_chosen=1, score_rejected=0)]
    examples = preference_examples(rows, END)
    assert [e.label_smoothing for e in examples] == [0.2, None]
    assert examples[0].chosen == "a" + END
