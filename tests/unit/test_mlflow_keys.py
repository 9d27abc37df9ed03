"""sanitize_key against MLflow 3.17.2's own validators, on a table of nasty keys."""

from __future__ import annotations

from typing import Literal

import pytest

from alignflow.components.platform import mlflow_keys as mk

validation = pytest.importorskip("mlflow.utils.validation")
KINDS: tuple[mk.Kind, ...] = ("metric", "param", "tag")
from mlflow.exceptions import MlflowException  # noqa: E402

NASTY = [
    "eval/pass@1", "eval/pass@10", "a b", "a:b", "train/loss:step", "é", "日本語/損失", "emoji😀", "e\u0301",
    "a\nb", "a\n", "a\tb", "a\x00b", "\ud800", "..", "../x", "a/../b", "./a", "a/./b", "a/.", "/abs", "a//b",
    "a/", "", ".", "...", "..a", "-", " ", " a ", "x" * 250, "x" * 251, "x" * 300, "/" * 300, "ü" * 300,
    "a" * 249 + "@", "a" * 245 + "/.." + "b" * 10, "a%b", "acc%", "a#b", "a?b", "a*b", "a\\b", "a,b", "a=b",
    "a+b", "a|b", "a'b", 'a"b', "a<b>", "[0]", "{x}", "mlflow.runName", "judge.max_new_tokens",
    "eval/reward_margin", "a@b", "a_b", "a_at_b",
]


def _mlflow_accepts(key: str, kind: str) -> None:
    """Raise MlflowException unless MLflow's validators accept ``key`` as a ``kind`` name."""
    if kind == "metric":
        validation._validate_metric(key, 0.5, 0, 0)
    elif kind == "param":
        validation._validate_param(key, "v")
    else:
        validation._validate_tag(key, "v")


@pytest.fixture(params=[False, True], ids=["posix", "windows"])
def platform(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(validation, "is_windows", lambda: request.param)
    return request.param


@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
@pytest.mark.parametrize("key", NASTY, ids=[repr(k)[:30] for k in NASTY])
def test_sanitized_keys_pass_mlflows_validators(key: str, kind: mk.Kind, platform: bool) -> None:
    sanitized = mk.sanitize_key(key, kind)
    _mlflow_accepts(sanitized, kind)
    assert len(sanitized) <= validation.MAX_ENTITY_KEY_LENGTH
    assert mk.sanitize_key(key, kind) == sanitized  # deterministic


@pytest.mark.parametrize("kind", ["metric", "param", "tag"])
@pytest.mark.parametrize("key", NASTY, ids=[repr(k)[:30] for k in NASTY])
def test_is_valid_key_never_claims_more_than_mlflow(key: str, kind: mk.Kind, platform: bool) -> None:
    if mk.is_valid_key(key, kind):
        _mlflow_accepts(key, kind)
        assert mk.sanitize_key(key, kind) == key  # identity for valid keys


@pytest.mark.parametrize("key", ["eval/pass@1", "../x", "/abs", "x" * 251, "", "a//b", "a/", "..a", "a\tb"])
def test_the_table_has_keys_mlflow_rejects(key: str) -> None:
    """The table is only useful if MLflow really rejects some of its keys as they are."""
    with pytest.raises(MlflowException):
        _mlflow_accepts(key, "metric")


def test_colon_is_rejected_on_windows_only(monkeypatch: pytest.MonkeyPatch) -> None:
    _mlflow_accepts("a:b", "metric")
    monkeypatch.setattr(validation, "is_windows", lambda: True)
    with pytest.raises(MlflowException):
        _mlflow_accepts("a:b", "metric")
    assert not mk.is_valid_key("a:b", "metric")  # portable: treated as invalid everywhere


def test_a_trailing_newline_is_rejected_here_though_mlflow_lets_it_through() -> None:
    _mlflow_accepts("a\n", "metric")  # re.match(r"^...$") matches before a final newline
    assert not mk.is_valid_key("a\n", "metric")
    assert mk.sanitize_key("a\n", "metric").startswith("a_-")


@pytest.mark.parametrize("key", ["eval/reward_margin", "judge.max_new_tokens", "a b", "é", "日本語/損失", "x" * 250,
                                 "mlflow.runName", "a/...", "a/..b"])
def test_valid_keys_are_unchanged(key: str) -> None:
    for kind in KINDS:
        assert mk.sanitize_key(key, kind) == key


def test_readable_rewrites() -> None:
    assert mk.sanitize_key("eval/pass@1", "metric").startswith("eval/pass_at_1-")
    assert mk.sanitize_key("acc%", "metric").startswith("accpct-")
    assert mk.sanitize_key("train/loss:step", "metric").startswith("train/loss_step-")
    assert mk.sanitize_key("/abs/", "metric").startswith("abs-")
    assert len(mk.sanitize_key("x" * 300, "param")) == 250


@pytest.mark.parametrize("first,second", [("a@b", "a_b"), ("a@b", "a_at_b"), ("a:b", "a_b"), ("a@b", "a#b"),
                                          ("x" * 300, "x" * 301), ("x" * 251 + "a", "x" * 251 + "b"),
                                          ("/a", "a"), ("a/", "a"), ("a//b", "a/b"), ("..", "__")])
def test_different_keys_never_collide(first: str, second: str) -> None:
    for kind in KINDS:
        assert mk.sanitize_key(first, kind) != mk.sanitize_key(second, kind)


def test_sanitize_mapping_returns_the_originals_of_changed_keys() -> None:
    metrics = {"eval/pass@1": 0.5, "eval/reward": 1.0, "a:b": 2.0}
    sanitized, originals = mk.sanitize_mapping(metrics, "metric")
    assert list(sanitized.values()) == [0.5, 1.0, 2.0]
    assert "eval/reward" in sanitized
    assert originals == {k: v for k, v in zip(sanitized, metrics) if k != v}
    assert set(originals.values()) == {"eval/pass@1", "a:b"}


def test_sanitize_mapping_refuses_a_collision() -> None:
    forged = mk.sanitize_key("a@b", "metric")  # a valid key equal to another key's sanitized form
    with pytest.raises(ValueError, match="both sanitize"):
        mk.sanitize_mapping({"a@b": 1, forged: 2}, "metric")


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        mk.sanitize_key(3, "metric")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mk.sanitize_key("a", "metrics")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mk.clip_value("v", "metric")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind,limit", [("param", "MAX_PARAM_VAL_LENGTH"), ("tag", "MAX_TAG_VAL_LENGTH")])
def test_clip_value_fits_mlflows_value_limits(kind: Literal["param", "tag"], limit: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # MLflow raises instead of cutting
    maximum = getattr(validation, limit)
    assert mk.MAX_VALUE_LENGTH[kind] == maximum
    long_value = "v" * (maximum + 1)
    with pytest.raises(MlflowException):
        _mlflow_value(kind, long_value)
    clipped = mk.clip_value(long_value, kind)
    assert len(clipped) == maximum
    _mlflow_value(kind, clipped)
    assert mk.clip_value("short", kind) == "short"


def _mlflow_value(kind: str, value: str) -> None:
    if kind == "param":
        validation._validate_param("k", value)
    else:
        validation._validate_tag("k", value)


def test_the_constants_match_mlflow() -> None:
    assert mk.MAX_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH


def test_log_batch_end_to_end(tmp_path) -> None:
    """The round-killing call: log_batch with 'eval/pass@1' raises; sanitized keys are logged."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("keys")).info.run_id
    with pytest.raises(MlflowException):
        client.log_batch(run_id, metrics=[Metric("eval/pass@1", 0.5, 0, 0)])
    metrics, originals = mk.sanitize_mapping({"eval/pass@1": 0.5, "../x": 1.0, "x" * 300: 2.0}, "metric")
    params, _ = mk.sanitize_mapping({"judge:model": "m", "a b": "v"}, "param")
    tags, _ = mk.sanitize_mapping({"note@": mk.clip_value("t" * 9000, "tag")}, "tag")
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    data = client.get_run(run_id).data
    assert set(metrics) <= set(data.metrics) and set(params) <= set(data.params) and set(tags) <= set(data.tags)
    assert sorted(originals.values()) == sorted(["eval/pass@1", "../x", "x" * 300])
