"""Bring-your-own-data rows: detect a row's format, normalize it to one canonical ``Example``.

Formats follow TRL's "Dataset formats and types" documentation and mirror the semantics of
``trl/data_utils.py`` (TRL 1.16: ``is_conversational``, ``extract_prompt`` /
``maybe_extract_prompt``, ``maybe_apply_chat_template``, ``is_conversational_from_value`` /
``maybe_convert_to_chatml``); TRL itself is never imported.

A row is *standard* (its fields are strings) or *conversational* (its fields are lists of
``{"role", "content"}`` messages). The types, by the columns a row has:

=======================  ===========================================  ===========================
format name              columns                                      canonical Example
=======================  ===========================================  ===========================
messages                 ``messages``                                 prompt = every turn before
                                                                      the final assistant turn,
                                                                      completion = that turn
prompt_completion        ``prompt``, ``completion``                   prompt, completion
preference               ``prompt``, ``chosen``, ``rejected``         prompt, chosen, rejected
implicit_preference      ``chosen``, ``rejected``                     prompt = longest common
                                                                      prefix (TRL extract_prompt)
prompt_only              ``prompt``                                   prompt
unpaired_preference      ``prompt``, ``completion``, ``label``        prompt, completion,
                                                                      columns["label"] (bool)
sharegpt                 ``conversations`` of ``{from, value}``       as messages, roles
                                                                      human/gpt/system →
                                                                      user/assistant/system
alpaca                   ``instruction``, ``input``?, ``output``?     prompt = instruction
                                                                      (+ "\\n\\n" + input),
                                                                      completion = output
=======================  ===========================================  ===========================

TRL's standard language-modeling type (``text`` only) has no prompt to align on and is
rejected with a clear error. Every column a format does not consume is kept in
``Example.columns`` (this is how a verifier gets ``answer`` / ``ground_truth``).

Chat formatting (``render_prompt``, ``render_response``, ``tokenize_pair``) lives here too, so
that every stage renders a row the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = (
    "messages",
    "prompt_completion",
    "preference",
    "implicit_preference",
    "prompt_only",
    "sharegpt",
    "alpaca",
    "unpaired_preference",
)
ROLES: tuple[str, ...] = ("sft", "prompts", "preferences", "eval")
MESSAGE_ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
# ShareGPT's ``from`` values (TRL's maybe_convert_to_chatml keeps ``from`` as the role, so the
# ChatML names are accepted as they are).
SHAREGPT_ROLES: dict[str, str] = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
_RESPONSE_ROLES = ("assistant", "tool")


# --------------------------------------------------------------------------------------------
# canonical rows


# One chat turn, exactly the dict ``tokenizer.apply_chat_template`` takes: ``{"role": one of
# MESSAGE_ROLES, "content": a string}`` — checked by ``normalize`` when a row is read.
Message = dict[str, Any]
Text = str | list[Message]


def prompt_id(prompt: Text) -> str:
    """Stable id of a canonical prompt: the first 16 hex digits of the sha1 of its JSON.

    The JSON is ``json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``
    so the same prompt in two files (or two formats that normalize to the same prompt) gets the
    same id. A standard prompt ``"x"`` and a conversational ``[{"role": "user", "content": "x"}]``
    are different prompts and get different ids.
    """
    payload = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


class Example(BaseModel):
    """The canonical row every format normalizes to.

    ``prompt`` is a string (standard) or a list of messages (conversational); the responses
    (``completion``, ``chosen``, ``rejected``) have the same kind as the prompt. ``id`` is
    ``prompt_id(prompt)`` (filled in when omitted). ``origin`` is ``"<file>:row <n>"`` with a
    1-based row. ``columns`` holds every input column the format did not consume.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = ""  # filled with prompt_id(prompt) when not given
    prompt: Text
    completion: Text | None = None
    chosen: Text | None = None
    rejected: Text | None = None
    columns: dict[str, Any] = Field(default_factory=dict)
    origin: str

    @field_validator("prompt", "completion", "chosen", "rejected")
    @classmethod
    def _messages_are_chat_turns(cls, value: Text | None) -> Text | None:
        for message in value if isinstance(value, list) else []:
            if set(message) != {"role", "content"} or message["role"] not in MESSAGE_ROLES \
                    or not isinstance(message["content"], str):
                raise ValueError(f"a message is {{'role': one of {MESSAGE_ROLES}, 'content': a string}}, "
                                 f"got {message!r}")
        return value

    @model_validator(mode="after")
    def _fill_id(self) -> Example:
        if not self.id:
            self.id = prompt_id(self.prompt)
        return self

    @property
    def conversational(self) -> bool:
        """True when the prompt (and so every response) is a list of messages."""
        return isinstance(self.prompt, list)

    @property
    def kind(self) -> str:
        """TRL's format × type of the canonical row, e.g. ``"conversational/preference"``."""
        style = "conversational" if self.conversational else "standard"
        if self.chosen is not None:
            kind = "preference"
        elif self.completion is not None:
            kind = "prompt_completion"
        else:
            kind = "prompt_only"
        return f"{style}/{kind}"


# --------------------------------------------------------------------------------------------
# errors


class DataFormatError(ValueError):
    """A row (or a source) is malformed.

    The message names the file, the 1-based row and the field, e.g.
    ``train.jsonl: row 17: field 'chosen': empty response``; a column renamed by a ``columns:``
    mapping is named as the user spelled it: ``field 'question' (mapped to 'prompt')``.
    Source-level problems (a missing file) have no row: ``data.sources.sft[0].source: ...``.
    """

    def __init__(self, file: str, problem: str, *, row: int | None = None, field: str | None = None,
                 mapped_to: str | None = None) -> None:
        self.file, self.row, self.field, self.problem, self.mapped_to = file, row, field, problem, mapped_to
        parts = [file]
        if row is not None:
            parts.append(f"row {row}")
        if field is not None:
            parts.append(f"field '{field}'" + (f" (mapped to '{mapped_to}')" if mapped_to else ""))
        parts.append(problem)
        super().__init__(": ".join(parts))


_ORIGIN = re.compile(r"^(?P<file>.*):row (?P<row>\d+)$")


def split_origin(origin: str) -> tuple[str, int | None]:
    """``"train.jsonl:row 17"`` → ``("train.jsonl", 17)``; anything else → ``(origin, None)``."""
    match = _ORIGIN.match(origin)
    if match is None:
        return origin, None
    return match["file"], int(match["row"])


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class _Row:
    """A raw row after the ``columns:`` renaming, with what error messages need."""

    def __init__(self, raw: Mapping[str, Any], origin: str, columns: Mapping[str, str] | None) -> None:
        self.origin = origin
        self.file, self.row = split_origin(origin)
        self.reverse: dict[str, str] = {}
        data = dict(raw)
        for theirs, ours in (columns or {}).items():
            if theirs == ours:
                continue
            if theirs not in data:
                raise DataFormatError(self.file, "missing column", row=self.row, field=theirs, mapped_to=ours)
            if ours in data and ours not in (columns or {}):
                raise DataFormatError(self.file, f"cannot rename to '{ours}': the row already has a column "
                                      f"'{ours}'", row=self.row, field=theirs, mapped_to=ours)
        renamed = {ours: data[theirs] for theirs, ours in (columns or {}).items()}
        for key, value in data.items():
            if key not in (columns or {}):
                renamed[key] = value
        self.reverse = {ours: theirs for theirs, ours in (columns or {}).items() if theirs != ours}
        self.data = renamed

    def error(self, key: str, problem: str, suffix: str = "") -> DataFormatError:
        theirs = self.reverse.get(key)
        if theirs is not None:
            return DataFormatError(self.file, problem, row=self.row, field=theirs + suffix, mapped_to=key)
        return DataFormatError(self.file, problem, row=self.row, field=key + suffix)

    def require(self, key: str, why: str = "") -> Any:
        if key not in self.data:
            raise self.error(key, "missing column" + why)
        value = self.data[key]
        if value is None:
            raise self.error(key, "missing value" + why)
        return value


# --------------------------------------------------------------------------------------------
# detection


def is_conversational(value: Any) -> bool:
    """TRL's test on one field: a non-empty list whose first item is a dict with a ``role``."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def detect_format(column_names: Sequence[str], first_row: Mapping[str, Any] | None = None) -> str:
    """Detect a source's format from its (already renamed) column names, TRL's key sets first.

    Rules, in order (the first that matches wins):

    1. ``chosen`` + ``rejected`` + ``prompt`` → ``preference``, except when the prompt is a
       string and ``chosen`` is conversational (or the reverse) in ``first_row``: then the prompt
       column is a redundant copy and the prompt is implicit → ``implicit_preference`` (TRL's
       ``maybe_extract_prompt``, e.g. UltraFeedback-binarized).
    2. ``chosen`` + ``rejected`` → ``implicit_preference``.
    3. ``prompt`` + ``completion`` + ``label`` → ``unpaired_preference``.
    4. ``prompt`` + ``completion`` → ``prompt_completion``.
    5. ``messages`` → ``messages`` (before prompt-only: UltraChat has ``prompt`` + ``messages``).
    6. ``conversations`` → ``sharegpt``.
    7. ``instruction`` → ``alpaca``.
    8. ``prompt`` → ``prompt_only``.

    Raises ``DataFormatError`` (file ``"<columns>"``) for TRL's standard language-modeling type
    (``text`` without any of the above) and for column sets that match nothing.
    """
    cols = set(column_names)
    row = first_row or {}
    if {"chosen", "rejected", "prompt"} <= cols:
        if "chosen" in row and "prompt" in row and row["prompt"] is not None and row["chosen"] is not None:
            if is_conversational(row["chosen"]) != is_conversational(row["prompt"]):
                return "implicit_preference"
        return "preference"
    if {"chosen", "rejected"} <= cols:
        return "implicit_preference"
    if {"prompt", "completion", "label"} <= cols:
        return "unpaired_preference"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "sharegpt"
    if "instruction" in cols:
        return "alpaca"
    if "prompt" in cols:
        return "prompt_only"
    listed = ", ".join(sorted(cols)) or "none"
    if "text" in cols:
        raise DataFormatError("<columns>", f"columns [{listed}]: a language-modeling 'text' column has no prompt "
                              "to align on; provide prompt/completion (or messages) columns, or rename them with "
                              "columns:")
    raise DataFormatError("<columns>", f"columns [{listed}]: cannot detect the format; expected one of "
                          "messages, prompt+completion, prompt+chosen+rejected, chosen+rejected, prompt, "
                          "conversations (ShareGPT), instruction/input/output (Alpaca), prompt+completion+label; "
                          "rename columns with columns: or force one with format:")


# --------------------------------------------------------------------------------------------
# field validation


def _messages(row: _Row, key: str, value: Any, *, sharegpt: bool = False) -> list[Message]:
    """Validate a list of messages (ChatML, or ShareGPT ``from``/``value``) → canonical list."""
    if not isinstance(value, list):
        raise row.error(key, f"expected a list of messages, got {_kind(value)}")
    if not value:
        raise row.error(key, "empty list of messages")
    out: list[Message] = []
    role_key, content_key = "role", "content"
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise row.error(key, f"expected a message object, got {_kind(message)}", f"[{i}]")
        if sharegpt and (message.get("from") is not None or message.get("value") is not None):
            role_key, content_key = "from", "value"
        else:
            role_key, content_key = "role", "content"
        # Arrow-backed loaders fill keys that other rows' messages have with null: drop them.
        message = {k: v for k, v in message.items() if v is not None or k in (role_key, content_key)}
        extra = sorted(set(message) - {role_key, content_key})
        if extra:
            raise row.error(key, f"unsupported message key (a message holds only '{role_key}' and '{content_key}')",
                            f"[{i}].{extra[0]}")
        if role_key not in message or message[role_key] is None:
            raise row.error(key, "missing role", f"[{i}].{role_key}")
        role = message[role_key]
        if sharegpt and role_key == "from":
            if not isinstance(role, str) or role not in SHAREGPT_ROLES:
                raise row.error(key, f"unknown role {role!r} (expected human, gpt or system)", f"[{i}].from")
            role = SHAREGPT_ROLES[role]
        elif not isinstance(role, str) or role not in MESSAGE_ROLES:
            raise row.error(key, f"unknown role {role!r} (expected system, user, assistant or tool)", f"[{i}].role")
        content = message.get(content_key)
        if not isinstance(content, str):
            raise row.error(key, f"non-string content: got {_kind(content)}", f"[{i}].{content_key}")
        out.append({"role": role, "content": content})
    return out


def _prompt(row: _Row, key: str, value: Any) -> Text:
    """A standard prompt (non-blank string) or a conversational one (messages ending in a user,
    tool or assistant turn — TRL continues a final assistant turn)."""
    if isinstance(value, str):
        if not value.strip():
            raise row.error(key, "empty prompt")
        return value
    if isinstance(value, list):
        messages = _messages(row, key, value)
        _check_prompt_messages(row, key, messages)
        return messages
    raise row.error(key, f"expected a string or a list of messages, got {_kind(value)}")


def _check_prompt_messages(row: _Row, key: str, messages: list[Message]) -> None:
    if not messages:
        raise row.error(key, "empty prompt")
    last = messages[-1]["role"]
    if last == "system":
        raise row.error(key, "the prompt ends with a 'system' turn; it needs a user turn after it")


def _response(row: _Row, key: str, value: Any, conversational: bool, *, checked: bool = False) -> Text:
    """A response of the prompt's kind: a non-blank string, or messages that hold only
    assistant/tool turns, end with an assistant turn, and whose final content is non-blank."""
    if conversational:
        if isinstance(value, str):
            raise row.error(key, "the prompt is conversational but this response is a string")
        messages = value if checked else _messages(row, key, value)
        if not messages:
            raise row.error(key, "empty response")
        last = messages[-1]["role"]
        if last != "assistant":
            raise row.error(key, f"a conversational response must end with an assistant turn, got '{last}'")
        for i, message in enumerate(messages):
            if message["role"] not in _RESPONSE_ROLES:
                raise row.error(key, f"a response holds only assistant and tool turns, got '{message['role']}'",
                                f"[{i}].role")
        if not messages[-1]["content"].strip():
            raise row.error(key, "empty response")
        return messages
    if isinstance(value, list):
        raise row.error(key, "the prompt is a string but this response is a list of messages")
    if not isinstance(value, str):
        raise row.error(key, f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise row.error(key, "empty response")
    return value


def _common_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --------------------------------------------------------------------------------------------
# normalization


def normalize(raw_row: Mapping[str, Any], fmt: str, origin: str, *, role: str | None = None,
              columns: Mapping[str, str] | None = None) -> Example:
    """Normalize one raw row to an ``Example`` and validate it for ``role``.

    ``raw_row``: the row as loaded (column → value). ``fmt``: one of ``FORMATS`` or ``"auto"``
    (``detect_format`` on this row). ``origin``: ``"<file>:row <n>"`` (1-based), used in
    ``Example.origin`` and in every error. ``columns``: ``{their_name: our_name}`` renames applied
    first. ``role`` (one of ``ROLES``, or None for format checks only):

    - ``sft`` needs a completion (a ``messages`` row: its final assistant turn);
    - ``preferences`` needs chosen and rejected;
    - ``prompts`` / ``eval`` need a prompt (a ``messages`` row: the turns before its final
      assistant turn, which is kept as ``completion`` for reference).

    Unpaired preference rows (``prompt``, ``completion``, ``label``) are read (label kept as
    ``columns["label"]``, a bool) and may feed ``prompts``/``eval``; ``sft`` and ``preferences``
    reject them (a label-False completion is no demonstration, and there is no pair).

    Raises ``DataFormatError`` naming file, row and field for: a missing (mapped) column, an
    empty prompt or response, non-string content, an unknown role, messages that are not a list,
    a response whose kind differs from the prompt's, a conversational response that does not end
    with an assistant turn (or holds a user/system turn), an implicit preference with no common
    prefix, chosen identical to rejected (an error: the pair carries no preference signal and
    usually means a pairing bug), a role the row cannot feed, an unknown format or role.
    """
    row = _Row(raw_row, origin, columns)
    if role is not None and role not in ROLES:
        raise DataFormatError(row.file, f"unknown role {role!r} (expected one of {', '.join(ROLES)})", row=row.row)
    if fmt == "auto":
        try:
            fmt = detect_format(list(row.data), row.data)
        except DataFormatError as exc:
            raise DataFormatError(row.file, exc.problem, row=row.row) from None
    if fmt not in FORMATS:
        raise DataFormatError(row.file, f"unknown format {fmt!r} (expected auto or one of {', '.join(FORMATS)})",
                              row=row.row)

    consumed: set[str]
    completion: Text | None = None
    chosen: Text | None = None
    rejected: Text | None = None
    need = {"sft": " (sft needs a completion)", "preferences": " (preferences need chosen and rejected)"}

    if fmt in ("messages", "sharegpt"):
        key = "messages" if fmt == "messages" else "conversations"
        messages = _messages(row, key, row.require(key), sharegpt=fmt == "sharegpt")
        consumed = {key}
        if messages[-1]["role"] == "assistant":
            prompt_messages, final = messages[:-1], messages[-1:]
            if final[0]["content"].strip():
                completion = final
            elif role not in ("prompts", "eval"):  # a prompt source just drops an empty final turn
                raise row.error(key, "empty response", f"[{len(messages) - 1}].content")
        else:
            prompt_messages = messages
            if role == "sft":
                raise row.error(key, f"the last turn is '{messages[-1]['role']}', not an assistant turn"
                                     " (sft trains on the final assistant turn)")
        if not prompt_messages:
            raise row.error(key, "no prompt: the conversation starts with its only assistant turn")
        _check_prompt_messages(row, key, prompt_messages)
        prompt: Text = prompt_messages
    elif fmt == "implicit_preference":
        consumed = {"chosen", "rejected"} | ({"prompt"} if "prompt" in row.data else set())
        raw_chosen = row.require("chosen", need.get(role or "", ""))
        raw_rejected = row.require("rejected", need.get(role or "", ""))
        if isinstance(raw_chosen, list) or isinstance(raw_rejected, list):
            full_chosen = _messages(row, "chosen", raw_chosen)
            full_rejected = _messages(row, "rejected", raw_rejected)
            if full_chosen == full_rejected:
                raise row.error("rejected", "identical to 'chosen' (a pair needs two different responses)")
            # TRL extract_prompt: the longest common prefix of whole messages is the prompt
            k = _common_prefix_length(full_chosen, full_rejected)
            if k == 0:
                raise row.error("chosen", "implicit preference with no common prefix: chosen and rejected share "
                                          "no leading message to use as the prompt")
            prompt = full_chosen[:k]
            chosen = _response(row, "chosen", full_chosen[k:], True, checked=True)
            rejected = _response(row, "rejected", full_rejected[k:], True, checked=True)
            _check_prompt_messages(row, "chosen", prompt)
        else:
            for key, value in (("chosen", raw_chosen), ("rejected", raw_rejected)):
                if not isinstance(value, str):
                    raise row.error(key, f"expected a string or a list of messages, got {_kind(value)}")
            if raw_chosen == raw_rejected:
                raise row.error("rejected", "identical to 'chosen' (a pair needs two different responses)")
            # TRL extract_prompt on strings: the common character prefix, a space before the
            # divergence going to the responses
            k = _common_prefix_length(raw_chosen, raw_rejected)
            if k > 0 and raw_chosen[k - 1] == " ":
                k -= 1
            if k == 0 or not raw_chosen[:k].strip():
                raise row.error("chosen", "implicit preference with no common prefix: chosen and rejected share "
                                          "no leading text to use as the prompt")
            prompt = raw_chosen[:k]
            chosen = _response(row, "chosen", raw_chosen[k:], False)
            rejected = _response(row, "rejected", raw_rejected[k:], False)
    elif fmt == "alpaca":
        consumed = {"instruction", "input", "output"}
        instruction = row.require("instruction")
        if not isinstance(instruction, str):
            raise row.error("instruction", f"expected a string, got {_kind(instruction)}")
        if not instruction.strip():
            raise row.error("instruction", "empty prompt")
        extra_input = row.data.get("input")
        if extra_input is not None and not isinstance(extra_input, str):
            raise row.error("input", f"expected a string, got {_kind(extra_input)}")
        prompt = instruction + (f"\n\n{extra_input}" if extra_input else "")
        output = row.data.get("output")
        if output is None or (isinstance(output, str) and not output.strip()):
            if role == "sft":
                raise row.error("output", ("missing column" if "output" not in row.data else "empty response")
                                + need["sft"])
        else:
            completion = _response(row, "output", output, False)
    else:  # prompt_only, prompt_completion, preference, unpaired_preference
        consumed = {"prompt"}
        prompt = _prompt(row, "prompt", row.require("prompt"))
        conv = isinstance(prompt, list)
        if fmt in ("prompt_completion", "unpaired_preference"):
            consumed.add("completion")
            completion = _response(row, "completion", row.require("completion"), conv)
        if fmt == "unpaired_preference":
            label = row.require("label")
            if isinstance(label, int) and not isinstance(label, bool) and label in (0, 1):
                label = bool(label)
            if not isinstance(label, bool):
                raise row.error("label", f"expected a boolean, got {_kind(label)}")
            row.data["label"] = label  # kept in columns, as a bool
            if role in ("sft", "preferences"):
                raise row.error("label", f"unpaired preference rows (prompt, completion, label) cannot feed the "
                                         f"'{role}' role; pair them first, or use them as prompts")
        if fmt == "preference":
            consumed |= {"chosen", "rejected"}
            chosen = _response(row, "chosen", row.require("chosen"), conv)
            rejected = _response(row, "rejected", row.require("rejected"), conv)
            if chosen == rejected:
                raise row.error("rejected", "identical to 'chosen' (a pair needs two different responses)")

    if role == "sft" and completion is None:
        raise row.error("completion", f"missing column{need['sft']}; a {fmt} row has none")
    if role == "preferences" and (chosen is None or rejected is None):
        raise row.error("chosen", f"missing column{need['preferences']}; a {fmt} row has none")

    kept = {key: value for key, value in row.data.items() if key not in consumed}
    return Example(prompt=prompt, completion=completion, chosen=chosen, rejected=rejected, columns=kept,
                   origin=origin)


def normalize_rows(rows: Iterable[Mapping[str, Any]], fmt: str, file: str, *, role: str | None = None,
                   columns: Mapping[str, str] | None = None, first_row_number: int = 1) -> list[Example]:
    """``normalize`` every row of one file (``origin`` = ``"<file>:row <n>"``); stops at the first
    bad row with its ``DataFormatError``."""
    return [normalize(raw, fmt, f"{file}:row {n}", role=role, columns=columns)
            for n, raw in enumerate(rows, start=first_row_number)]


# --------------------------------------------------------------------------------------------
# chat formatting


def _apply_template(tokenizer: Any, messages: list[Message]) -> str:
    """TRL's prompt rule: a final user/tool turn gets the generation prompt, a final assistant
    turn is continued."""
    if messages[-1]["role"] == "assistant":
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                             continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def fill_template(prompt: str, columns: Mapping[str, Any], prompt_template: str, origin: str) -> str:
    """A standard prompt filled into ``prompt_template`` (``{prompt}`` and any column by name).

    Raises ``DataFormatError`` (the row's origin, field = the placeholder) when the template names
    a column the row lacks.
    """
    values = {**columns, "prompt": prompt}
    for _, name, _, _ in string.Formatter().parse(prompt_template):
        if name is not None and name != "":
            base = re.split(r"[.\[]", name, maxsplit=1)[0]
            if base not in values:
                file, row = split_origin(origin)
                raise DataFormatError(file, f"prompt_template names '{{{name}}}' but the row has no such column",
                                      row=row, field=base)
    return prompt_template.format_map(values)


def prompt_messages(prompt: Text, columns: Mapping[str, Any], prompt_template: str = "{prompt}",
                    system_prompt: str | None = None, origin: str = "<row>") -> list[Message]:
    """The chat messages a prompt becomes: a conversational prompt as it is; a standard one filled
    into ``prompt_template`` as one user turn; ``system_prompt`` (when given) first, unless the
    conversation has its own system turn."""
    if isinstance(prompt, list):
        messages = list(prompt)
    else:
        messages = [{"role": "user", "content": fill_template(prompt, columns, prompt_template, origin)}]
    if system_prompt is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def render_prompt(example: Example, tokenizer: Any, prompt_template: str = "{prompt}",
                  system_prompt: str | None = None, raw: bool = False) -> str:
    """The prompt text the model sees, ending where its response starts.

    Conversational rows: ``tokenizer.apply_chat_template(prompt, tokenize=False,
    add_generation_prompt=True)`` (a final assistant turn is continued instead, as TRL does),
    with ``system_prompt`` prepended as a system turn when given and the prompt has none;
    ``prompt_template`` does not apply to them.

    Standard rows: ``prompt_template`` filled with ``prompt`` and any other column by name
    (``"{prompt}\\nAnswer: {answer}"``). Choice: when the tokenizer has a chat template the filled
    text is then wrapped as one user turn (plus ``system_prompt``) with the generation prompt —
    an instruct model expects its chat format, and this is what the platform already does for
    its built-in task. ``raw=True`` (or a tokenizer without a chat template) returns the filled
    text as it is.

    Raises ``DataFormatError`` (the row's origin, field = the placeholder) when the template names
    a column the row lacks, and ``ValueError`` when ``system_prompt`` is given but the text is not
    chat-formatted (``raw=True`` or no chat template).
    """
    if not example.conversational and (raw or getattr(tokenizer, "chat_template", None) is None):
        if system_prompt is not None:
            raise ValueError("system_prompt needs a chat-formatted prompt (raw=False and a tokenizer with a chat "
                             "template)")
        return fill_template(cast(str, example.prompt), example.columns, prompt_template, example.origin)
    messages = prompt_messages(example.prompt, example.columns, prompt_template, system_prompt, example.origin)
    return _apply_template(tokenizer, messages)


def render_response(response: Text, tokenizer: Any, prompt: list[Message] | None = None) -> str:
    """The training target text that follows ``render_prompt``'s text.

    Standard (a string): the string, with ``tokenizer.eos_token`` appended when it does not end
    with it (so the model learns to stop). Conversational, a single assistant turn: its content,
    with EOS appended the same way (for ChatML templates such as SmolLM2's, EOS *is* the
    end-of-turn token ``<|im_end|>``). Conversational with several turns (assistant/tool/…
    tool use): rendered by the chat template after ``prompt`` (required then), as TRL's
    ``apply_chat_template`` does: the text of ``template(prompt + response)`` after its common
    prefix with ``template(prompt, add_generation_prompt=True)``.

    Raises ``ValueError`` for a multi-turn response without ``prompt``.
    """
    eos = getattr(tokenizer, "eos_token", None) or ""
    if isinstance(response, list):
        if len(response) == 1:
            text = response[0]["content"]
        else:
            if prompt is None:
                raise ValueError("a multi-turn conversational response is rendered after its prompt: pass prompt=")
            prompt_text = _apply_template(tokenizer, list(prompt))
            full = tokenizer.apply_chat_template(list(prompt) + list(response), tokenize=False)
            return full[_common_prefix_length(prompt_text, full):]
    else:
        text = response
    return text if (not eos or text.endswith(eos)) else text + eos


def tokenize_pair(prompt_text: str, response_text: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids of a rendered prompt and its response, with no special tokens added (the
    rendered text already holds them).

    The response ids are the tail of ``tokenize(prompt_text + response_text)`` after the prompt's
    ids whenever the prompt's ids are a prefix of it (so ``prompt_ids + response_ids`` is exactly
    how the joint text tokenizes). When the tokenizer merges across the boundary (``"Hello wor"``
    + ``"ld"``), the two texts are tokenized separately — the prompt's ids stay what generation
    conditions on — and this is logged with ``logging.debug``.
    """
    prompt_ids = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    joint = list(tokenizer(prompt_text + response_text, add_special_tokens=False)["input_ids"])
    if joint[: len(prompt_ids)] == prompt_ids:
        return prompt_ids, joint[len(prompt_ids):]
    logger.debug("tokenize_pair: the tokenizer merges across the prompt/response boundary (%r | %r); "
                 "tokenizing them separately", prompt_text[-20:], response_text[:20])
    return prompt_ids, list(tokenizer(response_text, add_special_tokens=False)["input_ids"])
