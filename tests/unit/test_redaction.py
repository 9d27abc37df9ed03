"""Secrets never reach MLflow params, tags, descriptions or written reports (a logged param cannot be
deleted): the redaction table, then the tracker that applies it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alignflow.components.platform import redaction
from alignflow.components.platform.tracking import Tracker

R = redaction.REDACTED
REPO = Path(__file__).resolve().parents[2]

# (value as logged, what must be stored); every row is also checked for idempotence
VALUES = [
    # userinfo
    ("http://bob:s3cr3t@mlflow:5000/x", f"http://bob:{R}@mlflow:5000/x"),
    ("postgresql+psycopg2://u:p%40ss@db/mlflow", f"postgresql+psycopg2://u:{R}@db/mlflow"),
    ("https://bob:ab/cd@host", f"https://bob:{R}@host"),                      # '/' in the password
    ("https://bob:ab/cd@host/repo?x=1", f"https://bob:{R}@host/repo?x=1"),
    ("https://bob:p@ss@host/x", f"https://bob:{R}@host/x"),                   # '@' in the password
    ("https://bob:a/b@c@host/x", f"https://bob:{R}@host/x"),
    ("https://bob:pa?ss#w@host/x", f"https://bob:{R}@host/x"),                # '?' and '#'
    ("redis://:hunter2@cache:6379/0", f"redis://:{R}@cache:6379/0"),
    ("https://ghp_xxx@host/repo", f"https://{R}@host/repo"),                  # a lone token
    ("https://x-access-token@github.com/o/r.git", f"https://{R}@github.com/o/r.git"),
    ("https://oauth2:glpat-abcdefghijklmnopqrstu@gitlab.com/x.git", f"https://oauth2:{R}@gitlab.com/x.git"),
    ("ssh://git@github.com/org/repo.git", "ssh://git@github.com/org/repo.git"),  # 'git' is no secret
    ("postgres:s3cret@db:5432/mlflow", f"postgres:{R}@db:5432/mlflow"),       # no scheme: a short DSN
    ("user:pass@host", f"user:{R}@host"),
    ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln", f"Authorization: Bearer {R}"),  # a short JWT
    ("curl -H 'Authorization: Bearer abcdefghijkl123'", f"curl -H 'Authorization: Bearer {R}'"),
    # not userinfo
    ("time 10:30@office", "time 10:30@office"),                                 # no user name
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),                       # a port is not a password
    ("http://127.0.0.1:5000/x@y.com", "http://127.0.0.1:5000/x@y.com"),       # an '@' in a path
    ("https://medium.com/@alice", "https://medium.com/@alice"),
    ("https://h/x?email=a@b.com", "https://h/x?email=a@b.com"),
    ("models:/alignflow-judge@production", "models:/alignflow-judge@production"),
    ("s3://bucket/prefix/file.json", "s3://bucket/prefix/file.json"),
    # query strings and fragments
    ("https://h/x?api_key=abc&n=1", f"https://h/x?api_key={R}&n=1"),
    ("https://h/x?token=t1#frag", f"https://h/x?token={R}#frag"),
    ("https://h/x?n=1&password=p2", f"https://h/x?n=1&password={R}"),
    ("https://h/x?access_token=a;apiKey=b", f"https://h/x?access_token={R};apiKey={R}"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20240101"
     "&X-Amz-Date=20240101T000000Z&X-Amz-Security-Token=tok&X-Amz-Signature=deadbeef",
     f"https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={R}"
     f"&X-Amz-Date=20240101T000000Z&X-Amz-Security-Token={R}&X-Amz-Signature={R}"),
    ("https://acct.blob.core.windows.net/c/b?sv=2020-08-04&se=2024&sig=abc%3D",
     f"https://acct.blob.core.windows.net/c/b?sv=2020-08-04&se=2024&sig={R}"),
    ("https://maps.googleapis.com/x?key=AIzaQ&country_code=DE", f"https://maps.googleapis.com/x?key={R}&country_code=DE"),
    ("https://app/cb#access_token=xyz&state=s", f"https://app/cb#access_token={R}&state=s"),
    ("https://h/x?token=", "https://h/x?token="),                             # nothing to hide
    ("http://u:pw@h/x?password=p2", f"http://u:{R}@h/x?password={R}"),
    # URLs inside longer strings
    ("error: could not reach https://u:hunter2@host:5000/api (see https://docs/x?token=abc).",
     f"error: could not reach https://u:{R}@host:5000/api (see https://docs/x?token={R})."),
    ("-s synthesis.judge=https://user:tok@host/v1 -s x=1", f"-s synthesis.judge=https://user:{R}@host/v1 -s x=1"),
    ('{"uri": "http://h/x?token=abc", "email": "a@b.com"}', f'{{"uri": "http://h/x?token={R}", "email": "a@b.com"}}'),
    ("[docs](https://u:p@host/x)", f"[docs](https://u:{R}@host/x)"),
    # KEY=VALUE, flags, JSON, headers
    ("HF_TOKEN=hf_abc python train.py --api-key=k1 --password p2 --max-new-tokens 40",
     f"HF_TOKEN={R} python train.py --api-key={R} --password {R} --max-new-tokens 40"),
    ('export AWS_SECRET_ACCESS_KEY="abc/def+ghi"', f'export AWS_SECRET_ACCESS_KEY="{R}"'),
    ('curl -H "Authorization: Bearer abc.def" https://h', f'curl -H "Authorization: Bearer {R}" https://h'),
    ("{'auth': {'password': 'x y'}, 'name': 'n'}", f"{{'auth': {{'password': '{R}'}}, 'name': 'n'}}"),
    ('{"pin": 123456, "password": 98765, "ok": true}', f'{{"pin": 123456, "password": {R}, "ok": true}}'),
    ('{"webhook_secret": "https://hooks.slack.com/services/T0/B0/XYZ"}', f'{{"webhook_secret": "{R}"}}'),
    ("max_new_tokens=40 tokenizer=gpt2", "max_new_tokens=40 tokenizer=gpt2"),
    # known token shapes with no key
    ("my key is ghp_" + "a" * 36 + " ok", f"my key is {R} ok"),
    ("use hf_" + "A1" * 17 + ".", f"use {R}."),
    ("OPENAI says sk-proj-" + "x" * 30, f"OPENAI says {R}"),
    ("id AKIAABCDEFGHIJKLMNOP", f"id {R}"),
    # secret-object names stay readable
    ("credentials_secret=alignflow-credentials", "credentials_secret=alignflow-credentials"),
    ("no secrets here: 3 + 4 = 7", "no secrets here: 3 + 4 = 7"),
]


@pytest.mark.parametrize("value,stored", VALUES, ids=[v[:50] for v, _ in VALUES])
def test_redact_value(value: str, stored: str) -> None:
    assert redaction.redact_value(value) == stored


@pytest.mark.parametrize("value,stored", VALUES, ids=[v[:50] for v, _ in VALUES])
def test_redaction_is_idempotent(value: str, stored: str) -> None:
    assert redaction.redact_value(redaction.redact_value(value)) == stored


DOCUMENT = """# Gate report

| check | value |
|---|---|
| tracking | http://bob:ab/cd@mlflow:5000 |

Judge: https://api.example.com/v1?api_key=KEY123&model=m

```yaml
s3:
  endpoint: http://minio:9000
  secret_access_key: wJalrXUtnFEMI/K7MDENG
  password: correct horse battery staple
launch:
  kubernetes:
    credentials_secret: alignflow-credentials
```

```json
{"token": "t-0123", "secretName": "alignflow-mlflow-auth", "max_new_tokens": 96}
```

-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAA
-----END OPENSSH PRIVATE KEY-----
"""


def test_redact_text_on_a_whole_document() -> None:
    out = redaction.redact_text(DOCUMENT)
    for secret in ("ab/cd", "KEY123", "wJalrXUtnFEMI", "correct horse", "t-0123", "b3BlbnNzaC1"):
        assert secret not in out
    for kept in ("http://bob:", "@mlflow:5000", "model=m", "endpoint: http://minio:9000",
                 "credentials_secret: alignflow-credentials", '"secretName": "alignflow-mlflow-auth"',
                 '"max_new_tokens": 96', "| check | value |"):
        assert kept in out
    assert redaction.redact_text(out) == out


# key -> (is_secret_key, is_secret_reference_key)
KEYS = {
    "s3.secret_access_key": (True, False),
    "auth.password": (True, False),
    "api_key": (True, False),
    "apiKey": (True, False),
    "APIKey": (True, False),
    "hf-token": (True, False),
    "HF_TOKEN": (True, False),
    "AWS_SECRET_ACCESS_KEY": (True, False),
    "clientSecret": (True, False),
    "client_secret": (True, False),
    "jwt_secret": (True, False),
    "secret_key": (True, False),
    "secret_id": (True, False),          # Vault AppRole: a credential, not a name
    "private_key": (True, False),
    "Authorization": (True, False),
    "X-Api-Key": (True, False),
    "secrets.hf": (True, False),         # under a secrets/credentials section
    "credentials.username": (True, False),
    "judge.max_new_tokens": (False, False),
    "rationale_max_new_tokens": (False, False),
    "model.source": (False, False),
    "tokenizer": (False, False),
    "tokenizer_name": (False, False),
    "keyword": (False, False),
    # names of secret objects
    "launch.kubernetes.credentials_secret": (False, True),
    "credentials_secret": (False, True),
    "secret_name": (False, True),
    "secretName": (False, True),
    "secret_names": (False, True),
    "db_secret_ref": (False, True),
    "password_secret_ref": (False, True),
    "secretKeyRef": (False, True),
    "existingSecret": (False, True),
    "existing_secret_name": (False, True),
    "tls_secret": (False, True),
    "image_pull_secrets": (False, True),
    "launch.kubernetes.hf_secret": (False, True),
    "secret_arn": (False, True),
    "password_file": (False, True),
    "token_path": (False, True),
    "hf_token_env": (False, True),
}


@pytest.mark.parametrize("key", KEYS)
def test_is_secret_key(key: str) -> None:
    assert redaction.is_secret_key(key) is KEYS[key][0]


@pytest.mark.parametrize("key", KEYS)
def test_is_secret_reference_key(key: str) -> None:
    assert redaction.is_secret_reference_key(key) is KEYS[key][1]


@pytest.mark.parametrize("key,value,stored", [
    ("auth.password", "hunter2", R),
    ("eval.max_new_tokens", 40, "40"),
    ("empty_token", "", ""),
    ("api_key", None, R),
    ("tracking.tracking_uri", "http://u:parampass@host:5000", f"http://u:{R}@host:5000"),
    ("judge.endpoint", "https://h/v1?token=abc", f"https://h/v1?token={R}"),
    ("launch.kubernetes.credentials_secret", "alignflow-credentials", "alignflow-credentials"),
    ("secret_name", "team-a/alignflow-x", "team-a/alignflow-x"),
    ("existingSecret", "mlflow-auth", "mlflow-auth"),
    ("secret_arn", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:alignflow-AbC123",
     "arn:aws:secretsmanager:eu-west-1:123456789012:secret:alignflow-AbC123"),
    ("password_file", "/run/secrets/db_password", "/run/secrets/db_password"),
    ("hf_token_env", "HF_TOKEN", "HF_TOKEN"),
    # a reference key whose value does not look like a reference is masked whole
    ("credentials_secret", "ghp_" + "a" * 36, R),
    ("secret_name", "Hunter2!", R),
    ("secret_name", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", R),
    ("existingSecret", "s3cr3tvaluewithdigits12345", R),
    ("hf_token_env", "hf_abcDEF", R),
    ("password_file", "hunter2", R),
    ("secretKeyRef", {"name": "x", "key": "y"}, R),
])
def test_redact_mapping(key: str, value: object, stored: str) -> None:
    assert redaction.redact_mapping({key: value}) == {key: stored}


def test_redact_mapping_keeps_keys_and_stringifies() -> None:
    out = redaction.redact_mapping({"a": 1, "b": 2.5, "c": True, "d": "x"})
    assert out == {"a": "1", "b": "2.5", "c": "True", "d": "x"}


def test_pathological_input_is_fast() -> None:
    start = time.perf_counter()
    for text in ["a://" + "@" * 20000, "http://" + "a" * 20000 + "@", "x=" * 20000, "https://h/?" + "a=b&" * 20000,
                 '"k": "' + "\\" * 20000, "-" * 20000 + "BEGIN PRIVATE KEY", "http://a:" + "/" * 20000 + "@h",
                 "a.b." * 10000 + "@", "key: " + "v " * 20000]:
        redaction.redact_text(text)
    assert time.perf_counter() - start < 10


def test_the_tracker_redacts_params_and_tags_before_sending(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "redaction")
    run_id = tracker.start_run("r", tags={"endpoint": "http://u:tagpass@s3:9000"})
    tracker.log_params(run_id, {"tracking.tracking_uri": "http://u:parampass@host:5000", "db_password": "pw123"})
    tracker.set_tags(run_id, {"api_key": "k-123"})
    data = tracker.get_run(run_id).data
    logged = " ".join([*data.params.values(), *data.tags.values()])
    for secret in ("tagpass", "parampass", "pw123", "k-123"):
        assert secret not in logged
    assert data.params["tracking.tracking_uri"] == f"http://u:{R}@host:5000"


def test_the_pipelines_own_params_are_logged_readable(tmp_path):
    """The real config, flattened as the pipeline logs it: nothing in it is a secret, and the field that
    NAMES a Kubernetes Secret (launch.kubernetes.credentials_secret) stays readable."""
    from alignflow.components.config import load_config
    from alignflow.tasks.runs import pipeline_params

    params = pipeline_params(load_config(REPO / "params.yaml"))
    assert params["launch.kubernetes.credentials_secret"] == "alignflow-credentials"
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "redaction")
    run_id = tracker.start_run("pipeline")
    tracker.log_params(run_id, params)
    logged = tracker.get_run(run_id).data.params
    assert logged == {k: str(v) for k, v in params.items()}
