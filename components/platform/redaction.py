"""Keep credentials out of MLflow params, tags, descriptions and written reports.

Users do put secrets where we log: a tracking URI or S3 endpoint with ``user:password@`` in it,
an override like ``-s synthesis.judge=https://user:token@host/...``, a presigned URL with
``X-Amz-Signature=...``, an error message quoting a command line. A param is forever (MLflow
cannot delete one), so redaction happens before anything is sent, not after.

What is masked (each is a row of tests/test_redaction.py):

- URLs, found anywhere in a string (inside a command line, an error message, JSON, Markdown) and
  taken apart by position, not by one regex:
  * ``user:password@`` keeps the user and masks the password, also when the password holds
    characters a URL should have percent-encoded (``/``, ``?``, ``#``, ``@``, quotes):
    ``https://bob:ab/cd@host`` -> ``https://bob:***@host``. ``host:8080/x@y`` stays a URL with a
    port and a path (an RFC-valid reading wins over a broken one).
  * a userinfo with no colon is a token and is masked whole (``https://ghp_x@host`` ->
    ``https://***@host``), except the conventional non-secret user ``git`` (``ssh://git@...``).
  * query and fragment parameters whose name looks secret (``api_key``, ``token``,
    ``access_token``, ``sig``, ``signature``, ``X-Amz-Signature``, ``X-Amz-Credential``,
    ``X-Amz-Security-Token``, ``password``, ``key``, ``code``, ``client_secret``, ...) keep their
    name and lose their value; everything else in the URL is kept byte for byte.
- Well-known token shapes wherever they appear: GitHub (``ghp_``, ``github_pat_``...), Hugging Face
  (``hf_``), ``sk-...`` API keys, GitLab ``glpat-``, Slack ``xox?-``, AWS key ids
  (``AKIA``/``ASIA``), Google ``AIza``, JWTs, PEM private-key blocks.
- ``KEY=VALUE`` (env lines, CLI ``--api-key=X``), ``--password X``, ``"key": "value"`` /
  ``'key': 'value'`` (JSON, Python reprs), ``key: value`` (YAML lines, HTTP headers; an
  ``Authorization: Bearer X`` keeps its scheme) when the key looks secret.

Which keys are secret (``is_secret_key``): the words of the last dotted segment (split on
``_ - space`` and camelCase) contain a secret word (password, passwd, passphrase, secret(s),
token, apikey, credential(s), authorization) or a secret pair (api key, access key, private key,
secret key, account key, signing key, encryption key, master key); or an ancestor segment is
``secrets`` / ``credentials``. ``max_new_tokens`` (plural) and ``tokenizer`` are not.

Keys that NAME a secret object are not secrets (``is_secret_reference_key``): the value of
``launch.kubernetes.credentials_secret`` is the name of a Kubernetes Secret, not its content.
Shapes recognised:

- a secret word followed by a reference suffix: ``secret_name``, ``secretName``,
  ``secret_names``, ``*_secret_ref``, ``secretKeyRef``, ``password_secret_ref``, ``secret_arn``;
- ``existing`` + secret word (Helm's ``existingSecret``, ``existing_secret_name``);
- ``<kind>_secret(s)`` where kind says what the Secret object holds or is for: credentials, tls,
  registry, pull (``image_pull_secrets``), docker, env, k8s, kubernetes;
- any ``*secret``/``*secrets`` leaf under a ``kubernetes``/``k8s``/``kube`` segment;
- a file, path or environment-variable reference: ``password_file``, ``token_path``,
  ``hf_token_env`` (Docker's ``*_FILE`` convention).

Defence in depth: a reference key keeps its value only when the value looks like a reference --
a DNS-1123 object name (optionally ``namespace/name``) with no token-like part (20+ characters
mixing letters and digits, or 32+ hex), an ARN for ``*_arn``, a path with a ``/`` for file/path,
an UPPER_CASE name for env. Anything else under a reference key is masked whole.

Not covered: secrets in URL paths (Slack/Discord webhooks, ``/bot<token>/``), free-text secrets
with no key and no known shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "is_secret_key", "is_secret_reference_key", "redact_value", "redact_text",
           "redact_mapping", "redact_json"]

REDACTED = "***"

# ---------------------------------------------------------------------------------------------
# key names
# ---------------------------------------------------------------------------------------------

_SECRET_WORDS = {"password", "passwd", "passphrase", "secret", "secrets", "token", "apikey",
                 "credential", "credentials", "authorization", "cookie"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"),
                 ("account", "key"), ("signing", "key"), ("encryption", "key"), ("master", "key"),
                 ("client", "secret"), ("session", "key")}
_SECRET_ANCESTORS = {"secrets", "credentials"}
# query/fragment parameter names: the key words anywhere in the name, plus names that are
# credentials only on their own (``?key=`` is a Google API key, ``country_code`` is no secret)
_QUERY_WORDS = _SECRET_WORDS | {"signature", "jwt", "sessionid", "accesstoken", "apisecret"}
_QUERY_NAMES = {"sig", "key", "code", "auth", "pass", "pwd", "session", "sid", "hmac"}

_NAME_SUFFIXES = {"name", "names", "ref", "refs", "reference", "references"}
_ARN_SUFFIXES = {"arn"}
_PATH_SUFFIXES = {"file", "path"}
_ENV_SUFFIXES = {"env"}
_OBJECT_KINDS = {"credentials", "credential", "tls", "registry", "pull", "docker", "env", "k8s",
                 "kubernetes"}
_KUBE_SEGMENTS = {"kubernetes", "k8s", "kube"}


def _words(name: str) -> list[str]:
    """``secretAccessKey`` / ``secret_access-key`` / ``APIKey`` -> ["secret", "access", "key"]..."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", name) if w]


def _secret_span(words: list[str], vocabulary: set[str]) -> int | None:
    """Index of the last word that makes ``words`` secret (end of a pair), or None."""
    last = None
    for i, word in enumerate(words):
        if word in vocabulary or (i and (words[i - 1], word) in _SECRET_PAIRS):
            last = i
    return last


def _reference_kind(key: str) -> str | None:
    """"name" / "arn" / "path" / "env" when ``key`` names a secret object rather than holding one."""
    segments = key.split(".")
    words = _words(segments[-1])
    span = _secret_span(words, _SECRET_WORDS)
    if span is None:
        return None
    tail = words[span + 1:]
    if tail:
        if tail[-1] in _NAME_SUFFIXES and all(w in _NAME_SUFFIXES | {"key"} for w in tail):
            return "name"  # secret_name, secretKeyRef
        if tail == ["arn"]:
            return "arn"
        if len(tail) == 1 and tail[0] in _PATH_SUFFIXES:
            return "path"  # password_file, token_path
        if tail in (["env"], ["env", "var"]):
            return "env"
        return None
    if words[0] == "existing":
        return "name"
    if words[-1] in ("secret", "secrets"):
        if len(words) >= 2 and words[-2] in _OBJECT_KINDS:
            return "name"  # credentials_secret, tls_secret, image_pull_secrets
        if any(s.lower() in _KUBE_SEGMENTS for s in segments[:-1]):
            return "name"
    return None


def is_secret_reference_key(key: str) -> bool:
    """Whether ``key`` names a secret object (a Kubernetes Secret, a file, an env var) rather than
    holding a secret: ``credentials_secret``, ``secret_name``, ``secretKeyRef``, ``existingSecret``,
    ``password_file``. See the module docstring for the shapes.

    Args:
        key: a flat (dotted) config or param key, e.g. ``launch.kubernetes.credentials_secret``.

    Returns:
        True for the reference shapes; False otherwise (including keys that are not secret at all).

    Raises:
        Nothing for any ``str``.
    """
    return _reference_kind(key) is not None


def is_secret_key(key: str) -> bool:
    """Whether the value stored under ``key`` must be hidden whole.

    Args:
        key: a flat (dotted) key, an env var name, a header name or a JSON field.

    Returns:
        True when the last dotted segment's words are secret (see the module docstring) or an
        ancestor segment is ``secrets``/``credentials``, and the key is not a reference to a secret
        object (``is_secret_reference_key``): ``api_key``, ``s3.secret_access_key``, ``hf-token``,
        ``clientSecret``, ``AWS_SECRET_ACCESS_KEY`` are secret; ``judge.max_new_tokens``,
        ``tokenizer``, ``launch.kubernetes.credentials_secret``, ``secret_name`` are not.

    Raises:
        Nothing for any ``str``.
    """
    if _reference_kind(key) is not None:
        return False
    segments = key.split(".")
    if _secret_span(_words(segments[-1]), _SECRET_WORDS) is not None:
        return True
    return any(s.lower() in _SECRET_ANCESTORS for s in segments[:-1])


def _is_secret_param(name: str) -> bool:
    name = unquote_plus(name)
    return name.lower() in _QUERY_NAMES or _secret_span(_words(name), _QUERY_WORDS) is not None


_DNS_NAME = r"[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?"


def _looks_like_token(value: str) -> bool:
    for part in re.split(r"[-./_:]", value):
        if re.fullmatch(r"[0-9a-fA-F]{32,}", part):
            return True
        if len(part) >= 20 and re.search(r"[A-Za-z]", part) and re.search(r"\d", part):
            return True
    return False


def _reference_value_ok(kind: str, value: str) -> bool:
    if value == "":
        return True
    if kind == "name":
        return bool(re.fullmatch(rf"(?:{_DNS_NAME}/)?{_DNS_NAME}", value)) and len(value) <= 253 \
            and not _looks_like_token(value)
    if kind == "arn":
        return bool(re.fullmatch(r"arn:[A-Za-z0-9-]+:[A-Za-z0-9-]+:[A-Za-z0-9-]*:\d{0,12}:[\w+=,.@/:-]+", value))
    if kind == "path":
        return "/" in value and bool(re.fullmatch(r"[A-Za-z0-9_./~-]+", value)) and not _looks_like_token(value)
    if kind == "env":
        return bool(re.fullmatch(r"[A-Z_][A-Z0-9_]*", value))
    return False


def _must_mask(key: str, value: str) -> bool:
    """Whether ``value`` under ``key`` is masked whole."""
    kind = _reference_kind(key)
    if kind is not None:
        return not _reference_value_ok(kind, value)
    return is_secret_key(key)


# ---------------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://")
_HOST = re.compile(r"""
    (?:\[[0-9A-Fa-f:.]+\]                                  # [::1]
      |[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*)
    (?::\d{0,5})?
    (?![A-Za-z0-9@_~%-])
""", re.VERBOSE)
_USER = re.compile(r"[A-Za-z0-9._~!$&()*+,;=%-]*")
_URL_TAIL_END = re.compile(r"[\s\"'<>`]")
_NON_SECRET_USERS = {"git"}


def _userinfo_end(rest: str) -> int | None:
    """Index of the ``@`` that ends the userinfo at the start of ``rest`` (text after ``://``, up to
    the next whitespace), or None when the URL has no userinfo."""
    for at in (m.start() for m in re.finditer("@", rest)):
        if not _HOST.match(rest, at + 1):
            continue
        prefix = rest[:at]
        user, colon, password = prefix.partition(":")
        if not _USER.fullmatch(user):
            return None  # what precedes "@" is not a userinfo (a path, a JSON neighbour)
        broken = re.search(r"[/?#]", password if colon else user)
        if not colon:
            return None if broken else at
        if broken and re.fullmatch(r"\d*", password[:broken.start()]):
            return None  # host:8080/path@x -- a port and a path, not a password
        return at
    return None


def _redact_params(part: str) -> str:
    """``a=1&token=x;sig=y`` -> ``a=1&token=***;sig=***``, separators and order kept."""
    pieces = re.split(r"([&;])", part)
    for i in range(0, len(pieces), 2):
        name, eq, value = pieces[i].partition("=")
        if eq and value and _is_secret_param(name):
            pieces[i] = f"{name}={REDACTED}"
    return "".join(pieces)


def _redact_url_tail(tail: str) -> str:
    """Path, query and fragment: secret-named query and fragment parameters lose their values."""
    query_at = tail.find("?")
    fragment_at = tail.find("#")
    if fragment_at != -1 and (query_at == -1 or fragment_at < query_at):
        return tail[:fragment_at + 1] + _redact_params(tail[fragment_at + 1:])
    if query_at == -1:
        return tail
    if fragment_at == -1:
        return tail[:query_at + 1] + _redact_params(tail[query_at + 1:])
    return (tail[:query_at + 1] + _redact_params(tail[query_at + 1:fragment_at]) + "#"
            + _redact_params(tail[fragment_at + 1:]))


def _url_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, redacted URL) for every URL in ``text``."""
    spans: list[tuple[int, int, str]] = []
    position = 0
    for m in _SCHEME.finditer(text):
        if m.start() < position:
            continue
        space = re.compile(r"\s").search(text, m.end())
        rest_end = space.start() if space else len(text)
        rest = text[m.end():rest_end]
        at = _userinfo_end(rest)
        head = m[0]
        if at is not None:
            user, colon, password = rest[:at].partition(":")
            if colon:
                head += f"{user}:{REDACTED if password else ''}@"
            else:
                head += f"{user if user in _NON_SECRET_USERS or not user else REDACTED}@"
            rest = rest[at + 1:]
        host = _HOST.match(rest)
        host_end = host.end() if host else 0
        tail_end = _URL_TAIL_END.search(rest, host_end)
        tail_stop = tail_end.start() if tail_end else len(rest)
        while tail_stop > host_end and rest[tail_stop - 1] in ".,;:!?)]}":  # prose around the URL
            closing = rest[tail_stop - 1]
            opening = {")": "(", "]": "[", "}": "{"}.get(closing)
            if opening and rest[host_end:tail_stop].count(opening) >= rest[host_end:tail_stop].count(closing):
                break
            tail_stop -= 1
        redacted = head + rest[:host_end] + _redact_url_tail(rest[host_end:tail_stop])
        end = rest_end - (len(rest) - tail_stop)
        spans.append((m.start(), end, redacted))
        position = end
    return spans


# ---------------------------------------------------------------------------------------------
# known token shapes, key/value forms
# ---------------------------------------------------------------------------------------------

_TOKEN_SHAPES = re.compile(r"""
    -----BEGIN\ [A-Z0-9 ]*PRIVATE\ KEY-----.*?(?:-----END\ [A-Z0-9 ]*PRIVATE\ KEY-----|\Z)
  | (?<![A-Za-z0-9_])(?:
        gh[pousr]_[A-Za-z0-9]{30,}
      | github_pat_[A-Za-z0-9_]{22,}
      | hf_[A-Za-z0-9]{30,}
      | sk-[A-Za-z0-9_-]{20,}
      | glpat-[A-Za-z0-9_-]{20,}
      | xox[abposr]-[A-Za-z0-9-]{10,}
      | (?:AKIA|ASIA)[0-9A-Z]{16}
      | AIza[0-9A-Za-z_-]{35}
      | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}
    )(?![A-Za-z0-9_])
""", re.VERBOSE | re.DOTALL)

# "Bearer <token>" anywhere (an Authorization header quoted in a command line or a log line)
_BEARER = re.compile(r"(?P<scheme>(?<![A-Za-z0-9_])Bearer\s+)(?P<token>[A-Za-z0-9._~+/=-]{8,})")
# user:password@host without a scheme (a DSN written short: postgres:s3cret@db:5432/mlflow)
_BARE_USERINFO = re.compile(r"(?<![\w.%+:/@-])(?P<user>[A-Za-z][A-Za-z0-9._%+-]{0,63}):"
                            r"(?P<password>[^\s@/:'\"]{1,256})@"
                            r"(?=[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?(?![\w@]))")
_AUTH_SCHEME = re.compile(r"(?:Bearer|Basic|Token|Digest|Negotiate|Bot|AWS4-HMAC-SHA256)\s+", re.IGNORECASE)
# a key starts at a token boundary (so a long dotted token is scanned once, not from every
# position) and never gives characters back
_KEY = r"[A-Za-z_][A-Za-z0-9_.\-]*+"
# KEY=VALUE / --key=VALUE / key = "VALUE"
_ASSIGN = re.compile(rf"""(?<![A-Za-z0-9_.\-])(?P<dashes>-*)(?P<key>{_KEY})(?P<sep>[ \t]*=[ \t]*)
    (?:(?P<q>["'])(?P<qvalue>[^"'\n]*)(?P=q)
      |(?P<value>[^\s]*?)(?=["'`)\]}},;]*(?:\s|$)))""", re.VERBOSE)
# --password X (the value is the next word, when it is not another flag)
_FLAG = re.compile(r"(?P<prefix>(?<![\w-])--?(?P<key>[A-Za-z][\w-]*+)[ \t]+)"
                   r"(?P<value>[^\s-][^\s]*?)(?=[\"'`]?(?:\s|$))")
# "key": "value" and 'key': 'value' (JSON, Python reprs); backslash escapes inside the value
_QUOTED = re.compile(r"""(?P<kq>["'])(?P<key>[^"'\n]{1,200})(?P=kq)(?P<sep>\s*:\s*)"""
                     r"""(?P<vq>["'])(?P<value>(?:\\.|(?!(?P=vq))[^\\\n])*)(?P=vq)""")
# YAML / header lines: key: value to the end of the line
_LINE = re.compile(rf"""(?m)^(?P<prefix>[ \t]*(?:-[ \t]+)?(?P<key>{_KEY})[ \t]*:[ \t]+)"""
                   r"""(?P<value>[^\n]*?)(?P<end>[ \t]*)$""")
# key: value inline (a header inside a quoted curl argument): one word, after a scheme if any
_INLINE = re.compile(rf"""(?P<prefix>(?<![\w.-])(?P<key>{_KEY})[ \t]*:[ \t]+(?:{_AUTH_SCHEME.pattern})?)"""
                     r"""(?P<value>[^\s"'`]+)""", re.IGNORECASE)
# "key": 123456 (JSON numbers and bare words)
_QUOTED_BARE = re.compile(r"""(?P<prefix>(?P<kq>["'])(?P<key>[^"'\n]{1,200})(?P=kq)\s*:\s*)"""
                          r"""(?P<value>(?!null\b|true\b|false\b|None\b|True\b|False\b)[^\s,"'{}\[\]]+)""")


def _mask(key: str, value: str) -> str | None:
    """The masked value when ``value`` under ``key`` must go, else None."""
    if not value or value == REDACTED or not _must_mask(key, value):
        return None
    scheme = _AUTH_SCHEME.match(value)
    if scheme and value[scheme.end():]:
        return value[:scheme.end()] + REDACTED
    return REDACTED


def _redact_plain(text: str) -> str:
    """Everything but URLs: token shapes, then the key/value forms."""
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m["scheme"] + REDACTED, text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['user']}:{REDACTED}@", text)

    def quoted(m: re.Match[str]) -> str:
        masked = _mask(m["key"], m["value"])
        return m[0] if masked is None else f"{m['kq']}{m['key']}{m['kq']}{m['sep']}{m['vq']}{masked}{m['vq']}"

    def line(m: re.Match[str]) -> str:
        masked = _mask(m["key"], m["value"])
        return m[0] if masked is None else f"{m['prefix']}{masked}{m['end']}"

    def assign(m: re.Match[str]) -> str:
        if m["q"]:
            masked = _mask(m["key"], m["qvalue"])
            return m[0] if masked is None else f"{m['dashes']}{m['key']}{m['sep']}{m['q']}{masked}{m['q']}"
        masked = _mask(m["key"], m["value"])
        return m[0] if masked is None else f"{m['dashes']}{m['key']}{m['sep']}{masked}"

    def flag_or_inline(m: re.Match[str]) -> str:
        masked = _mask(m["key"], m["value"])
        return m[0] if masked is None else f"{m['prefix']}{masked}"

    text = _QUOTED.sub(quoted, text)
    text = _LINE.sub(line, text)
    text = _ASSIGN.sub(assign, text)
    text = _QUOTED_BARE.sub(flag_or_inline, text)
    text = _FLAG.sub(flag_or_inline, text)
    text = _INLINE.sub(flag_or_inline, text)  # "Authorization: Bearer X" keeps "Bearer "
    return text


def redact_text(text: str) -> str:
    """Mask every credential found in a whole document (Markdown report, JSON, YAML, log line).

    Args:
        text: any text.

    Returns:
        The text with URL passwords, lone URL tokens, secret query/fragment values, well-known
        token shapes and the values of secret-named ``KEY=VALUE`` / ``--flag X`` / ``"key": "v"`` /
        ``key: value`` forms replaced by ``REDACTED``; everything else unchanged, byte for byte.
        Idempotent: ``redact_text(redact_text(t)) == redact_text(t)``.

    Raises:
        Nothing for any ``str``.
    """
    # URLs are redacted by parsing, then stand in the text as placeholders while the key/value
    # forms run, so "?token=a&b=1" is not read as "token=a&b=1", and a URL that IS a secret value
    # ("webhook_secret": "https://hooks...") is masked whole with its key.
    marker = "\ue000"
    while marker in text:
        marker += "\ue000"
    urls: list[str] = []
    out: list[str] = []
    position = 0
    for start, end, redacted in _url_spans(text):
        out.append(text[position:start])
        out.append(f"{marker}{len(urls)}{marker}")
        urls.append(redacted)
        position = end
    out.append(text[position:])
    plain = _redact_plain("".join(out))
    return re.sub(rf"{marker}(\d+){marker}", lambda m: urls[int(m[1])], plain)


def redact_value(value: str) -> str:
    """Mask the credentials inside one logged value (a param, a tag, a model description).

    Args:
        value: the value as it would be logged.

    Returns:
        ``redact_text(value)``: a value is a small document (a URL, a command line, an error
        message, a multi-line description), so it gets the same treatment.

    Raises:
        Nothing for any ``str``.
    """
    return redact_text(value)


def redact_mapping(items: Mapping[str, Any]) -> dict[str, str]:
    """Redact a params/tags mapping before it is logged.

    Args:
        items: flat key -> value; values are logged as ``str(value)``.

    Returns:
        A new dict with the same keys, every value a ``str``: the value of a secret-named key
        (``is_secret_key``) is replaced whole by ``REDACTED`` unless empty; a reference key
        (``is_secret_reference_key``) keeps a value that looks like a reference (an object name,
        a path, an env var name) and is replaced whole otherwise; every other value goes through
        ``redact_value``.

    Raises:
        Whatever ``str(value)`` raises.
    """
    redacted: dict[str, str] = {}
    for key, value in items.items():
        text = str(value)
        if text and _must_mask(key, text):
            redacted[key] = REDACTED
        elif _reference_kind(key) is not None:
            redacted[key] = text
        else:
            redacted[key] = redact_value(text)
    return redacted


def redact_json(value: Any, key: str = "") -> Any:
    """Redact a parsed JSON document (or any tree of dicts, lists and scalars) by structure, so the
    result is still valid JSON of the same shape (``redact_text`` on JSON text would write
    ``"password": ***`` for a number).

    Args:
        value: the document, e.g. ``json.loads(text)``.
        key: the dotted path of ``value`` in its parent document ("" at the top); dict keys extend it
            (``{"s3": {"secret_access_key": ...}}`` is judged as ``s3.secret_access_key``, so the
            ancestor and Kubernetes-segment rules of ``is_secret_key`` apply).

    Returns:
        A new tree: a scalar under a secret-named key (``is_secret_key``), or under a reference key
        whose value does not look like a reference, becomes ``REDACTED`` (a string; ``None``, ``""``
        and booleans are kept); every other string goes through ``redact_value``; numbers, booleans
        and ``None`` elsewhere are kept. Dict keys and list order are kept.

    Raises:
        Nothing for JSON-like input (dict keys are read with ``str()``).
    """
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for name, item in value.items():
            out[name] = redact_json(item, f"{key}.{name}" if key else str(name))
        return out
    if isinstance(value, list | tuple):
        return [redact_json(item, key) for item in value]
    if value is None or isinstance(value, bool) or value == "":
        return value
    if key and _must_mask(key, str(value)):
        return REDACTED
    if isinstance(value, str):
        return value if key and _reference_kind(key) is not None else redact_value(value)
    return value
