"""Metric, param and tag keys that MLflow accepts, made deterministically from any string.

MLflow 3.17.2's rules (mlflow/utils/validation.py), the same for metric, param and tag names:

- ``validate_param_and_metric_name``: ``re.match(r"^[/\\w.\\- :]*$", name)`` on POSIX and
  ``r"^[/\\w.\\- ]*$"`` on Windows (no colon there). ``\\w`` is Unicode-aware: ``é`` and ``日本``
  pass, ``@``, ``%``, ``#``, ``+``, ``=``, ``,``, ``?``, ``*``, ``\\``, tabs, newlines, control
  characters, combining marks and emoji do not.
- ``path_not_unique``: ``posixpath.normpath(name)`` must equal the name and must not be ``.``,
  start with ``..`` or start with ``/``: no empty key, no leading or trailing ``/``, no ``//``,
  no ``.`` or ``..`` segment, no key starting with two dots (``..a`` too).
- ``MAX_ENTITY_KEY_LENGTH`` = 250 characters for every key. Values: params 6000
  (``MAX_PARAM_VAL_LENGTH``), tags 8000 (``MAX_TAG_VAL_LENGTH``); MLflow truncates longer ones
  with a warning when ``MLFLOW_TRUNCATE_LONG_VALUES`` is true (the default) and raises otherwise.
- No reserved prefix is enforced for run metrics, params or tags; ``mlflow.*`` tags are system tags
  (``mlflow.runName``, ``mlflow.parentRunId``...) that a user tag of the same name overwrites. This
  module leaves them alone (the tracker sets some itself); reserved names elsewhere in MLflow
  (model aliases ``latest``/``vN``) do not concern run keys.

Conventions chosen here:

- Valid means valid on every platform: ``:`` is treated as invalid (a POSIX client may log to a
  Windows server, or the reverse), and a trailing newline, which MLflow's ``re.match(...$)`` lets
  through, is invalid too (``fullmatch``).
- A valid key is returned unchanged. Otherwise each disallowed character becomes ``_``, except
  ``@`` -> ``_at_`` (``pass@1`` -> ``pass_at_1``) and ``%`` -> ``pct``; empty segments are
  dropped, ``.``/``..`` segments and a leading ``..`` become underscores; then ``-`` and the first
  8 hex digits of SHA-256 of the ORIGINAL key (UTF-8, surrogates passed through) are appended, the
  readable part cut so the whole fits in 250 characters. ``eval/pass@1`` ->
  ``eval/pass_at_1-<8 hex>``. A valid key longer than 250 characters is cut and hashed the same
  way. So two different keys never share a sanitized form unless a valid key happens to end in
  the other's exact suffix or 32-bit hashes collide; ``sanitize_mapping`` raises on either.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from typing import Literal, TypeVar

__all__ = ["Kind", "MAX_KEY_LENGTH", "MAX_VALUE_LENGTH", "is_valid_key", "sanitize_key",
           "sanitize_mapping", "clip_value"]

Kind = Literal["metric", "param", "tag"]
V = TypeVar("V")

MAX_KEY_LENGTH = 250                               # mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH
MAX_VALUE_LENGTH = {"param": 6000, "tag": 8000}    # MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
_KINDS = ("metric", "param", "tag")
_ALLOWED = re.compile(r"[/\w.\- ]")                # POSIX ∩ Windows character sets
_REPLACEMENTS = {"@": "_at_", "%": "pct"}
_HASH_CHARS = 8


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")


def _path_ok(key: str) -> bool:
    norm = posixpath.normpath(key)
    return norm == key and norm != "." and not norm.startswith("..") and not norm.startswith("/")


def is_valid_key(key: str, kind: Kind) -> bool:
    """Whether MLflow 3.17.2 accepts ``key`` as a ``kind`` name on every platform.

    Args:
        key: the candidate key.
        kind: "metric", "param" or "tag" (the rules are the same for the three).

    Returns:
        True when every character is allowed (``/``, Unicode word characters, ``.``, ``-``,
        space; no ``:``), the path rules hold and the length is at most 250.

    Raises:
        ValueError: unknown ``kind``.
    """
    _check_kind(kind)
    return (isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH
            and all(_ALLOWED.fullmatch(c) for c in key) and _path_ok(key))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _readable(key: str) -> str:
    text = "".join(c if _ALLOWED.fullmatch(c) else _REPLACEMENTS.get(c, "_") for c in key)
    segments = ["_" * len(s) if s in (".", "..") else s for s in text.split("/") if s]
    text = "/".join(segments)
    if text.startswith(".."):
        text = re.sub(r"^\.+", lambda m: "_" * len(m[0]), text)
    return text or "_"


def sanitize_key(key: str, kind: Kind) -> str:
    """A key MLflow accepts for ``kind``, the same for the same input on every run and platform.

    Args:
        key: any string (metric names like ``eval/pass@1``, flattened config paths...).
        kind: "metric", "param" or "tag".

    Returns:
        ``key`` itself when ``is_valid_key(key, kind)``; otherwise a readable rewrite plus
        ``-`` and 8 hex digits of the SHA-256 of the original key, at most 250 characters (see the
        module docstring for the character map and path rules).

    Raises:
        TypeError: ``key`` is not a ``str``.
        ValueError: unknown ``kind``.
    """
    if not isinstance(key, str):
        raise TypeError(f"a key must be a str, got {type(key).__name__}")
    if is_valid_key(key, kind):
        return key
    suffix = f"-{_digest(key)}"
    sanitized = _readable(key)[:MAX_KEY_LENGTH - len(suffix)] + suffix
    if not is_valid_key(sanitized, kind):  # cannot happen by construction; never log a bad key
        raise AssertionError(f"sanitize_key produced an invalid key {sanitized!r} from {key!r}")
    return sanitized


def sanitize_mapping(items: Mapping[str, V], kind: Kind) -> tuple[dict[str, V], dict[str, str]]:
    """Sanitize every key of a metrics/params/tags mapping.

    Args:
        items: key -> value; values are passed through untouched (see ``clip_value``).
        kind: "metric", "param" or "tag".

    Returns:
        (sanitized mapping in the input's order, {sanitized key: original key} for the keys that
        changed). The caller records the second mapping (e.g. as a JSON tag) so the original names
        are not lost.

    Raises:
        TypeError: a key is not a ``str``.
        ValueError: unknown ``kind``, or two different keys map to the same sanitized key.
    """
    out: dict[str, V] = {}
    owner: dict[str, str] = {}
    originals: dict[str, str] = {}
    for key, value in items.items():
        sanitized = sanitize_key(key, kind)
        if sanitized in owner:
            raise ValueError(f"{owner[sanitized]!r} and {key!r} both sanitize to {sanitized!r}")
        owner[sanitized] = key
        out[sanitized] = value
        if sanitized != key:
            originals[sanitized] = key
    return out, originals


def clip_value(value: str, kind: Literal["param", "tag"]) -> str:
    """A param or tag value cut to MLflow's limit, so logging neither raises
    (``MLFLOW_TRUNCATE_LONG_VALUES=false``) nor depends on that setting.

    Args:
        value: the value to log.
        kind: "param" (6000 characters) or "tag" (8000 characters).

    Returns:
        ``value`` when short enough, else its first 6000/8000 characters (plain cut, as MLflow's own
        truncation does).

    Raises:
        ValueError: ``kind`` is not "param" or "tag" (metric values are numbers).
    """
    if kind not in MAX_VALUE_LENGTH:
        raise ValueError(f"kind must be 'param' or 'tag', got {kind!r}")
    limit = MAX_VALUE_LENGTH[kind]
    return value if len(value) <= limit else value[:limit]
