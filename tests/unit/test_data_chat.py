"""Chat formatting with the real SmolLM2-135M-Instruct tokenizer (ChatML, EOS = <|im_end|>)."""

from __future__ import annotations

import logging

import pytest

from alignflow.components.data.formats import (
    DataFormatError,
    Example,
    normalize,
    render_prompt,
    render_response,
    tokenize_pair,
)
from alignflow.components.data.sources import profile
from tests.support.messages import A, S, U

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def conv(prompt, **kw) -> Example:
    return Example(prompt=prompt, origin="c.jsonl:row 1", **kw)


def test_conversational_prompt_gets_the_generation_prompt(tokenizer):
    text = render_prompt(conv([U("Hi")]), tokenizer)
    assert text == DEFAULT_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_system_prompt_is_prepended_only_when_the_row_has_none(tokenizer):
    text = render_prompt(conv([U("Hi")]), tokenizer, system_prompt="Be brief.")
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    own = render_prompt(conv([S("Row system."), U("Hi")]), tokenizer, system_prompt="Be brief.")
    assert own.startswith("<|im_start|>system\nRow system.<|im_end|>\n") and "Be brief." not in own


def test_a_final_assistant_turn_is_continued(tokenizer):
    text = render_prompt(conv([U("Count"), A("1, 2,")]), tokenizer)
    assert text.endswith("<|im_start|>assistant\n1, 2,")


def test_standard_prompt_is_wrapped_as_a_user_turn_unless_raw(tokenizer):
    ex = normalize({"prompt": "2+3?", "completion": "5", "answer": 5}, "auto", "s.jsonl:row 4")
    template = "{prompt} (the answer is {answer})"
    assert render_prompt(ex, tokenizer, template, raw=True) == "2+3? (the answer is 5)"
    assert render_prompt(ex, tokenizer, template) == (
        DEFAULT_SYSTEM + "<|im_start|>user\n2+3? (the answer is 5)<|im_end|>\n<|im_start|>assistant\n")
    assert render_prompt(ex, tokenizer, system_prompt="S").startswith("<|im_start|>system\nS<|im_end|>\n")
    with pytest.raises(DataFormatError) as info:
        render_prompt(ex, tokenizer, "{prompt} {hint}")
    assert str(info.value) == (
        "s.jsonl: row 4: field 'hint': prompt_template names '{hint}' but the row has no such column")
    with pytest.raises(ValueError, match="system_prompt needs a chat-formatted prompt"):
        render_prompt(ex, tokenizer, raw=True, system_prompt="S")


def test_render_response(tokenizer):
    assert render_response("5", tokenizer) == "5<|im_end|>"
    assert render_response("5<|im_end|>", tokenizer) == "5<|im_end|>"
    assert render_response([A("It is 5.")], tokenizer) == "It is 5.<|im_end|>"
    tool = {"role": "tool", "content": "5"}
    with pytest.raises(ValueError, match="pass prompt="):
        render_response([A("call"), tool, A("It is 5.")], tokenizer)
    text = render_response([A("call"), tool, A("It is 5.")], tokenizer, prompt=[U("2+3?")])
    assert text.startswith("call<|im_end|>\n") and text.endswith("It is 5.<|im_end|>\n")


def test_prompt_plus_response_matches_the_full_chat_template(tokenizer):
    ex = normalize({"messages": [S("s"), U("q"), A("a")]}, "auto", "x:row 1", role="sft")
    full = tokenizer.apply_chat_template([S("s"), U("q"), A("a")], tokenize=False)
    assert ex.completion is not None
    assert full == render_prompt(ex, tokenizer) + render_response(ex.completion, tokenizer) + "\n"


def test_tokenize_pair_prefix_case(tokenizer, caplog):
    prompt = render_prompt(conv([U("Hi")]), tokenizer)
    response = render_response("Hello there", tokenizer)
    with caplog.at_level(logging.DEBUG, logger="alignflow.components.data.formats"):
        prompt_ids, response_ids = tokenize_pair(prompt, response, tokenizer)
    assert prompt_ids + response_ids == tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
    assert response_ids[-1] == tokenizer.eos_token_id
    assert not caplog.records


def test_tokenize_pair_merge_across_the_boundary_is_split_and_logged(tokenizer, caplog):
    joint = tokenizer("Hello world", add_special_tokens=False)["input_ids"]
    with caplog.at_level(logging.DEBUG, logger="alignflow.components.data.formats"):
        prompt_ids, response_ids = tokenize_pair("Hello wor", "ld", tokenizer)
    assert prompt_ids == tokenizer("Hello wor", add_special_tokens=False)["input_ids"]
    assert response_ids == tokenizer("ld", add_special_tokens=False)["input_ids"]
    assert prompt_ids + response_ids != joint
    assert any("merges across the prompt/response boundary" in r.getMessage() for r in caplog.records)


def test_profile(tokenizer):
    rows = [
        normalize({"prompt": "2+3?", "completion": "5"}, "auto", "a:row 1"),
        normalize({"prompt": [U("Sky?")], "chosen": [A("Blue.")], "rejected": [A("It is green, I think.")]},
                  "auto", "b:row 1"),
        normalize({"prompt": "Say hi."}, "auto", "c:row 1"),
    ]
    prompt_lens = [len(tokenizer(render_prompt(r, tokenizer), add_special_tokens=False)["input_ids"]) for r in rows]
    resp = [len(tokenize_pair(render_prompt(rows[0], tokenizer), render_response("5", tokenizer), tokenizer)[1]),
            len(tokenize_pair(render_prompt(rows[1], tokenizer), render_response([A("Blue.")], tokenizer),
                              tokenizer)[1]),
            len(tokenize_pair(render_prompt(rows[1], tokenizer),
                              render_response([A("It is green, I think.")], tokenizer), tokenizer)[1])]
    out = profile(rows, tokenizer, max_length=10_000)
    assert out["rows"] == 3 and out["responses"] == 3
    assert out["mean_prompt_tokens"] == pytest.approx(sum(prompt_lens) / 3)
    assert out["mean_response_tokens"] == pytest.approx(sum(resp) / 3)
    assert out["truncation_rate"] == 0.0
    assert out["formats"] == {"conversational/preference": 1, "standard/prompt_completion": 1,
                              "standard/prompt_only": 1}
    # the longest response decides: row 2 exceeds prompt + 'Blue.' + 1 only through its rejected
    limit = prompt_lens[1] + resp[1] + 1
    assert max(prompt_lens[0] + resp[0], prompt_lens[2]) <= limit < prompt_lens[1] + resp[2]
    tight = profile(rows, tokenizer, max_length=limit)
    assert tight["truncated_rows"] == 1 and tight["truncation_rate"] == pytest.approx(1 / 3)
    assert profile([], tokenizer, 10)["rows"] == 0
