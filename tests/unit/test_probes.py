"""Probes modelled on peer projects' bug reports that passed when issue 15 was filed, pinned so they keep
passing: EOS kept in the scored tokens when pad == eos, no double BOS, the prompt/response boundary,
the reference scored in eval mode, finite losses on identical responses, the reward read at the last
token, batched = unbatched greedy generation, and a failed task's run marked FAILED."""

from __future__ import annotations

import copy

import pytest
import torch

from alignflow.components.config import LoraSettings, PreferenceConfig, TinyModelConfig
from alignflow.components.data.prompts import render_prompt
from alignflow.components.modeling.checkpoints import attach_lora, tiny_model
from alignflow.components.modeling.logprobs import TokenBatch, encode_pairs, sequence_logprobs, tokenize_rows


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_eos_is_scored_when_the_pad_token_is_the_eos_token(tokenizer, packed):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2: the case where masking pads can eat EOS
    prompts = [render_prompt(tokenizer, "What is 2 + 3?", ""), render_prompt(tokenizer, "Hi", "")]
    responses = ["The answer is 5." + tokenizer.eos_token, "Hello there, a much longer reply." + tokenizer.eos_token]
    batch = encode_pairs(tokenizer, prompts, responses, 256, packed=packed)
    for row, response in enumerate(responses):
        n = len(_ids(tokenizer, response))
        assert int(batch.response_mask[row].sum()) == n  # every response token, its final EOS included
    if isinstance(batch, TokenBatch):  # the shorter row is left-padded with pad == eos, its own EOS last
        short = int(batch.attention_mask.sum(1).argmin())
        assert batch.input_ids[short, 0] == tokenizer.pad_token_id and batch.attention_mask[short, 0] == 0
        assert batch.input_ids[short, -1] == tokenizer.eos_token_id and batch.response_mask[short, -1] == 1


def test_no_double_bos_and_the_boundary_between_prompt_and_response(tokenizer):
    prompt = render_prompt(tokenizer, "What is 2 + 3?", "")
    (ids, n_scored), = tokenize_rows(tokenizer, [prompt], ["The answer is 5."], 256)
    prompt_ids, response_ids = _ids(tokenizer, prompt), _ids(tokenizer, "The answer is 5.")
    assert not ids[0] == ids[1] == tokenizer.bos_token_id
    assert tokenizer(prompt)["input_ids"][:2] == prompt_ids[:2]  # the template carries the BOS; none is added
    assert ids == prompt_ids + response_ids and n_scored == len(response_ids)  # tokenized apart: no token straddles


def test_the_reference_is_scored_in_eval_mode(tiny_loaded):
    from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs

    reference = attach_lora(copy.deepcopy(tiny_loaded), LoraSettings(r=4, alpha=8, dropout=0.5), seed=0)
    with torch.no_grad():
        for name, param in reference.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    reference.model.train()
    examples = [PreferenceExample("What is 2 + 3?", "The answer is 5.", "It is 6.")]
    logps = reference_logprobs(reference, examples, PreferenceConfig())
    assert not reference.model.training
    batch = encode_pairs(reference.tokenizer, ["What is 2 + 3?"] * 2, ["The answer is 5.", "It is 6."], 256)
    with torch.no_grad():
        torch.testing.assert_close(logps[0], sequence_logprobs(reference.model.eval(), batch).double())


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "cdpo", "rdpo"])
def test_identical_chosen_and_rejected_give_finite_losses(tiny_loaded, loss_type):
    from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference

    cfg = PreferenceConfig(loss_type=loss_type, label_smoothing=0.1 if loss_type in ("cdpo", "rdpo") else 0.0,
                           lr=1e-3, batch_size=2, warmup_steps=0)
    examples = [PreferenceExample(f"What is {i} + 1?", "Same answer.", "Same answer.") for i in range(2)]
    ref = reference_logprobs(tiny_loaded, examples, cfg)
    history = train_preference(copy.deepcopy(tiny_loaded), examples, ref, cfg, seed=0).history
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)


def test_the_reward_is_read_at_the_last_token_whatever_the_padding(tokenizer):
    from alignflow.components.modeling.reward_model import RewardModel

    torch.manual_seed(0)
    model = RewardModel(tiny_model(tokenizer, TinyModelConfig(), seed=0), head="scalar").eval()
    prompts, responses = ["Q1", "A much longer question with many words in it"], ["Short.", "A longer answer here."]
    with torch.no_grad():
        together = model(encode_pairs(tokenizer, prompts, responses, 256))["reward"]
        alone = [model(encode_pairs(tokenizer, [p], [r], 256))["reward"][0] for p, r in zip(prompts, responses)]
        appended = model(encode_pairs(tokenizer, prompts[:1], [responses[0] + " More."], 256))["reward"][0]
    torch.testing.assert_close(together, torch.stack(alone), atol=1e-4, rtol=1e-4)
    assert not torch.isclose(appended, alone[0], atol=1e-4)  # the last token is what the head reads


def test_batched_greedy_generation_equals_one_prompt_at_a_time(tiny_loaded):
    from alignflow.components.modeling.generation import generate_completions

    tok = tiny_loaded.tokenizer
    prompts = [render_prompt(tok, q, "") for q in ("What is 2 + 3?", "A far longer question about apples?", "Hi")]
    batched = generate_completions(tiny_loaded.model, tok, prompts, k=1, do_sample=False, max_new_tokens=12,
                                   batch_size=3)
    alone = [generate_completions(tiny_loaded.model, tok, [p], k=1, do_sample=False, max_new_tokens=12,
                                  batch_size=1)[0] for p in prompts]
    assert [(c.text, c.n_tokens) for c in batched] == [(c.text, c.n_tokens) for c in alone]


def test_a_failing_task_leaves_its_run_failed(tmp_path):
    from alignflow.tasks.context import TrackingContext, child_run

    ctx = TrackingContext(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="probes", parent_run_id="")
    tracker = ctx.tracker()
    ctx = ctx.under(tracker.start_run("pipeline"))
    with pytest.raises(RuntimeError, match="boom"):
        with child_run(ctx, "task") as (_, run_id):
            raise RuntimeError("boom")
    assert tracker.get_run(run_id).info.status == "FAILED"
