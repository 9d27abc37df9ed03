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


# ---- rows longer than max_length ---------------------------------------------------------------

def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def _long_prompt(tok, n_tokens: int) -> str:
    """A chat-template prompt of ``n_tokens`` tokens or a few more, its question a long story."""
    from alignflow.components.data.prompts import render_prompt

    sentences: list[str] = []
    while len(_ids(tok, prompt := render_prompt(tok, " ".join(sentences) + " How many apples?", ""))) < n_tokens:
        sentences.append(f"Basket {len(sentences)} holds {len(sentences) % 7 + 1} apples.")
    return prompt


def test_a_430_token_prompt_keeps_its_chat_header_and_the_response_fits_the_room_exactly(tokenizer):
    """The old rule cut the prompt from the left: it started mid-story, without `<|im_start|>system`."""
    from alignflow.components.modeling.logprobs import tokenize_rows

    prompt = _long_prompt(tokenizer, 430)
    response = " ".join(f"Step {i}: add {i} apples." for i in range(15)) + tokenizer.eos_token
    prompt_ids, response_ids = _ids(tokenizer, prompt), _ids(tokenizer, response)
    assert len(prompt_ids) + len(response_ids) > 512 and len(response_ids) < 512
    (ids, n_scored), = tokenize_rows(tokenizer, [prompt], [response], 512)
    assert ids[:len(prompt_ids)] == prompt_ids  # the whole prompt, header first
    assert tokenizer.decode(ids[:3]).startswith("<|im_start|>system")
    room = 512 - len(prompt_ids)
    assert len(ids) == 512 and n_scored == room
    assert ids[len(prompt_ids):] == response_ids[:room]  # the response's start, cut from the right


def test_a_long_response_keeps_its_start_and_fills_exactly_the_room_left(tokenizer):
    """The old rule cut a response of max_length tokens or more to half of max_length, whatever room was left."""
    from alignflow.components.modeling.logprobs import tokenize_rows

    prompt = "What is 2 + 3?"
    response = " ".join(f"Step {i}: add {i}." for i in range(200))
    (ids, n_scored), = tokenize_rows(tokenizer, [prompt], [response], 256)
    prompt_ids = _ids(tokenizer, prompt)
    assert len(ids) == 256 and n_scored == 256 - len(prompt_ids)
    assert ids == prompt_ids + _ids(tokenizer, response)[:256 - len(prompt_ids)]
    # a response that fits whole keeps everything, its EOS included
    short = "The answer is 5." + tokenizer.eos_token
    (ids, n_scored), = tokenize_rows(tokenizer, [prompt], [short], 256)
    assert ids == prompt_ids + _ids(tokenizer, short) and ids[-1] == tokenizer.eos_token_id


def test_a_prompt_that_leaves_no_room_is_dropped_and_counted(tokenizer):
    from alignflow.components.modeling.logprobs import MIN_RESPONSE_TOKENS, fit_row, fit_rows, tokenize_rows

    long_prompt = _long_prompt(tokenizer, 430)
    fitted = fit_rows(tokenizer, [long_prompt, "Hi", "What is 2 + 3?"],
                      ["The answer is 5.", " ".join(["word"] * 400), "5"], 256)
    assert fitted.rows[0] is None and fitted.rows[1] is not None and fitted.rows[2] is not None
    assert fitted.kept == [1, 2] and fitted.truncated == [False, True, False]
    stats = fitted.stats()
    assert (stats.rows, stats.truncated, stats.dropped) == (3, 1, 1)
    assert stats.metrics("train") == {"train/truncated_rows": 1.0, "train/truncated_rate": 1 / 3,
                                      "train/dropped_rows": 1.0}
    with pytest.raises(ValueError, match="row 0: its prompt of .* tokens leaves no room"):
        tokenize_rows(tokenizer, [long_prompt], ["The answer is 5."], 256)
    # the minimum: a response that must be cut keeps at least MIN_RESPONSE_TOKENS tokens, or its row goes
    assert fit_row([1] * 10, [2] * 20, 10 + MIN_RESPONSE_TOKENS) == ([1] * 10, [2] * MIN_RESPONSE_TOKENS, True)
    assert fit_row([1] * 10, [2] * 20, 10 + MIN_RESPONSE_TOKENS - 1) is None
    assert fit_row([1] * 10, [2] * 2, 12) == ([1] * 10, [2] * 2, False)  # short but whole: kept
    assert fit_row([1] * 10, [], 10) == ([1] * 10, [], False)  # empty: kept, scores 0


def test_reference_and_policy_log_probs_cover_the_same_rows(tiny_loaded):
    """A pair is dropped when either side does not fit; the reference pass marks it NaN, training skips
    exactly it and counts it, and a reference computed under another max_length is refused."""
    from alignflow.components.config import PreferenceConfig
    from alignflow.components.trainers.preference import PreferenceExample, reference_logprobs, train_preference

    tok = tiny_loaded.tokenizer
    eos = tok.eos_token
    long_prompt = _long_prompt(tok, 430)
    examples = [PreferenceExample(f"What is {i} + 1?", f"The answer is {i + 1}.{eos}", f"It is {i}.{eos}")
                for i in range(4)]
    examples.insert(1, PreferenceExample(long_prompt, f"The answer is 9.{eos}", f"It is 8.{eos}"))
    examples.insert(3, PreferenceExample("What is 2 + 2?", "The answer is 4." + " Indeed." * 200, f"It is 5.{eos}"))
    cfg = PreferenceConfig(max_length=256, batch_size=2, lr=1e-3, warmup_steps=0)
    ref = reference_logprobs(tiny_loaded, examples, cfg)
    assert ref.shape == (6, 2)
    assert torch.isnan(ref[1]).all() and torch.isfinite(ref[[0, 2, 3, 4, 5]]).all()
    result = train_preference(tiny_loaded, examples, ref, cfg, seed=0)
    assert (result.fit.rows, result.fit.truncated, result.fit.dropped) == (6, 1, 1)
    assert result.steps == 3  # 5 kept pairs in batches of 2
    roomy = reference_logprobs(tiny_loaded, examples, cfg.model_copy(update={"max_length": 1024}))
    assert torch.isfinite(roomy).all()
    train_preference(tiny_loaded, examples, roomy, cfg, seed=0)  # a row only the roomier pass kept: skipped
    with pytest.raises(ValueError, match=r"reference log-probs of rows \[1\] are NaN"):
        train_preference(tiny_loaded, examples, ref, cfg.model_copy(update={"max_length": 1024}), seed=0)


def test_tpo_list_rows_are_fitted_by_the_same_rule(tiny_loaded):
    from alignflow.components.config import PreferenceConfig
    from alignflow.components.modeling.logprobs import encode_stepped
    from alignflow.components.trainers.preference import ListExample, reference_logprobs, train_preference

    tok = tiny_loaded.tokenizer
    rows = [ListExample("What is 2 + 3?", [["Add 2 and 3.", "The answer is 5."], ["The answer is 6."]], [1.0, 0.0]),
            ListExample(_long_prompt(tok, 430), [["The answer is 1."], ["The answer is 2."]], [1.0, 0.0]),
            ListExample("What is 1 + 1?", [["Step." * 300], ["The answer is 2."]], [0.0, 1.0])]
    cfg = PreferenceConfig(max_length=256, batch_size=3, lr=1e-3, warmup_steps=0)
    ref = reference_logprobs(tiny_loaded, rows, cfg)
    assert torch.isnan(ref[1]).all() and all(torch.isfinite(ref[i]).all() for i in (0, 2))
    result = train_preference(tiny_loaded, rows, ref, cfg, seed=0)
    assert (result.fit.rows, result.fit.truncated, result.fit.dropped) == (3, 1, 1)
    batch, steps = encode_stepped(tok, ["What is 1 + 1?"], [["Step." * 300]], 256)
    assert batch.input_ids.shape[1] == 256 and int(steps.max()) == 0
    with pytest.raises(ValueError, match="leaves no room"):
        encode_stepped(tok, [_long_prompt(tok, 430)], [["The answer is 1."]], 256)


def test_reward_rows_that_do_not_fit_are_dropped_in_training_and_unscored(tokenizer):
    from alignflow.components.collection.strength import apply_strength
    from alignflow.components.config import RewardConfig, TinyModelConfig
    from alignflow.components.data.schemas import PairRow
    from alignflow.components.modeling.checkpoints import tiny_model
    from alignflow.components.modeling.reward_model import RewardModel
    from alignflow.components.trainers.reward import RewardPair, score_pairs, train_reward

    pairs = [RewardPair(f"Q{i}", "The answer is right.", "Nonsense words here.") for i in range(3)]
    pairs.append(RewardPair(_long_prompt(tokenizer, 430), "The answer is right.", "Nonsense."))
    cfg = RewardConfig(loss="bt", lr=1e-3, epochs=1, batch_size=4, max_length=256)
    model = RewardModel(tiny_model(tokenizer, TinyModelConfig(), seed=0), head="scalar")
    result = train_reward(model, tokenizer, pairs, cfg, seed=0)
    assert (result.fit.rows, result.fit.truncated, result.fit.dropped) == (4, 0, 1)
    scores = score_pairs(model, tokenizer, pairs, cfg)
    assert torch.isfinite(scores[:3]).all() and torch.isnan(scores[3])
    rows = [PairRow(problem_id=str(i), prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, score_chosen=1.0,
                    score_rejected=0.0) for i, p in enumerate(pairs)]
    mean = torch.tensor([1.0, -1.0, 0.5, float("nan")], dtype=torch.float64)
    curated = apply_strength(rows, mean, torch.zeros(4, dtype=torch.float64), "flip")
    assert curated[1].flipped and curated[3] == rows[3].model_copy(update={"lineage": rows[3].lineage})


def test_the_sft_stage_warns_naming_the_file_and_records_the_counts(tmp_path, tiny_loaded, caplog):
    import logging

    from alignflow.components.config import load_config
    from alignflow.components.data.formats import Example
    from alignflow.components.data.io import write_rows
    from alignflow.components.modeling.checkpoints import save_checkpoint
    from alignflow.components.stages.results import Artifact, Checkpoint
    from alignflow.components.stages.sft import run_sft

    base = save_checkpoint(tiny_loaded, tmp_path / "base", {"model_id": "tiny-base"})
    story = " ".join(f"Basket {i} holds {i % 7 + 1} apples." for i in range(60))
    rows = [Example(prompt=f"What is {i} + 1?", completion=f"{i} + 1 = {i + 1}.\nThe answer is {i + 1}.",
                    origin=f"sft.jsonl:row {i + 1}") for i in range(3)]
    rows.append(Example(prompt=story, completion="The answer is 9.", origin="sft.jsonl:row 4"))
    data = Artifact.of(write_rows(tmp_path / "sft.jsonl", rows))
    config = load_config(None, ["lora.enabled=false", "sft.max_length=128", "sft.batch_size=2", "data.system_prompt="])
    with caplog.at_level(logging.WARNING, logger="alignflow.stages"):
        result = run_sft(config, Checkpoint(path=str(base), model_id="tiny-base"), data, tmp_path / "sft")
    assert (result.fit.rows, result.fit.truncated, result.fit.dropped) == (4, 0, 1)
    assert result.steps == 2
    warning, = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(data.path) in warning and "1 were dropped" in warning and "sft.max_length=128" in warning
