"""Compute tasks retry once after a failure, except after an error a retry would repeat exactly
(bad data, a user's scorer that raised, pairs that fail the quality gate): those fail at once."""

import inspect

from prefect.states import Failed

from alignflow.components.collection.quality import PairQualityError
from alignflow.components.data.formats import DataFormatError
from alignflow.components.scoring.base import ScorerError
from alignflow.tasks.context import retry_unless_deterministic
from alignflow.tasks.reward import reward_train_task
from alignflow.tasks.stages import sample_task


def test_deterministic_errors_are_not_retried_and_transient_ones_are():
    # Prefect calls the condition only when it is a plain function (anything else counts as "no retry")
    assert inspect.isfunction(retry_unless_deterministic)
    for task in (sample_task, reward_train_task):
        assert task.retries == 1 and task.retry_condition_fn is retry_unless_deterministic
    for error in (DataFormatError("train.jsonl", "empty response", row=3, field="completion"),
                  ScorerError("scorer 'python:my_reward' raised ValueError on row 2"),
                  PairQualityError("n_pairs 0 < min_pairs 1")):
        assert retry_unless_deterministic(None, None, Failed(data=error)) is False, type(error).__name__
    for error in (OSError("connection reset by peer"), RuntimeError("CUDA error: an illegal memory access")):
        assert retry_unless_deterministic(None, None, Failed(data=error)) is True, type(error).__name__
