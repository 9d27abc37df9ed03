"""The static-cache sampler (components/modeling/sampler.py) against Hugging Face ``generate``, on CPU.

The tiny model's random init repeats one token forever under greedy decoding, which would make token-
for-token agreement trivial; ``chaotic`` rescales its weights (and unties the LM head) so that every
step's argmax depends on the whole context. EOS is a token that greedy decoding reaches after a few
steps in some rows, so rows stop at different times."""

from __future__ import annotations

import math
import os
from typing import Any, cast

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from alignflow.components.config import SamplerCompile, TinyModelConfig
from alignflow.components.modeling.checkpoints import tiny_model
from alignflow.components.modeling.generation import generate_completions
from alignflow.components.modeling.sampler import (
    SamplingSpec,
    StaticGenerate,
    choose_tokens,
    collect_stats,
    engine_for,
    release_engines,
    resolve_backend,
    sampling_spec,
    static_support,
)

PROMPTS = ["Q: what is 2 + 3?\nA:", "Hello",
           "A much longer prompt about seven apples and five pears, and then some more words so that this row is "
           "left-padded least of all", "x y z", "What is 12 times 4? Think step by step."]


def chaotic(tokenizer, seed: int = 1):
    model = tiny_model(tokenizer, TinyModelConfig(), seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]) * 2.0)
        model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g))
    model.config.tie_word_embeddings = False
    return model.eval()


@pytest.fixture(autouse=True)
def _fresh_engines():
    release_engines()
    yield
    release_engines()


def _encode(tokenizer, prompts):
    tokenizer.padding_side = "left"
    return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)


def _hf(model, enc, **kwargs):
    with torch.inference_mode():
        return model.generate(**enc, **kwargs)


def _ours(model, enc, compile: SamplerCompile = "none", **kwargs: Any):
    with torch.inference_mode():
        return StaticGenerate(model, compile).generate(**enc, **kwargs)


def _eos_reached_by_some_rows(model, enc, tokenizer, step: int = 6) -> int:
    """A token greedy decoding emits at ``step`` in the first row (and so ends that row there)."""
    free = _hf(model, enc, max_new_tokens=step + 1, do_sample=False, pad_token_id=tokenizer.pad_token_id,
               eos_token_id=None)
    return int(free[0, enc["input_ids"].shape[1] + step])


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_equals_generate_token_for_token(tokenizer, k):
    model = chaotic(tokenizer)
    enc = _encode(tokenizer, PROMPTS)
    eos = _eos_reached_by_some_rows(model, enc, tokenizer)
    args: dict[str, Any] = dict(max_new_tokens=23, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=eos)
    # generate refuses greedy with num_return_sequences > 1; ours gives k copies of the greedy row
    expected = _hf(model, enc, **args).repeat_interleave(k, 0)
    got = _ours(model, enc, num_return_sequences=k, **args)
    width = enc["input_ids"].shape[1]
    new = expected[:, width:]
    assert (new == eos).any(dim=1).sum() >= 1 and not (new == eos).any(dim=1).all()  # some rows stop, not all
    assert len(set(new[:, :5].flatten().tolist())) > 10  # not a degenerate repetition
    # generate stops when every row has; we run to the next check: beyond its width only padding
    assert torch.equal(got[:, :expected.shape[1]], expected)
    assert (got[:, expected.shape[1]:] == tokenizer.pad_token_id).all()


def test_max_new_tokens_cuts_and_every_row_runs_to_it_without_eos(tokenizer):
    model = chaotic(tokenizer)
    enc = _encode(tokenizer, PROMPTS[:3])
    args: dict[str, Any] = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=None)
    expected, got = _hf(model, enc, **args), _ours(model, enc, **{**args, "eos_token_id": -1})
    assert got.shape == expected.shape == (3, enc["input_ids"].shape[1] + 5)
    assert torch.equal(got, expected)


def test_finished_rows_retire_into_a_smaller_graph_with_the_same_outputs(tokenizer):
    model = chaotic(tokenizer)
    # 9 of 16 rows end with their first token: at the first check the 7 running rows move to the 8-row graph
    prompts = [PROMPTS[1]] * 9 + PROMPTS[:1] + PROMPTS[2:] * 2
    enc = _encode(tokenizer, prompts)
    first = _hf(model, enc, max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    eos = int(first[0, -1])
    args: dict[str, Any] = dict(max_new_tokens=40, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=eos)
    expected = _hf(model, enc, **args)
    with collect_stats() as stats:
        got = _ours(model, enc, **args)
    assert stats.retirements == 1 and stats.graphs_built == 2  # the 16-row and the 8-row step
    assert torch.equal(got[:, :expected.shape[1]], expected)
    width = enc["input_ids"].shape[1]
    assert stats.new_tokens == sum(min(40, int((row == eos).nonzero()[0]) + 1) if (row == eos).any() else 40
                                   for row in expected[:, width:])


def test_same_seed_same_samples_and_rows_do_not_depend_on_their_neighbours(tokenizer):
    model = chaotic(tokenizer)
    enc = _encode(tokenizer, PROMPTS)
    args: dict[str, Any] = dict(max_new_tokens=12, do_sample=True, temperature=0.9, top_p=0.95, num_return_sequences=2,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    runs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        runs.append(_ours(model, enc, **args))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    # the same call without retirement (and, for row 0, with other prompts beside it): same samples
    engine = engine_for(model)
    with torch.inference_mode():
        torch.manual_seed(5)
        spec = sampling_spec(model, True, 0.9, 0.95)
        kept = engine.generate(cast(torch.Tensor, enc["input_ids"]), cast(torch.Tensor, enc["attention_mask"]), k=2,
                               spec=spec, max_new_tokens=12,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, retire=False)
    assert torch.equal(kept.tokens, runs[0][:, enc["input_ids"].shape[1]:][:, :kept.tokens.shape[1]])
    other = _encode(tokenizer, [PROMPTS[0]] + ["Something else entirely, of another length"] * 4)
    torch.manual_seed(5)
    alone = _ours(model, other, **args)
    first_row = runs[0][0, enc["input_ids"].shape[1]:]
    assert torch.equal(alone[0, other["input_ids"].shape[1]:][:first_row.shape[0]], first_row)


def test_sampling_follows_generates_distribution(tokenizer):
    """Many rows with one set of logits: the inverse-transform draws match the probabilities generate's own
    temperature → top-k → top-p warpers leave (total variation below 0.02 over 40k draws)."""
    torch.manual_seed(0)
    vocab, rows = 64, 40_000
    logits = torch.randn(vocab) * 2
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 10, 1.0), (1.3, 0, 0.8), (1.0, 20, 0.6)]:
        spec = SamplingSpec(True, temperature, top_k, top_p)
        keys = torch.arange(rows, dtype=torch.long) * 7919 % (2**32)
        tokens, _ = choose_tokens(logits.expand(rows, -1), keys, torch.tensor(3), spec)
        freq = torch.bincount(tokens, minlength=vocab).float() / rows
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + (
            [TopKLogitsWarper(top_k)] if top_k else []) + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
        no_ids = cast(torch.LongTensor, torch.zeros(1, 1, dtype=torch.long))
        target = torch.softmax(warpers(no_ids, cast(torch.FloatTensor, logits.unsqueeze(0).clone()))[0], dim=-1)
        assert (freq[target == 0] == 0).all(), (temperature, top_k, top_p)
        assert 0.5 * (freq - target).abs().sum() < 0.02, (temperature, top_k, top_p)


def test_generation_configs_top_k_is_applied_as_generate_applies_it(tiny_loaded):
    model = tiny_loaded.model
    assert sampling_spec(model, True, 0.7, 0.9) == SamplingSpec(True, 0.7, 50, 0.9)  # generate's default top_k
    model.generation_config.top_k = 5
    assert sampling_spec(model, True, 1.0, None).top_k == 5
    assert sampling_spec(model, False) == SamplingSpec(False)


def test_backend_auto_is_generate_on_cpu_and_results_are_unchanged(tiny_loaded):
    model, tok = tiny_loaded.model, tiny_loaded.tokenizer
    assert resolve_backend(model, "auto") == "hf" and resolve_backend(model, "static") == "static"
    kwargs: dict[str, Any] = dict(k=2, do_sample=True, temperature=0.8, max_new_tokens=6, batch_size=4, seed=3)
    auto = generate_completions(model, tok, PROMPTS, **kwargs)
    assert auto == generate_completions(model, tok, PROMPTS, backend="hf", **kwargs)
    with collect_stats() as stats:
        generate_completions(model, tok, PROMPTS, **kwargs)
    assert stats.calls == 0  # auto on CPU never touched the static sampler


def test_static_backend_through_generate_completions_equals_hf_greedy(tokenizer):
    model = chaotic(tokenizer)
    kwargs: dict[str, Any] = dict(k=1, do_sample=False, max_new_tokens=10, batch_size=2)
    hf = generate_completions(model, tokenizer, PROMPTS, backend="hf", **kwargs)
    with collect_stats() as stats:
        static = generate_completions(model, tokenizer, PROMPTS, backend="static", **kwargs)
    assert static == hf and stats.calls == 3  # 5 prompts in batches of 2


def test_unsupported_models_fall_back_under_auto_and_refuse_static(tiny_loaded):
    from alignflow.components.config import LoraSettings
    from alignflow.components.modeling.checkpoints import attach_lora

    model = tiny_loaded.model
    model.generation_config.repetition_penalty = 1.3
    assert "repetition_penalty" in (static_support(model) or "")
    model.generation_config.repetition_penalty = 1.0
    peft = attach_lora(tiny_loaded, LoraSettings(), seed=0).model
    assert "PEFT" in (static_support(peft) or "")
    assert resolve_backend(peft, "auto") == "hf"
    with pytest.raises(ValueError, match="sampling.backend=static"):
        resolve_backend(peft, "static")


def test_next_rounds_model_reuses_the_engine_and_its_graphs(tokenizer):
    first, second = chaotic(tokenizer, seed=1), chaotic(tokenizer, seed=2)
    enc = _encode(tokenizer, PROMPTS)
    args: dict[str, Any] = dict(max_new_tokens=9, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=-1)
    _ours(first, enc, **args)
    with collect_stats() as stats:
        got = _ours(second, enc, **args)
    assert stats.graphs_built == 0 and stats.stall_s == 0.0
    assert torch.equal(got, _hf(second, enc, **{**args, "eos_token_id": None}))
    assert engine_for(second).sync_weights(second) is False  # unchanged since the call: not copied again


@pytest.mark.skipif(os.environ.get("ALIGNFLOW_COMPILE_TESTS") != "1",
                    reason="inductor on CPU compiles for ~1 min cold; ALIGNFLOW_COMPILE_TESTS=1 runs it")
def test_inductor_step_equals_eager(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNFLOW_COMPILE_CACHE", str(tmp_path))
    model = chaotic(tokenizer)
    enc = _encode(tokenizer, PROMPTS[:2])
    args: dict[str, Any] = dict(max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=-1)
    with collect_stats() as stats:
        got = _ours(model, enc, compile="inductor", **args)
    assert stats.graphs_built == 1 and stats.stall_s > 0
    assert torch.equal(got, _ours(model, enc, **args))


def test_ranks_take_contiguous_runs_of_the_batches_one_process_would_make():
    from alignflow.components.modeling.sharding import local_batches, sharded_generation
    from alignflow.components.platform.distributed import World

    one = local_batches(7, 2)  # 4 batches: prompts 0-1, 2-3, 4-5, 6
    assert one == [(0, 0), (1, 2), (2, 4), (3, 6)]
    shares = []
    for rank in range(3):
        with sharded_generation(World(rank=rank, size=3)):
            shares.append(local_batches(7, 2))
    assert shares == [[(0, 0), (1, 2)], [(2, 4)], [(3, 6)]]  # global batch numbers (seeds) and starts kept
    with sharded_generation(World()):  # one process: no sharing
        assert local_batches(7, 2) == one
