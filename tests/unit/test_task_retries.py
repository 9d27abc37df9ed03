"""Compute tasks retry once after a failure, except after an error a retry would repeat exactly
(bad data, a user's scorer that raised, pairs that fail the quality gate): those fail at once."""

import inspect

from prefect.states import Failed

from alignflow.components.collection.quality import PairQualityError
from alignflow.components.data.formats import DataFormatError
from alignflow.components.platform.tracking import RegistryLookupError
from alignflow.components.scoring.base import ScorerError
from alignflow.components.stages.reward_model import RewardStageError
from alignflow.tasks.context import retry_unless_deterministic
from alignflow.tasks.reward import production_reward_task, resolve_reward_task, reward_train_task
from alignflow.tasks.stages import sample_task


def test_deterministic_errors_are_not_retried_and_transient_ones_are():
    # Prefect calls the condition only when it is a plain function (anything else counts as "no retry")
    assert inspect.isfunction(retry_unless_deterministic)
    for task in (sample_task, reward_train_task):
        assert task.retries == 1 and task.retry_condition_fn is retry_unless_deterministic
    for task in (resolve_reward_task, production_reward_task):  # registry lookups: retried twice, if transient
        assert task.retries == 2 and task.retry_condition_fn is retry_unless_deterministic
    for error in (DataFormatError("train.jsonl", "empty response", row=3, field="completion"),
                  ScorerError("scorer 'python:my_reward' raised ValueError on row 2"),
                  PairQualityError("n_pairs 0 < min_pairs 1"),
                  RewardStageError("the reward model's 3 pairs left 3 to train on and 0 held out"),
                  RegistryLookupError("alignflow-reward has no alias production")):
        assert retry_unless_deterministic(None, None, Failed(data=error)) is False, type(error).__name__
    for error in (OSError("connection reset by peer"), RuntimeError("CUDA error: an illegal memory access"),
                  KeyError("a bug's missing key is not a missing registry entry")):
        assert retry_unless_deterministic(None, None, Failed(data=error)) is True, type(error).__name__


def test_a_task_s_cache_key_follows_the_content_of_the_data_files(tmp_path):
    import os

    from alignflow.components.config import load_config
    from alignflow.tasks.context import DataFiles, compute

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is 1 + 1?"}\n')
    shards = tmp_path / "eval"
    shards.mkdir()
    (shards / "a.jsonl").write_text('{"prompt": "What is 2 + 2?"}\n')
    config = load_config(None, [f"data.sources.prompts=[{{source: {prompts}}}]",
                                f"data.sources.eval=[{{source: {shards}}}, {{source: 'builtin:arithmetic'}}]"])
    inputs = {"config": config.model_dump(mode="json")}
    policy = DataFiles()
    assert DataFiles in {type(p) for p in compute("alignflow.components.stages.data")["cache_policy"].policies}
    first = policy.compute_key(None, inputs, None)  # type: ignore[arg-type]
    os.utime(prompts, ns=(1, 1))  # touched, same content: same key
    assert policy.compute_key(None, inputs, None) == first  # type: ignore[arg-type]
    with prompts.open("a") as handle:  # a row appended: the config is unchanged, the key is not
        handle.write('{"prompt": "What is 3 + 3?"}\n')
    appended = policy.compute_key(None, inputs, None)  # type: ignore[arg-type]
    assert appended != first
    (shards / "b.jsonl").write_text('{"prompt": "What is 4 + 4?"}\n')  # a new file in a source directory
    assert policy.compute_key(None, inputs, None) not in (first, appended)  # type: ignore[arg-type]


def test_a_reward_source_that_is_no_directory_is_a_model_source_error_with_a_hint(tmp_path):
    import pytest

    from alignflow.components.modeling.checkpoints import ModelSourceError
    from alignflow.components.stages.resolve import resolve_model

    with pytest.raises(ModelSourceError, match=r"reward.source: 'alignflow-reward@production' is not a checkpoint "
                                               r"directory .*written models:/alignflow-reward@production"):
        resolve_model("alignflow-reward@production", "reward.source", None, tmp_path)
    try:
        resolve_model(str(tmp_path / "missing"), "reward.source", None, tmp_path)
    except ModelSourceError as exc:
        assert retry_unless_deterministic(None, None, Failed(data=exc)) is False


def test_a_registry_that_cannot_be_reached_is_not_a_missing_model():
    import pytest
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    from alignflow.components.platform.tracking import Tracker

    class Registry:  # what MLflow's client raises: a missing alias, a missing model, a server that is down
        def __init__(self, code: str) -> None:
            self.code = code

        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("answer", error_code=ErrorCode.Value(self.code))

    tracker = object.__new__(Tracker)
    for code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
        tracker._client = Registry(code)  # type: ignore[attr-defined]
        assert tracker.version_for_alias("alignflow-reward", "production") is None
    tracker._client = Registry("INTERNAL_ERROR")  # type: ignore[attr-defined]
    with pytest.raises(MlflowException):
        tracker.version_for_alias("alignflow-reward", "production")
