"""Format detection and normalization (TRL's dataset formats + ShareGPT + Alpaca), row by row."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from alignflow.components.data.formats import (
    DataFormatError,
    Example,
    detect_format,
    normalize,
    prompt_id,
    split_origin,
)
from tests.support.messages import A, S, U


def error_of(row, fmt="auto", origin="train.jsonl:row 17", **kwargs) -> str:
    with pytest.raises(DataFormatError) as info:
        normalize(row, fmt, origin, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("columns", "first_row", "expected"),
    [
        (["prompt", "chosen", "rejected"], {"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
        (["prompt", "chosen", "rejected"], {"prompt": [U("q")], "chosen": [A("a")], "rejected": [A("b")]},
         "preference"),
        # UltraFeedback-binarized: a string prompt next to full conversations → implicit (TRL's
        # maybe_extract_prompt)
        (["prompt", "chosen", "rejected", "messages"], {"prompt": "q", "chosen": [U("q"), A("a")],
                                                        "rejected": [U("q"), A("b")], "messages": []},
         "implicit_preference"),
        (["chosen", "rejected"], None, "implicit_preference"),
        (["prompt", "completion", "label"], None, "unpaired_preference"),
        (["prompt", "completion"], None, "prompt_completion"),
        (["prompt", "completion", "answer"], None, "prompt_completion"),
        # UltraChat has both a prompt string and the conversation: messages wins
        (["prompt", "prompt_id", "messages"], None, "messages"),
        (["messages"], None, "messages"),
        (["conversations", "id"], None, "sharegpt"),
        (["instruction", "input", "output"], None, "alpaca"),
        (["instruction", "output"], None, "alpaca"),
        (["prompt", "answer"], None, "prompt_only"),
    ],
)
def test_detect_format(columns, first_row, expected):
    assert detect_format(columns, first_row) == expected


def test_detect_rejects_language_modeling_text_and_unknown_columns():
    with pytest.raises(DataFormatError, match=r"language-modeling 'text' column has no prompt"):
        detect_format(["text"], {"text": "hello"})
    with pytest.raises(DataFormatError, match=r"columns \[a, b\]: cannot detect the format"):
        detect_format(["b", "a"], {})


def test_auto_detection_error_names_the_row():
    assert error_of({"question": "q"}).startswith("train.jsonl: row 17: columns [question]: cannot detect the format")


# ------------------------------------------------------------------------------ normalization


def test_messages_with_system_turn_last_assistant_is_the_completion():
    row = {"messages": [S("Be brief."), U("2+2?"), A("4"), U("and 3+3?"), A("6")], "answer": 6}
    ex = normalize(row, "auto", "chat.jsonl:row 1", role="sft")
    assert ex.prompt == [S("Be brief."), U("2+2?"), A("4"), U("and 3+3?")]
    assert ex.completion == [A("6")]
    assert ex.chosen is None and ex.rejected is None
    assert ex.columns == {"answer": 6}
    assert ex.conversational is True
    assert ex.origin == "chat.jsonl:row 1"
    assert ex.kind == "conversational/prompt_completion"


def test_messages_as_prompt_source_drops_the_final_assistant_turn():
    ex = normalize({"messages": [U("hi"), A("hello")]}, "messages", "p.jsonl:row 2", role="prompts")
    assert ex.prompt == [U("hi")]
    # a prompt source with a blank final assistant turn (a placeholder) just drops it
    ex = normalize({"messages": [U("hi"), A("")]}, "messages", "p.jsonl:row 2", role="eval")
    assert ex.prompt == [U("hi")] and ex.completion is None
    # a prompt source may end with the user turn
    ex = normalize({"messages": [S("sys"), U("hi")]}, "messages", "p.jsonl:row 2", role="prompts")
    assert ex.prompt == [S("sys"), U("hi")] and ex.completion is None


def test_prompt_completion_standard_and_conversational():
    ex = normalize({"prompt": "The sky is", "completion": " blue.", "id": "x1"}, "auto", "f.csv:row 1", role="sft")
    assert (ex.prompt, ex.completion, ex.columns) == ("The sky is", " blue.", {"id": "x1"})
    assert ex.conversational is False and ex.kind == "standard/prompt_completion"
    ex = normalize({"prompt": [S("s"), U("q")], "completion": [A("a")]}, "auto", "f.jsonl:row 1", role="sft")
    assert ex.prompt == [S("s"), U("q")] and ex.completion == [A("a")]


def test_explicit_preference_standard_and_conversational():
    ex = normalize({"prompt": "Q", "chosen": "good", "rejected": "bad", "score": 0.5}, "auto", "p.jsonl:row 1",
                   role="preferences")
    assert (ex.prompt, ex.chosen, ex.rejected, ex.columns) == ("Q", "good", "bad", {"score": 0.5})
    ex = normalize({"prompt": [U("Q")], "chosen": [A("good")], "rejected": [A("bad")]}, "auto", "p.jsonl:row 1",
                   role="preferences")
    assert ex.kind == "conversational/preference" and ex.chosen == [A("good")]


def test_implicit_preference_conversational_system_and_multi_turn_shared_prefix():
    shared = [S("You are terse."), U("Capital of France?"), A("Paris."), U("And of Italy?")]
    row = {"chosen": shared + [A("Rome.")], "rejected": shared + [A("Milan.")], "margin": 2}
    ex = normalize(row, "auto", "pairs.jsonl:row 4", role="preferences")
    assert ex.prompt == shared
    assert ex.chosen == [A("Rome.")]
    assert ex.rejected == [A("Milan.")]
    assert ex.columns == {"margin": 2}
    assert ex.id == prompt_id(shared)


def test_implicit_preference_diverging_at_a_multi_message_response():
    tool = {"role": "tool", "content": "42"}
    row = {"chosen": [U("q"), A("call"), tool, A("It is 42.")], "rejected": [U("q"), A("I don't know.")]}
    ex = normalize(row, "auto", "pairs.jsonl:row 1", role="preferences")
    assert ex.prompt == [U("q")]
    assert ex.chosen == [A("call"), tool, A("It is 42.")]


def test_implicit_preference_with_redundant_prompt_column_like_ultrafeedback():
    row = {"prompt": "Capital?", "chosen": [U("Capital?"), A("Paris")], "rejected": [U("Capital?"), A("Lyon")],
           "score_chosen": 8.0}
    ex = normalize(row, "auto", "uf.parquet:row 1", role="preferences")
    assert ex.prompt == [U("Capital?")] and ex.chosen == [A("Paris")]
    assert ex.columns == {"score_chosen": 8.0}  # the redundant prompt column is consumed


def test_implicit_preference_standard_strings_follow_trl_extract_prompt():
    # TRL: the common character prefix; a space just before the divergence goes to the responses
    ex = normalize({"chosen": "The sky is blue.", "rejected": "The sky is green."}, "auto", "f.jsonl:row 1")
    assert (ex.prompt, ex.chosen, ex.rejected) == ("The sky is", " blue.", " green.")


def test_sharegpt_roles_are_mapped():
    row = {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
                             {"from": "gpt", "value": "Hello!"}], "source": "sg"}
    ex = normalize(row, "auto", "sg.json:row 3", role="sft")
    assert ex.prompt == [S("Be kind."), U("Hi")]
    assert ex.completion == [A("Hello!")]
    assert ex.columns == {"source": "sg"}


def test_alpaca_with_and_without_input():
    ex = normalize({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}, "auto", "a.json:row 1",
                   role="sft")
    assert ex.prompt == "Add the numbers.\n\n2 and 3" and ex.completion == "5"
    ex = normalize({"instruction": "Say hi.", "input": "", "output": "hi"}, "auto", "a.json:row 2", role="sft")
    assert ex.prompt == "Say hi." and ex.completion == "hi"
    ex = normalize({"instruction": "Say hi.", "output": "hi", "category": "greet"}, "auto", "a.json:row 3")
    assert ex.prompt == "Say hi." and ex.columns == {"category": "greet"}
    # an instruction-only file is a fine prompt source
    ex = normalize({"instruction": "Say hi.", "input": None, "output": ""}, "alpaca", "a.json:row 4", role="prompts")
    assert ex.prompt == "Say hi." and ex.completion is None


def test_unpaired_preference_is_read_and_rejected_for_paired_roles():
    ex = normalize({"prompt": "Q", "completion": "A", "label": 1}, "auto", "kto.jsonl:row 2", role="prompts")
    assert ex.prompt == "Q" and ex.completion == "A" and ex.columns == {"label": True}
    assert error_of({"prompt": "Q", "completion": "A", "label": False}, role="preferences") == (
        "train.jsonl: row 17: field 'label': unpaired preference rows (prompt, completion, label) cannot feed the "
        "'preferences' role; pair them first, or use them as prompts")
    assert "cannot feed the 'sft' role" in error_of({"prompt": "Q", "completion": "A", "label": True}, role="sft")
    assert error_of({"prompt": "Q", "completion": "A", "label": "yes"}) == (
        "train.jsonl: row 17: field 'label': expected a boolean, got a string")


def test_column_mapping_renames_before_detection_and_keeps_the_rest():
    row = {"question": "2+3?", "solution": "5", "ground_truth": 5, "difficulty": 1}
    ex = normalize(row, "auto", "m.jsonl:row 1", role="sft",
                   columns={"question": "prompt", "solution": "completion", "ground_truth": "answer"})
    assert ex.prompt == "2+3?" and ex.completion == "5"
    assert ex.columns == {"answer": 5, "difficulty": 1}


def test_id_is_a_stable_hash_of_the_canonical_prompt():
    expected = hashlib.sha1(json.dumps("Say hi.", separators=(",", ":")).encode()).hexdigest()[:16]
    a = normalize({"instruction": "Say hi.", "output": "hi"}, "auto", "a.json:row 1")
    b = normalize({"prompt": "Say hi.", "completion": "hello"}, "auto", "b.jsonl:row 9")
    assert a.id == b.id == expected == prompt_id("Say hi.")
    conv = normalize({"messages": [U("Say hi."), A("hi")]}, "auto", "c.jsonl:row 1")
    same = normalize({"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "yo"}]},
                     "auto", "d.jsonl:row 1")
    assert conv.id == same.id != a.id  # a conversational prompt is a different prompt


def test_example_model_forbids_extra_fields_and_fills_the_id():
    ex = Example(prompt="p", origin="x:row 1")
    assert ex.id == prompt_id("p")
    with pytest.raises(ValidationError):
        Example(prompt="p", origin="x:row 1", score=1)  # pyright: ignore[reportCallIssue] — the unknown field
    with pytest.raises(ValidationError):
        Example(prompt=[{"role": "bot", "content": "x"}], origin="x:row 1")


def test_split_origin():
    assert split_origin("data/train.jsonl:row 17") == ("data/train.jsonl", 17)
    assert split_origin("builtin:arithmetic:row 3") == ("builtin:arithmetic", 3)
    assert split_origin("somewhere") == ("somewhere", None)


# ------------------------------------------------------------------------------ role validation


def test_roles_need_their_fields():
    assert error_of({"prompt": "Q"}, role="sft") == (
        "train.jsonl: row 17: field 'completion': missing column (sft needs a completion); a prompt_only row has none")
    assert error_of({"prompt": "Q", "completion": "A"}, role="preferences") == (
        "train.jsonl: row 17: field 'chosen': missing column (preferences need chosen and rejected); "
        "a prompt_completion row has none")
    assert error_of({"messages": [S("s"), U("q")]}, role="sft") == (
        "train.jsonl: row 17: field 'messages': the last turn is 'user', not an assistant turn "
        "(sft trains on the final assistant turn)")
    assert error_of({"instruction": "Do it.", "output": ""}, role="sft") == (
        "train.jsonl: row 17: field 'output': empty response (sft needs a completion)")
    assert error_of({"prompt": "Q"}, role="judge") == (
        "train.jsonl: row 17: unknown role 'judge' (expected one of sft, prompts, preferences, eval)")
    assert error_of({"prompt": "Q"}, fmt="chatml") == (
        "train.jsonl: row 17: unknown format 'chatml' (expected auto or one of messages, prompt_completion, "
        "preference, implicit_preference, prompt_only, sharegpt, alpaca, unpaired_preference)")
    # a preference row still feeds prompt sources
    ex = normalize({"prompt": "Q", "chosen": "a", "rejected": "b"}, "auto", "x:row 1", role="eval")
    assert ex.prompt == "Q"


# ----------------------------------------------------------------------------------- bad rows


def test_missing_column_and_missing_mapped_column():
    assert error_of({"prompt": "Q"}, fmt="prompt_completion") == (
        "train.jsonl: row 17: field 'completion': missing column")
    assert error_of({"q": "Q", "completion": "A"}, columns={"question": "prompt"}) == (
        "train.jsonl: row 17: field 'question' (mapped to 'prompt'): missing column")
    # present column, null value (Arrow-backed readers fill absent keys with null)
    assert error_of({"question": None, "completion": "A"}, columns={"question": "prompt"}) == (
        "train.jsonl: row 17: field 'question' (mapped to 'prompt'): missing value")
    assert error_of({"question": "Q", "prompt": "P"}, columns={"question": "prompt"}) == (
        "train.jsonl: row 17: field 'question' (mapped to 'prompt'): cannot rename to 'prompt': the row already has "
        "a column 'prompt'")


def test_mapped_fields_are_named_as_the_user_spelled_them():
    assert error_of({"q": "Q", "good": "same", "bad": "  "}, columns={"q": "prompt", "good": "chosen",
                                                                     "bad": "rejected"}) == (
        "train.jsonl: row 17: field 'bad' (mapped to 'rejected'): empty response")


def test_empty_response():
    assert error_of({"prompt": "Q", "chosen": "", "rejected": "no"}) == (
        "train.jsonl: row 17: field 'chosen': empty response")
    assert error_of({"prompt": [U("Q")], "chosen": [A("  ")], "rejected": [A("no")]}) == (
        "train.jsonl: row 17: field 'chosen': empty response")
    assert error_of({"messages": [U("Q"), A("")]}, role="sft") == (
        "train.jsonl: row 17: field 'messages[1].content': empty response")
    assert error_of({"prompt": "   ", "completion": "A"}) == "train.jsonl: row 17: field 'prompt': empty prompt"


def test_non_string_content():
    assert error_of({"messages": [U("Q"), {"role": "assistant", "content": 42}]}) == (
        "train.jsonl: row 17: field 'messages[1].content': non-string content: got a number (42)")
    assert error_of({"prompt": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}) == (
        "train.jsonl: row 17: field 'prompt[0].content': non-string content: got a list")
    assert error_of({"prompt": "Q", "completion": 5}) == (
        "train.jsonl: row 17: field 'completion': expected a string, got a number (5)")


def test_unknown_role():
    assert error_of({"messages": [U("Q"), {"role": "bot", "content": "A"}]}) == (
        "train.jsonl: row 17: field 'messages[1].role': unknown role 'bot' (expected system, user, assistant or tool)")
    assert error_of({"conversations": [{"from": "human", "value": "Q"}, {"from": "chatbot", "value": "A"}]}) == (
        "train.jsonl: row 17: field 'conversations[1].from': unknown role 'chatbot' (expected human, gpt or system)")


def test_messages_not_a_list():
    assert error_of({"messages": "Q: hi A: hello"}) == (
        "train.jsonl: row 17: field 'messages': expected a list of messages, got a string")
    assert error_of({"messages": ["hi", "hello"]}) == (
        "train.jsonl: row 17: field 'messages[0]': expected a message object, got a string")
    assert error_of({"messages": []}) == "train.jsonl: row 17: field 'messages': empty list of messages"


def test_message_with_unsupported_key_and_null_padding():
    assert error_of({"messages": [U("Q"), {"role": "assistant", "content": "A", "tool_calls": [1]}]}) == (
        "train.jsonl: row 17: field 'messages[1].tool_calls': unsupported message key (a message holds only 'role' "
        "and 'content')")
    # keys filled with null by an Arrow reader are dropped
    ex = normalize({"messages": [{"role": "user", "content": "Q", "name": None}, A("A")]}, "auto", "x:row 1")
    assert ex.prompt == [U("Q")]


def test_implicit_preference_with_no_common_prefix():
    assert error_of({"chosen": [U("Q1"), A("a")], "rejected": [U("Q2"), A("b")]}) == (
        "train.jsonl: row 17: field 'chosen': implicit preference with no common prefix: chosen and rejected share "
        "no leading message to use as the prompt")
    assert error_of({"chosen": "Yes.", "rejected": "No."}) == (
        "train.jsonl: row 17: field 'chosen': implicit preference with no common prefix: chosen and rejected share "
        "no leading text to use as the prompt")


def test_chosen_identical_to_rejected_is_an_error():
    message = "train.jsonl: row 17: field 'rejected': identical to 'chosen' (a pair needs two different responses)"
    assert error_of({"prompt": "Q", "chosen": "A", "rejected": "A"}) == message
    assert error_of({"chosen": [U("Q"), A("A")], "rejected": [U("Q"), A("A")]}) == message
    assert error_of({"chosen": "Q A", "rejected": "Q A"}) == message


def test_conversational_chosen_must_end_with_an_assistant_turn():
    assert error_of({"prompt": [U("Q")], "chosen": [A("a"), U("more?")], "rejected": [A("b")]}) == (
        "train.jsonl: row 17: field 'chosen': a conversational response must end with an assistant turn, got 'user'")
    assert error_of({"chosen": [U("Q"), A("a"), U("thanks")], "rejected": [U("Q"), A("b")]}) == (
        "train.jsonl: row 17: field 'chosen': a conversational response must end with an assistant turn, got 'user'")
    # a user turn inside a response
    assert error_of({"prompt": [U("Q")], "completion": [U("x"), A("a")]}) == (
        "train.jsonl: row 17: field 'completion[0].role': a response holds only assistant and tool turns, got 'user'")


def test_response_kind_must_match_the_prompt_kind():
    assert error_of({"prompt": [U("Q")], "completion": "A"}) == (
        "train.jsonl: row 17: field 'completion': the prompt is conversational but this response is a string")
    assert error_of({"prompt": "Q", "completion": [A("A")]}) == (
        "train.jsonl: row 17: field 'completion': the prompt is a string but this response is a list of messages")


def test_prompt_ending_with_a_system_turn():
    assert error_of({"prompt": [S("sys")]}) == (
        "train.jsonl: row 17: field 'prompt': the prompt ends with a 'system' turn; it needs a user turn after it")
    assert error_of({"messages": [S("sys"), A("hi")]}) == (
        "train.jsonl: row 17: field 'messages': the prompt ends with a 'system' turn; it needs a user turn after it")
    assert error_of({"messages": [A("hi")]}) == (
        "train.jsonl: row 17: field 'messages': no prompt: the conversation starts with its only assistant turn")
