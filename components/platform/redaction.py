"""Keep credentials out of MLflow params and tags.

Users do put secrets where we log: a tracking URI or S3 endpoint with ``user:password@`` in it,
an override like ``-s synthesis.judge=https://user:token@host/...``. A param is forever (MLflow
cannot delete one), so redaction happens before anything is sent, not after.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
# user:password@ inside any URL-looking value (scheme://user:password@host)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@")
# whole words of the key's last part: "api_key" and "s3.secret_access_key" are secrets, "max_new_tokens" is not
_SECRET_WORDS = {"password", "passwd", "secret", "token", "apikey", "credential", "credentials"}
_SECRET_PAIRS = {("api", "key"), ("access", "key")}


def is_secret_key(key: str) -> bool:
    words = [w.lower() for w in re.split(r"[_\-\s]+", key.rsplit(".", 1)[-1]) if w]
    return bool(_SECRET_WORDS & set(words)) or any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def redact_value(value: str) -> str:
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", value)


def redact_mapping(items: Mapping[str, Any]) -> dict[str, str]:
    """Values of secret-named keys are replaced whole; every other value loses URL passwords."""
    return {key: REDACTED if is_secret_key(key) and str(value) else redact_value(str(value))
            for key, value in items.items()}
